"""Proposals: retrieval, the edit-reflection loop, evidence and fingerprints."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from doubles import ScriptedLLM
from pythia.config import parse_config
from pythia.edits import PathPolicy
from pythia.models import Hit, Message, Proposal, Thread, Usage, Verdict
from pythia.ports import Generation
from pythia.propose import (
    NoChange,
    ProposalFailed,
    fingerprint,
    propose,
    propose_for,
    retrieve,
    section_of,
)
from pythia.proposecall import BatchAnswer

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
CONFIG = parse_config(
    {
        "docs": {"root": "docs", "new_file_dirs": ["guides"]},
        "project": {"name": "Kestrel", "style": "short"},
    }
)
POLICY = PathPolicy.from_config(CONFIG.docs)
FILES = {
    "docs/cache.md": "# Caching\n\n## Location\n\nThe cache lives in `~/.kestrel/cache`.\n",
    "docs/cli.md": "# CLI\n\n## kestrel run\n\nRuns a task. `--jobs N` sets parallelism.\n",
}
THREAD = Thread(
    stream="tg",
    messages=(
        Message(
            "tg",
            20,
            "user-a",
            T0,
            "Where is the cache? Not in ~/.kestrel/cache",
            permalink="https://t.me/k/20",
        ),
        Message(
            "tg",
            21,
            "user-b",
            T0 + timedelta(minutes=3),
            "Since 3.0 it is ~/.cache/kestrel, mail me at bob@kestrel-corp.io",
            reply_to=20,
            permalink="https://t.me/k/21",
        ),
    ),
)
VERDICT = Verdict(
    thread_key="tg:20",
    category="update",
    doc_value=True,
    summary="The cache moved to ~/.cache/kestrel in 3.0.",
    reason="outdated",
    queries=("cache location",),
    keywords=("cache",),
    confidence=0.9,
)


def search(query: str, k: int) -> list[Hit]:
    return [
        Hit("docs/cache.md", "Caching > Location", "location", 1.0, "The cache lives"),
        Hit("docs/cli.md", "CLI > kestrel run", "kestrel-run", 0.5, "Runs a task"),
    ][:k]


def reply(**overrides: object) -> str:
    body: dict[str, object] = {
        "change": True,
        "reason": "",
        "title": "Cache moved in 3.0",
        "summary": "s",
        "reasoning": "r",
        "confidence": 0.8,
        "evidence": [2, 2, 9],
        "edits": [
            {
                "path": "docs/cache.md",
                "search": "The cache lives in `~/.kestrel/cache`.",
                "replace": "Since 3.0 the cache lives in `~/.cache/kestrel`.",
                "reason": "outdated",
            }
        ],
    }
    body.update(overrides)
    return json.dumps(body)


def run(llm: ScriptedLLM, **kwargs: object) -> object:
    return propose(
        THREAD,
        VERDICT,
        config=CONFIG,
        llm=llm,
        search=search,
        read=FILES.get,
        policy=POLICY,
        **kwargs,
    )  # type: ignore[arg-type]


def test_a_good_reply_becomes_a_proposal_with_a_diff_and_redacted_evidence() -> None:
    llm = ScriptedLLM().enqueue(reply())
    proposal = run(llm)
    assert not isinstance(proposal, NoChange)
    assert "+Since 3.0 the cache lives in `~/.cache/kestrel`." in proposal.diff
    assert proposal.files == (
        (
            "docs/cache.md",
            FILES["docs/cache.md"].replace(
                "The cache lives in `~/.kestrel/cache`.",
                "Since 3.0 the cache lives in `~/.cache/kestrel`.",
            ),
        ),
    )
    assert [e.message_id for e in proposal.evidence] == [21]  # index 2, deduplicated; 9 unknown
    assert "[email]" in proposal.evidence[0].quote
    assert "bob@corp" not in proposal.evidence[0].quote
    assert proposal.fingerprint == fingerprint("docs/cache.md", "location")
    prompt = llm.requests[0].prompt
    assert '<docs_file path="docs/cache.md">' in prompt and "(short)" in prompt


def test_failed_edits_go_back_to_the_model_with_the_appliers_message() -> None:
    wrong = reply(
        edits=[
            {
                "path": "docs/cache.md",
                "search": "The cache is in ~/.kestrel",
                "replace": "x",
                "reason": "",
            }
        ]
    )
    llm = ScriptedLLM().enqueue(wrong).enqueue(reply())
    proposal = run(llm)
    assert not isinstance(proposal, NoChange)
    assert "SEARCH block failed to exactly match" in llm.requests[1].prompt
    assert "previous answer could not be applied" in llm.requests[1].prompt


def test_after_two_reflections_the_proposal_fails() -> None:
    forbidden = reply(
        edits=[
            {"path": ".github/workflows/ci.yml", "search": "", "replace": "on: push", "reason": ""}
        ]
    )
    llm = ScriptedLLM().enqueue(forbidden).enqueue(forbidden).enqueue(forbidden)
    with pytest.raises(ProposalFailed, match="after 3 attempts"):
        run(llm)
    assert len(llm.requests) == 3


def answered(llm: ScriptedLLM, text: str, numbered: tuple[str, ...] = ()) -> object:
    """`propose_for` fed a batch job's answer (backfill.py) instead of a first call."""
    return propose_for(
        [(THREAD, VERDICT)],
        hits=retrieve(VERDICT, search=search, k=3),
        config=CONFIG,
        llm=llm,
        read=FILES.get,
        policy=POLICY,
        answer=BatchAnswer(Generation(text=text, usage=Usage(input_tokens=10)), numbered),
    )


