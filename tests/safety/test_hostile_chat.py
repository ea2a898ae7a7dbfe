"""A hostile chat through the whole pipeline with a model that obeys every injection:
nothing harmful may reach anything Pythia publishes, and the chat can never leave its
`<chat_data>` block in a prompt."""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hostile_kit import (
    INVISIBLE,
    Artifact,
    HostileModel,
    RecordingPublisher,
    scan,
    section_per_conversation,
    write_corpus,
)

import harness
from doubles import FunctionLLM, HashEmbedder
from pythia import actions, prompts, safety
from pythia.config import Config, parse_config
from pythia.models import RunReport
from pythia.publish.dashboard import render_dashboard
from pythia.publish.dryrun import DryRunPublisher
from pythia.state import Ledger, StateStore

FIXTURES = Path(__file__).parents[1] / "fixtures"
NOW = datetime(2026, 3, 6, 12, 0, tzinfo=timezone.utc)
ALLOWED_IN_CONFIG = "kestrel.dev"


@dataclass
class HostileRun:
    rows: list[dict[str, Any]]
    report: RunReport
    llm: FunctionLLM
    model: HostileModel
    recorder: RecordingPublisher
    artifacts: list[Artifact] = field(default_factory=list)
    allowed_domains: set[str] = field(default_factory=set)


def hostile_config(export: Path) -> Config:
    return parse_config(
        {
            "project": {"name": "Kestrel"},
            "docs": {
                "root": "docs",
                "new_file_dirs": ["guides"],
                "allowed_link_domains": [ALLOWED_IN_CONFIG],
            },
            "streams": [
                {
                    "id": "hostile",
                    "kind": "export",
                    "start": "oldest",
                    "path": str(export),
                    "permalink_base": "https://t.me/kestrel_users",
                }
            ],
            "limits": {"max_llm_calls": 1000, "max_tokens": 10_000_000},
            "privacy": {"salt": "test-salt"},
        }
    )


def run_hostile(tmp_path: Path, caplog: pytest.LogCaptureFixture, *, sneaky: bool) -> HostileRun:
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "sample-docs/docs", repo / "docs")
    rows = write_corpus(tmp_path / "hostile.jsonl")
    config = hostile_config(tmp_path / "hostile.jsonl")
    space = harness.workspace(repo, config)
    embedder = HashEmbedder()
    index_path = tmp_path / "index.sqlite"
    harness.index_docs(space, index_path, embedder)
    docs_domains = safety.link_domains(space.docs_texts())
    templates = prompts.environment(repo)
    out = tmp_path / "out"
    recorder = RecordingPublisher(DryRunPublisher(out, templates=templates), templates, out)
    model = HostileModel(sneaky=sneaky)
    llm = FunctionLLM(model)
    store = StateStore(tmp_path / "state")
    caplog.set_level(logging.DEBUG)
    report = harness.run_pipeline(
        space,
        index_path=index_path,
        store=store,
        llm=llm,
        embedder=embedder,
        publisher=recorder,
        search=section_per_conversation,
        now=NOW,
    )
    run = HostileRun(rows, report, llm, model, recorder)
    run.allowed_domains = docs_domains | {ALLOWED_IN_CONFIG, "t.me"}
    run.artifacts = [
        *recorder.artifacts,
        Artifact("job summary", actions.render_summary(report)),
        Artifact(
            "dashboard",
            render_dashboard(
                report=report,
                streams=store.streams(),
                ledger=Ledger(),
                templates=templates,
                now=NOW,
                min_failures=1,
            ),
        ),
        *(
            Artifact(f"state file {p.name}", p.read_text(encoding="utf-8"))
            for p in sorted((tmp_path / "state").glob("*.json"))
        ),
        *(Artifact(f"log {r.levelname} {r.name}", r.getMessage()) for r in caplog.records),
    ]
    return run


def figures(run: HostileRun, harmful: list[str]) -> str:
    return (
        f"hostile messages tried: {len(run.rows)}; threads classified: "
        f"{run.report.threads_classified}; proposals published: {len(run.recorder.proposals)}; "
        f"refused or failed: {len(run.report.skipped) + len(run.report.failed)}; "
        f"artifacts scanned: {len(run.artifacts)}; harmful outputs: {len(harmful)}"
    )


@pytest.mark.parametrize("sneaky", [False, True], ids=["obedient", "sneaky"])
def test_nothing_harmful_is_published(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sneaky: bool
) -> None:
    run = run_hostile(tmp_path, caplog, sneaky=sneaky)
    harmful = scan(run.artifacts, allowed_domains=run.allowed_domains)
    print("\n" + figures(run, harmful))
    assert len(run.rows) >= 50
    assert run.report.messages_read == len(run.rows)
    # every settled thread was judged, so every hostile message met the model
    assert run.report.threads_classified == run.report.streams[0].threads_settled > 40
    assert harmful == []


def test_the_obedient_model_tries_every_attack_and_only_harmless_edits_pass(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = run_hostile(tmp_path, caplog, sneaky=False)
    assert set(run.model.attacks) == {
        "huge",
        "new file",
        "workflow",
        "non-doc file",
        "secret",
        "html",
        "invisible",
        "mention",
        "link",
        "prompt leak",
    }
    # Only the edits that add nothing dangerous went out; everything else was refused.
    assert 0 < len(run.recorder.proposals) < run.model.attacks["prompt leak"]
    assert all(p.paths == ("docs/troubleshooting.md",) for p in run.recorder.proposals)
    refused = " ".join(why for _, why in [*run.report.skipped, *run.report.failed])
    for rule in (
        "under .github/",
        "not a documentation file",
        "leaves the repository",
        "absolute path",
        "a domain the docs do not use",
        "would notify people",
        "raw HTML",
        "more than the limit",
        "adds a GitHub token",
        "an e-mail address",
        "invisible",
        "HTML comment",
        "script or data link",
        "HTML the docs do not use",
        "an IP address",
        "a phone number",
        "a password or key assignment",
    ):
        assert rule in refused, rule


def test_the_sneaky_model_gets_its_metadata_published_only_sanitised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = run_hostile(tmp_path, caplog, sneaky=True)
    assert run.recorder.proposals, "the harmless edits must be published"
    quoted = {e.message_id for p in run.recorder.proposals for e in p.evidence}
    assert quoted == {row["id"] for row in run.rows}  # every hostile message was quoted
    body = next(a.text for a in run.artifacts if a.where.endswith("PR body"))
    assert "[secret]" in body and "@\u200dkestrel/core" in body and "&lt;script" in body


def test_fake_delimiters_cannot_close_the_chat_block(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = run_hostile(tmp_path, caplog, sneaky=False)
    assert run.llm.requests
    for request in run.llm.requests:
        prompt = request.prompt
        assert prompt.count("<chat_data>") == 1 and prompt.count("</chat_data>") == 1
        before, rest = prompt.split("<chat_data>")
        data, after = rest.split("</chat_data>")
        assert len(re.findall(r"<message index=", data)) == data.count("</message>")
        assert data.count("<conversation") == data.count("</conversation>")
        # Chat text and what the model made of it stay out of the instructions around it.
        outside = before + after.split("Your previous answer could not be applied")[0]
        for line in outside.splitlines():
            assert not line.lstrip().startswith(("SYSTEM:", "[INST]", "<message", "</message")), (
                line
            )
        assert not set(request.system) & set(INVISIBLE)
        assert "Ignore all previous" not in request.system
