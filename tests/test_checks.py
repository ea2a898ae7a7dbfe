"""Every claim traceable: the grounding and docs checks in the proposal loop, with a model
double that invents things."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from doubles import ScriptedLLM
from pythia.checkcommand import run_check_command
from pythia.checks import BROKEN_DOCS, FAILED_BUILD, UNGROUNDED, EditChecks
from pythia.propose import Refused, propose
from test_propose import CONFIG, FILES, POLICY, THREAD, VERDICT, reply, search

CHECKS = EditChecks(docs_texts=list(FILES.values()), paths=set(FILES), read=FILES.get)
FAITHFUL = "Since 3.0 the cache lives in `~/.cache/kestrel`."


def edit(replace: str) -> list[dict[str, str]]:
    return [
        {
            "path": "docs/cache.md",
            "search": "The cache lives in `~/.kestrel/cache`.",
            "replace": replace,
            "reason": "outdated",
        }
    ]


def run(llm: ScriptedLLM, checks: EditChecks = CHECKS) -> object:
    return propose(
        THREAD,
        VERDICT,
        config=CONFIG,
        llm=llm,
        search=search,
        read=FILES.get,
        policy=POLICY,
        checks=checks,
    )


def test_a_faithful_proposal_passes_untouched_and_says_where_each_line_comes_from() -> None:
    llm = ScriptedLLM().enqueue(reply(edits=edit(FAITHFUL), evidence=[2]))
    proposal = run(llm)
    assert not isinstance(proposal, Refused) and len(llm.requests) == 1
    assert proposal.support and proposal.support[0].path == "docs/cache.md"  # type: ignore[union-attr]
    assert proposal.support[0].evidence == (0,)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("invented", "token"),
    [
        ("Since 3.0 run `kestrel cache --to-disk` to move it.", "--to-disk"),
        ("Since 3.0 the cache lives in `/var/lib/kestrel-cache`.", "/var/lib/kestrel-cache"),
        ("Since 3.0 set `KESTREL_CACHE_HOME` to move it.", "KESTREL_CACHE_HOME"),
        ("Since 3.2.7 the cache lives in `~/.cache/kestrel`.", "3.2.7"),
    ],
)
def test_an_invented_token_goes_back_once_and_a_correction_is_accepted(
    invented: str, token: str
) -> None:
    llm = ScriptedLLM()
    llm.enqueue(reply(edits=edit(invented), evidence=[2]))
    llm.enqueue(reply(edits=edit(FAITHFUL), evidence=[2]))
    proposal = run(llm)
    assert not isinstance(proposal, Refused)
    feedback = llm.requests[1].prompt
    assert token in feedback and "not in the conversation or the docs" in feedback


@pytest.mark.parametrize(
    ("invented", "token"),
    [
        ("Since 3.0 run `kestrel cache --to-disk` to move it.", "--to-disk"),
        ("Since 3.0 set `KESTREL_CACHE_HOME` to move it.", "KESTREL_CACHE_HOME"),
    ],
)
def test_an_invention_kept_after_the_feedback_is_refused_with_the_reason(
    invented: str, token: str
) -> None:
    llm = ScriptedLLM()
    for _ in range(3):
        llm.enqueue(reply(edits=edit(invented), evidence=[2]))
    refused = run(llm)
    assert isinstance(refused, Refused) and refused.kind == UNGROUNDED
    assert token in refused.reason and len(llm.requests) == 2  # told once, then refused


def test_a_broken_relative_link_is_caught() -> None:
    broken = "Since 3.0 the cache lives in `~/.cache/kestrel` (see [paths](paths.md))."
    llm = ScriptedLLM()
    llm.enqueue(reply(edits=edit(broken), evidence=[2]))
    llm.enqueue(reply(edits=edit(broken), evidence=[2]))
    refused = run(llm)
    assert isinstance(refused, Refused) and refused.kind == BROKEN_DOCS
    assert "paths.md" in refused.reason and "paths.md" in llm.requests[1].prompt


def test_the_repositorys_own_build_must_pass(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    for path, text in FILES.items():
        (tmp_path / path).write_text(text)
    # A "build" that fails whenever the cache page mentions ~/.cache, printing why.
    script = (
        "import pathlib, sys; text = pathlib.Path('docs/cache.md').read_text(); "
        "print('ERROR: unknown path in cache.md') if '.cache/' in text else None; "
        "sys.exit(1 if '.cache/' in text else 0)"
    )

    def build(after: dict[str, str]) -> object:
        from pythia.checkcommand import scratch_copy

        with scratch_copy(tmp_path, after) as folder:
            return run_check_command(
                f"{sys.executable} -c \"{script}\"", cwd=folder, environ={"PATH": ""}, timeout=30
            )

    checks = EditChecks(
        docs_texts=list(FILES.values()), paths=set(FILES), read=FILES.get, build=build  # type: ignore[arg-type]
    )
    llm = ScriptedLLM()
    llm.enqueue(reply(edits=edit(FAITHFUL), evidence=[2]))
    llm.enqueue(reply(edits=edit(FAITHFUL), evidence=[2]))
    refused = run(llm, checks)
    assert isinstance(refused, Refused) and refused.kind == FAILED_BUILD
    assert "unknown path in cache.md" in refused.reason
    assert "unknown path in cache.md" in llm.requests[1].prompt


def test_refusals_are_counted_by_kind_in_the_summary() -> None:
    from pythia import actions
    from pythia.models import RunReport

    text = actions.render_summary(RunReport(refused={UNGROUNDED: 2, "safety": 1}))
    assert "### Refused by the checks" in text and "| ungrounded | 2 |" in text