def test_a_batch_answer_is_validated_like_a_call_and_costs_no_call() -> None:
    llm = ScriptedLLM()
    proposal = answered(llm, reply())
    assert isinstance(proposal, Proposal)
    assert "+Since 3.0 the cache lives in `~/.cache/kestrel`." in proposal.diff
    assert llm.requests == []


def test_a_batch_answer_cites_the_messages_its_own_prompt_numbered() -> None:
    # The batch prompt showed two context rows first; today's shows none (the watermark moved).
    numbered = ("", "", "tg:20", "tg:21")
    proposal = answered(ScriptedLLM(), reply(evidence=[4, 1]), numbered)
    assert isinstance(proposal, Proposal)
    assert [e.message_id for e in proposal.evidence] == [21]  # number 1 was a context row


@pytest.mark.parametrize(
    "text",
    [
        "not json",  # it does not parse
        reply(edits=[{"path": "docs/cache.md", "search": "gone", "replace": "x"}]),  # docs moved
    ],
)
def test_a_batch_answer_that_needs_the_model_again_falls_back_to_a_fresh_call(
    text: str, caplog: pytest.LogCaptureFixture
) -> None:
    llm = ScriptedLLM().enqueue(reply())
    caplog.set_level("INFO", logger="pythia.propose")
    proposal = answered(llm, text)
    assert not isinstance(proposal, NoChange)
    # One call, with the first prompt: no feedback about an answer the model never saw.
    [request] = llm.requests
    assert "previous" not in request.prompt
    [line] = [r.message for r in caplog.records if "batch answer" in r.message]
    assert line.startswith("the batch answer for tg:20 was not used (")
    assert line.endswith("); proposing it the normal way")


def test_no_change_is_reported_with_its_reason() -> None:
    llm = ScriptedLLM().enqueue(json.dumps({"change": False, "reason": "already documented"}))
    assert run(llm) == NoChange("already documented")


def test_a_new_page_gives_a_diff_git_can_apply(tmp_path: Path) -> None:
    new_page = reply(
        edits=[
            {
                "path": "docs/guides/proxies.md",
                "search": "",
                "replace": "# Proxies\n\nSet `HTTPS_PROXY`.\n",
                "reason": "",
            }
        ]
    )
    proposal = run(ScriptedLLM().enqueue(new_page))
    assert not isinstance(proposal, NoChange)
    assert "new file mode" in proposal.diff
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "change.patch").write_text(proposal.diff)
    subprocess.run(["git", "apply", "--check", "change.patch"], cwd=tmp_path, check=True)


def test_an_existing_page_the_prompt_did_not_show_is_not_overwritten() -> None:
    files = {**FILES, "docs/guides/setup.md": "# Setup\n\nOld text.\n"}
    clobber = reply(
        edits=[
            {
                "path": "docs/guides/setup.md",
                "search": "",
                "replace": "# Setup\n\nAll new.\n",
                "reason": "",
            }
        ]
    )
    llm = ScriptedLLM().enqueue(clobber).enqueue(clobber).enqueue(clobber)
    with pytest.raises(ProposalFailed):
        propose(
            THREAD, VERDICT, config=CONFIG, llm=llm, search=search, read=files.get, policy=POLICY
        )


def test_retrieval_fuses_queries_and_sections_name_the_fingerprint() -> None:
    hits = retrieve(VERDICT, search=search, k=2)
    assert [h.path for h in hits] == ["docs/cache.md", "docs/cli.md"]
    text = "# A\n\n```\n# not a heading\n```\n\n## B b\n\nline here\n"
    assert section_of(text, "line here") == "b b"
    assert section_of(text, "") == ""
    assert fingerprint("a.md", "x") != fingerprint("a.md", "y")


def test_a_parked_proposal_is_rebased_on_todays_docs_or_dropped() -> None:
    from pythia.edits import EditError
    from pythia.propose import rebase

    proposal = run(ScriptedLLM().enqueue(reply()))
    assert not isinstance(proposal, NoChange)
    # Maintainers edited another part of the page meanwhile: the edit still applies, and the
    # rebased file keeps their change instead of reverting it.
    edited = {**FILES, "docs/cache.md": FILES["docs/cache.md"] + "\n## Size\n\nIt grows.\n"}
    rebased = rebase(proposal, read=edited.get)
    assert dict(rebased.files)["docs/cache.md"].endswith("## Size\n\nIt grows.\n")
    assert "~/.cache/kestrel" in dict(rebased.files)["docs/cache.md"]

    # They rewrote the very line: the proposal no longer applies (the publisher then marks it
    # failed: see test_github's test_a_pr_is_built_on_the_base_as_it_is_now...).
    rewritten = {**FILES, "docs/cache.md": "# Caching\n\n## Location\n\nSee the XDG spec.\n"}
    with pytest.raises(EditError):
        rebase(proposal, read=rewritten.get)
