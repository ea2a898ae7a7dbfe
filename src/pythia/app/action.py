"""The GitHub Action's modes beyond run and index: learning from closed PRs, `/pythia` commands."""

from __future__ import annotations

import json
from typing import Any

import git

from .. import actions, safety
from ..models import Proposal, RunReport
from ..publish.commands import Reviser, handle_comment, record_closed_pr
from ..publish.github import GitHubPublisher
from ..revise import Revision, revise_proposal
from ..usage import UsageMeter
from . import compose, report
from .options import Options
from .workspace import Workspace, open_storage


def event_payload(options: Options) -> dict[str, Any]:
    """The triggering event's JSON (GITHUB_EVENT_PATH), or {} outside a workflow."""
    path = options.event_path
    if path is None or not path.is_file():
        return {}
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def cmd_feedback(workspace: Workspace, options: Options) -> int:
    """On `pull_request` closed: record whether maintainers merged or rejected a proposal."""
    with open_storage(workspace, options) as storage:
        ledger = storage.store.load_ledger()
        entry = record_closed_pr(
            event_payload(options), ledger, branch_prefix=workspace.config.publish.branch_prefix
        )
        if entry is None:
            outcome = "not a Pythia pull request; nothing to record"
        else:
            storage.store.save_ledger(ledger)
            storage.save(f"pythia: record {entry.status} proposal {entry.fingerprint[:8]}")
            outcome = f"recorded proposal {entry.fingerprint[:8]} as {entry.status}"
    print(outcome)
    actions.add_summary(f"## Pythia feedback\n\n{outcome[0].upper()}{outcome[1:]}.\n")
    report.record(RunReport(mode="feedback", outcome=outcome), options)
    return 0


def cmd_command(workspace: Workspace, options: Options) -> int:
    """On `issue_comment` created: answer a `/pythia` command on a proposal PR."""
    with open_storage(workspace, options) as storage:
        ledger = storage.store.load_ledger()
        publisher = compose.github_publisher(workspace, options, ledger)
        outcome = handle_comment(
            event_payload(options),
            publisher=publisher,
            revise=reviser(workspace, options, publisher),
        )
        storage.store.save_ledger(ledger)
        storage.save(f"pythia: /pythia {outcome.command or 'comment'}")
    line = f"/pythia {outcome.command or '(none)'}: {outcome.status}"
    print(line)
    actions.add_summary(
        f"## Pythia command\n\n`/pythia {outcome.command or '(none)'}`: {outcome.status}\n"
    )
    report.record(RunReport(mode="command", outcome=line), options)
    return 0


def reviser(workspace: Workspace, options: Options, publisher: GitHubPublisher) -> Reviser:
    """The `/pythia revise` callback: the branch's files, the instruction, one LLM call (two
    when the edit checks send findings back)."""

    def revise(fingerprint: str, instruction: str) -> Proposal | str:
        entry = publisher.ledger.get(fingerprint)
        if entry is None or not entry.branch:
            return "this proposal is not in Pythia's ledger"
        sha = publisher.branches.fetch(entry.branch)
        repo = git.Repo(workspace.root)
        current = {
            path: repo.git.show(f"{sha}:{path}", strip_newline_in_stdout=False)
            for path in entry.paths
        }
        base = {path: text for path in entry.paths if (text := workspace.read(path)) is not None}
        llm, _ = compose.models(workspace, UsageMeter.from_config(workspace.config))
        docs_texts = workspace.docs_texts()
        return revise_proposal(
            entry,
            instruction,
            revision=Revision(current=current, base=base),
            config=workspace.config,
            llm=llm,
            docs_domains=safety.link_domains(docs_texts),
            repo_root=workspace.root,
            checks=compose.edit_checks(workspace, options, docs_texts),
        )

    return revise
