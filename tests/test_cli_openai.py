"""`pythia run --dry-run` end to end against a local OpenAI-compatible server, no Gemini key.

The cassette holds what the `openai` package sent and got from a server at Ollama's address
that has no JSON Schema output (a 400, then JSON mode) and rate-limits the first request (a
429 with Retry-After: 1). It is written by tests/cassettes/record_openai_sample.py; see there
for recording a real server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cassettes.record_openai_sample import openai_repo
from pythia.app.cli import main
from pythia.responsecache import ResponseCache

CASSETTE = "test_a_dry_run_against_a_local_openai_server.yaml"
OUTSIDE = (
    "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL", "GITHUB_ACTIONS",
    "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "PYTHIA_CACHE", "PYTHIA_LOCAL",
)
SUMMARY_LINE = (
    "read 39 messages, classified 13 threads, would open 3, updated 0, skipped 1, failed 0"
)


@pytest.fixture(autouse=True)
def no_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in OUTSIDE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNNER_TEMP", str(tmp_path / "runner-temp"))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return openai_repo(tmp_path)


def chat_requests(vcr: Any) -> int:
    return sum(
        count
        for position, count in vcr.play_counts.items()
        if vcr.requests[position].path.endswith("/chat/completions")
    )


@pytest.mark.vcr(CASSETTE)
def test_a_dry_run_against_a_local_openai_server(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], vcr: Any
) -> None:
    out = tmp_path / "out"
    code = main(["run", "--dry-run", "--repo", str(repo), "--out", str(out)])
    stdout = capsys.readouterr().out

    assert code == 0
    assert len(list(out.iterdir())) == 3
    assert stdout.splitlines()[-1] == SUMMARY_LINE
    # The 429 and the refused JSON Schema request were answered and retried, then JSON mode.
    assert vcr.all_played and chat_requests(vcr) == 7


@pytest.mark.vcr(CASSETTE)
def test_a_rerun_answers_from_the_response_cache_and_pays_nothing_twice(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], vcr: Any
) -> None:
    cache = tmp_path / "actions-cache/responses.sqlite"
    first = ["run", "--dry-run", "--repo", str(repo), "--cache", str(cache), "--json"]
    assert main([*first, "--out", str(tmp_path / "first")]) == 0
    paid = chat_requests(vcr)
    report = capsys.readouterr().out

    assert main([*first, "--out", str(tmp_path / "again"), "--since", "1"]) == 0
    again = capsys.readouterr().out

    # Every recorded answer was played once, in the first run: the second sent nothing.
    assert paid == 7 and vcr.all_played
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == sorted(
        p.name for p in (tmp_path / "first").iterdir()
    )
    assert json.loads(report)["usage"]["propose"]["calls"] == 4
    assert set(json.loads(again)["usage"]) <= {"embed"}  # nothing paid for generation
    stored = ResponseCache(cache)
    assert len(stored) == 5  # one classify and four propose answers (the refused tries are not)
    stored.close()


def test_the_action_input_llm_base_url_wins_over_the_config(repo: Path) -> None:
    from pythia.app.cli import build_parser
    from pythia.app.options import Options
    from pythia.app.workspace import open_workspace

    args = build_parser().parse_args(
        ["action", "--repo", str(repo), "--llm-base-url", " http://gpu-box:8000/v1 "]
    )
    options = Options.from_action(args, {"GITHUB_EVENT_NAME": "schedule"})

    assert open_workspace(options).config.models.base_url == "http://gpu-box:8000/v1"


def test_backfill_needs_gemini(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--dry-run", "--backfill", "--repo", str(repo), "--no-cache"])

    assert code == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: --backfill sends batch jobs to the Gemini Batch API, but models.provider is "
        "openai; run without --backfill"
    ]


def test_the_cache_holds_chat_derived_text_so_it_is_on_only_when_asked(tmp_path: Path) -> None:
    from pythia.app.options import Options

    assert Options(command="run", runner_temp=tmp_path).cache_path is None  # even in Actions
    assert Options(command="run").cache_path is None
    asked = Options(command="run", cache_env=tmp_path / "r.sqlite")  # the Action's input
    assert asked.cache_path == tmp_path / "r.sqlite"
    assert Options(command="run", cache_env=tmp_path / "r.sqlite", no_cache=True).cache_path is None
    assert Options(command="run", cache=Path("c.sqlite")).cache_path == Path("c.sqlite")


def test_without_a_key_the_messages_name_the_openai_key(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    config_path = repo / ".github/pythia.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["models"].pop("base_url")  # the hosted API: it needs OPENAI_API_KEY
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    assert main(["index", "--repo", str(repo), "--json"]) == 0
    indexed = capsys.readouterr().err
    assert main(["search", "remote cache token", "--repo", str(repo), "--json"]) == 0
    searched = capsys.readouterr().err

    why = "no OPENAI_API_KEY (nor models.base_url for a local server)"
    assert f"{why}: indexing for keyword (BM25) search only" in indexed.splitlines()
    assert searched.splitlines() == [f"{why}: searching with BM25 only"]
    assert "GEMINI" not in indexed + searched


def test_the_action_keeps_answers_only_sealed(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pythia.app import compose
    from pythia.app.cli import build_parser
    from pythia.app.options import Options
    from pythia.app.workspace import open_workspace
    from pythia.responsecache import CachedLLM
    from pythia.usage import UsageMeter

    cache = tmp_path / "pythia-responses/responses.sqlite"

    def llm() -> object:
        args = build_parser().parse_args(["action", "--repo", str(repo)])
        options = Options.from_action(args, {"GITHUB_EVENT_NAME": "schedule"})
        workspace = open_workspace(options)
        meter = UsageMeter.from_config(workspace.config)
        return compose.models(workspace, meter, cache=cache, sealed_only=True)[0]

    # A local server needs no key, so nothing seals the cache: the Action keeps none.
    assert not isinstance(llm(), CachedLLM)
    assert "no response cache" in capsys.readouterr().err
    monkeypatch.setenv("PYTHIA_CACHE_SECRET", "a repository secret")
    sealed = llm()
    assert isinstance(sealed, CachedLLM) and sealed.cache.sealed
