"""`pythia eval models`: the labelled sets, the scoring, and the table on recorded answers.

The cassette holds the OpenAI wire traffic of `pythia eval models` over the Kestrel set
(tests/fixtures/eval/kestrel-conversations.jsonl) against a local server answering with the
rule-based Kestrel model; tests/cassettes/record_openai_sample.py writes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cassettes.record_openai_sample import openai_repo
from doubles import FunctionLLM, HashEmbedder
from harness import index_docs, workspace
from pythia import model_eval
from pythia.app.cli import main
from pythia.config import Price, parse_config
from pythia.model_eval import Case, EvalSetError, evaluate, load_cases
from pythia.ports import GenerateRequest
from pythia.usage import UsageMeter

FIXTURES = Path(__file__).parent / "fixtures/eval"
UV_DOCS = Path(__file__).resolve().parents[3] / "shared/corpora/uv-docs"
OUTSIDE = ("GEMINI_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "PYTHIA_CACHE", "GITHUB_ACTIONS")


@pytest.fixture(autouse=True)
def quiet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in OUTSIDE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNNER_TEMP", str(tmp_path / "runner-temp"))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.vcr("test_eval_models_prints_its_table.yaml")
def test_eval_models_prints_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], vcr: Any
) -> None:
    repo = openai_repo(tmp_path)
    config_path = repo / ".github/pythia.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["models"]["prices"] = {  # what a hosted copy of these models might charge
        "llama3.2:3b": {"input": 0.10, "output": 0.10},
        "qwen3:14b": {"input": 0.20, "output": 0.60},
    }
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    eval_set = FIXTURES / "kestrel-conversations.jsonl"

    code = main(
        ["eval", "models", "--set", str(eval_set), "--docs", str(repo / "docs"),
         "--repo", str(repo), "--no-cache"]
    )  # fmt: skip
    lines = capsys.readouterr().out.splitlines()

    assert code == 0
    assert lines[:10] == [
        "models: openai: llama3.2:3b / qwen3:14b",
        "conversations          8 (5 doc-worthy)",
        "doc-worthy precision   80%",
        "doc-worthy recall      80%",
        "page accuracy          100%",
        "edit apply rate        100%",
        "facts kept             100%",
        "facts invented         0",
        "safety refusals        1",  # the meetup's proposal: nothing in it was said
        "LLM calls              7",  # ... after being sent back once
    ]
    assert lines[10].startswith("cost per conversation  $0.00")
    assert lines[10] != "cost per conversation  $0.0000"
    assert lines[12:] == [
        "what went wrong:",
        "  windows-long-paths: no change proposed: the docs do not need this",
        "  proxy-meetup: judged doc-worthy, labelled not",
        "  pin-version-ci: missed: labelled doc-worthy",
    ]
    assert vcr.all_played


def test_the_shipped_uv_set_is_labelled_and_large_enough() -> None:
    cases = load_cases(FIXTURES / "uv-conversations.jsonl")

    assert len(cases) >= 40
    worthy = [case for case in cases if case.doc_value]
    assert 20 <= len(worthy) <= len(cases) - 10  # both kinds, enough of each
    assert all(case.must_contain for case in worthy)
    if UV_DOCS.is_dir():  # the corpus is beside the repository, never copied into it
        missing = {p for case in worthy for p in case.pages if not (UV_DOCS / p).is_file()}
        assert missing == set()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json", "not valid JSON"),
        ('{"messages": [], "doc_value": false}', "`messages` must be a non-empty list"),
        ('{"messages": [{"text": "hi"}], "doc_value": "yes"}', "`doc_value` must be true or"),
        (
            '{"messages": [{"text": "hi"}], "doc_value": true}',
            "a doc-worthy conversation needs its expected `pages`",
        ),
        (
            '{"messages": [{"text": "hi"}], "doc_value": true, "pages": ["a.md"], '
            '"must_contain": [""]}',
            "`must_contain` must be a list of non-empty strings",
        ),
    ],
)
def test_a_bad_line_is_named(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(EvalSetError, match=f"set.jsonl:1: {problem}"):
        load_cases(path)


def verdicts_for(request: GenerateRequest) -> str:
    """Every conversation about the cache is doc-worthy; the rest are not."""
    import re

    found = re.findall(r'<conversation id="(T\d+)">(.*?)</conversation>', request.prompt, re.S)
    return json.dumps({"verdicts": [
        {"thread": thread, "category": "question" if "cache" in body else "no-doc-value",
         "doc_value": "cache" in body, "summary": "the cache moved", "reason": "r",
         "queries": ["cache location"], "confidence": 0.9}
        for thread, body in found
    ]})  # fmt: skip


def test_scores_count_invented_facts_failed_edits_and_refusals(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "cache.md").write_text("# Cache\n\nThe cache lives in `~/.kestrel/cache`.\n")
    (docs / "faq.md").write_text("# FAQ\n\nAsk in the chat.\n")
    config = parse_config({"docs": {"root": "docs"}, "project": {"name": "Kestrel"}})
    space = workspace(tmp_path, config)
    embedder = HashEmbedder()
    index_docs(space, tmp_path / "index.sqlite", embedder)
    replies = iter([
        # moved: correct page, one fact kept, one invented
        {"change": True, "title": "t", "summary": "s", "reasoning": "r", "confidence": 0.9,
         "evidence": [1], "edits": [{"path": "docs/cache.md",
         "search": "The cache lives in `~/.kestrel/cache`.",
         "replace": "The cache lives in `~/.cache/kestrel`; set KESTREL_HOME to move it."}]},
        # link: an edit that adds a link to an unknown domain is refused by safety
        {"change": True, "title": "t", "summary": "s", "reasoning": "r", "confidence": 0.9,
         "evidence": [1], "edits": [{"path": "docs/faq.md", "search": "Ask in the chat.",
         "replace": "Ask in the chat, or see https://evil.example/cache."}]},
        # wrong: a search text that is not in the file, three times
        *[{"change": True, "title": "t", "summary": "s", "reasoning": "r", "confidence": 0.9,
           "evidence": [1], "edits": [{"path": "docs/cache.md", "search": "nowhere",
           "replace": "x"}]}] * 3,
    ])  # fmt: skip

    def answer(request: GenerateRequest) -> str:
        return verdicts_for(request) if request.stage == "classify" else json.dumps(next(replies))

    cases = [
        Case("moved", (("a", "where did the cache go in 3.0?"), ("b", "~/.cache/kestrel now")),
             True, ("cache.md",), ("~/.cache/kestrel", "XDG_CACHE_HOME"), ("KESTREL_HOME",)),
        Case("link", (("a", "is there a cache FAQ somewhere?"), ("b", "not yet, ask here")),
             False),
        Case("wrong", (("a", "the cache is huge, can I trim it?"), ("b", "kestrel gc")),
             True, ("cache.md",), ("kestrel gc",)),
        Case("hello", (("a", "hello everyone, nice to be here with you all"),), False),
    ]  # fmt: skip
    meter = UsageMeter(prices={"gemini-3.5-flash-lite": Price(input=1.0, output=1.0)})
    import pythia.db as db
    from pythia.app import compose

    conn = db.connect(tmp_path / "index.sqlite")
    try:
        results = evaluate(
            cases, config=config, llm=FunctionLLM(answer, meter=meter),
            search=compose.RunSearch(space, conn, embedder).search, read=space.read, meter=meter,
            docs_prefix=space.docs_prefix, repo_root=tmp_path,
        )  # fmt: skip
    finally:
        conn.close()

    outcome = {o.case.id: o for o in results.outcomes}
    assert outcome["moved"].outcome == "proposed" and outcome["moved"].pages == ("cache.md",)
    assert outcome["moved"].facts_found == 1 and outcome["moved"].invented == ("KESTREL_HOME",)
    assert outcome["link"].outcome == "refused"
    assert outcome["wrong"].outcome == "edits failed"
    assert (results.precision, results.recall) == (2 / 3, 1.0)
    assert results.apply_rate == 2 / 3 and results.refusals == 1 and results.invented == 1
    assert results.page_accuracy == 1.0  # "link" was not doc-worthy, so it is not scored
    assert results.facts_kept == 0.5
    table = model_eval.render(results, model="m")
    assert "  moved: invented KESTREL_HOME" in table
    assert "  link: judged doc-worthy, labelled not" in table
    assert "  wrong: edits did not apply" in table
