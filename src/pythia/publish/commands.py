"""Learning from closed proposal PRs, and answering `/pythia` commands in their comments."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import git
from github import GithubException

from ..models import Proposal
from ..state import MAX_HANDLED_COMMENTS, Ledger, LedgerEntry, utcnow
from .github import GitHubPublisher
from .render import fingerprint_in

log = logging.getLogger(__name__)

# The REST `permission` field uses the legacy levels: maintain reads as "write", triage as
# "read" (docs: "Get repository permissions for a user").
ALLOWED_PERMISSIONS = frozenset({"admin", "write"})
COMMAND_RE = re.compile(r"^\s*/pythia\s+(\w+)[ \t]*(.*?)\s*$", re.MULTILINE | re.DOTALL)
Reviser = Callable[[str, str], "Proposal | str"]

HELP = "Pythia understands `/pythia revise <instruction>`, `/pythia explain` and `/pythia ignore`."
DENIED = "Sorry, only people with write access to this repository can use `/pythia` commands."


@dataclass(frozen=True)
class CommandOutcome:
    """What a comment made Pythia do."""

    status: Literal["done", "denied", "ignored", "failed"]
    command: str = ""
    fingerprint: str = ""
    reply: str = ""


def record_closed_pr(
    event_payload: Mapping[str, Any],
    ledger: Ledger,
    *,
    now: datetime | None = None,
    branch_prefix: str = "pythia/",
) -> LedgerEntry | None:
    """On `pull_request` closed: record merged or rejected; None when it was not Pythia's PR."""
    pr = event_payload.get("pull_request") or {}
    if event_payload.get("action") != "closed" or not pr:
        return None
    number = pr.get("number")
    head = pr.get("head") or {}
    branch = head.get("ref", "")
    head_repo = (head.get("repo") or {}).get("full_name")
    base_repo = ((pr.get("base") or {}).get("repo") or {}).get("full_name")
    if not branch.startswith(branch_prefix) or (head_repo and head_repo != base_repo):
        # Only Pythia's own branches count: a fork's PR could carry a copied marker and
        # mark a proposal rejected (pull_request_target runs with the base's token).
        return None
    fingerprint = fingerprint_in(pr.get("body"))
    entry = (
        (ledger.get(fingerprint) if fingerprint else None)
        or ledger.by_branch(branch)
        or (ledger.by_pr(number) if isinstance(number, int) else None)
    )
    if entry is None and fingerprint is None:
        return None
    when = now or utcnow()
    if entry is None:
        # A PR the ledger lost (state rebuilt): remember the decision all the same.
        entry = LedgerEntry(fingerprint=str(fingerprint), status="open", created_at=when)
    merged = bool(pr.get("merged"))
    status = "merged" if merged else ("ignored" if entry.status == "ignored" else "rejected")
    updated = entry.model_copy(
        update={
            "status": status,
            "pr_number": number if isinstance(number, int) else entry.pr_number,
            "url": pr.get("html_url") or entry.url,
            "branch": branch or entry.branch,
            "title": entry.title or pr.get("title", ""),
            "updated_at": when,
        }
    )
    return ledger.put(updated)


def parse_command(body: str | None) -> tuple[str, str] | None:
    """The first `/pythia <command> [argument]` line of a comment."""
    found = COMMAND_RE.search(body or "")
    return (found.group(1).lower(), found.group(2).strip()) if found else None


def handle_comment(
    event_payload: Mapping[str, Any],
    *,
    publisher: GitHubPublisher,
    revise: Reviser | None = None,
) -> CommandOutcome:
    """On `issue_comment` created: run a `/pythia` command from someone allowed to."""
    issue = event_payload.get("issue") or {}
    comment = event_payload.get("comment") or {}
    user = comment.get("user") or {}
    if event_payload.get("action") != "created" or "pull_request" not in issue:
        return CommandOutcome(status="ignored")
    if user.get("type") == "Bot":
        return CommandOutcome(status="ignored")  # never answer ourselves
    parsed = parse_command(comment.get("body"))
    if parsed is None:
        return CommandOutcome(status="ignored")
    command, argument = parsed
    number = int(issue["number"])
    ledger = publisher.ledger
    entry = ledger.by_pr(number) or _lost_entry(publisher, number, issue.get("body"))
    if entry is None:
        return CommandOutcome(status="ignored", command=command)  # not one of Pythia's PRs
    comment_id = comment.get("id")
    if isinstance(comment_id, int) and comment_id in entry.handled_comments:
        # A re-run of the same job: it was answered already; never reply or push twice.
        return CommandOutcome(status="ignored", command=command, fingerprint=entry.fingerprint)
    outcome = _dispatch(publisher, entry, number, command, argument, user, revise)
    if isinstance(comment_id, int):
        current = ledger.get(entry.fingerprint) or entry
        ledger.put(
            current.model_copy(
                update={
                    "handled_comments": [*current.handled_comments, comment_id][
                        -MAX_HANDLED_COMMENTS:
                    ]
                }
            )
        )
    return outcome


def _lost_entry(publisher: GitHubPublisher, number: int, body: str | None) -> LedgerEntry | None:
    """The proposal a PR's fingerprint marker names, when the ledger lost which PR it is.

    A marker can be copied into anyone's PR body, so it counts only on a PR from this
    repository whose head branch has Pythia's prefix, and never for a proposal the ledger
    knows under another PR number.
    """
    fingerprint = fingerprint_in(body)
    entry = publisher.ledger.get(fingerprint) if fingerprint else None
    if entry is None or entry.pr_number is not None:
        return None
    pr = publisher.repo.get_pull(number)
    head_repo = pr.head.repo.full_name if pr.head.repo is not None else ""
    if head_repo != publisher.repository:
        return None
    if not pr.head.ref.startswith(publisher.config.branch_prefix):
        return None
    return publisher.ledger.put(entry.model_copy(update={"pr_number": number}))


def _dispatch(
    publisher: GitHubPublisher,
    entry: LedgerEntry,
    number: int,
    command: str,
    argument: str,
    user: Mapping[str, Any],
    revise: Reviser | None,
) -> CommandOutcome:
    if not _may_command(publisher, str(user.get("login", ""))):
        _reply(publisher, number, DENIED)
        return CommandOutcome(status="denied", command=command, fingerprint=entry.fingerprint)
    handler = _HANDLERS.get(command)
    if handler is None:
        _reply(publisher, number, f"Unknown command `{command}`. {HELP}")
        return CommandOutcome(status="failed", command=command, fingerprint=entry.fingerprint)
    return handler(publisher, entry, number, argument, revise)


def _may_command(publisher: GitHubPublisher, login: str) -> bool:
    if not login:
        return False
    try:
        permission = publisher.repo.get_collaborator_permission(login)
    except GithubException as error:
        if error.status in (403, 404):
            return False
        raise
    return permission in ALLOWED_PERMISSIONS


def _reply(publisher: GitHubPublisher, number: int, text: str) -> None:
    publisher.repo.get_issue(number).create_comment(text)


def _ignore(
    publisher: GitHubPublisher, entry: LedgerEntry, number: int, _arg: str, _revise: Any
) -> CommandOutcome:
    publisher.repo.get_pull(number).edit(state="closed")
    publisher.ledger.put(
        entry.model_copy(update={"status": "ignored", "updated_at": publisher.clock()})
    )
    reply = "Closed. Pythia will not propose this change again."
    _reply(publisher, number, reply)
    return CommandOutcome("done", "ignore", entry.fingerprint, reply)


def _explain(
    publisher: GitHubPublisher, entry: LedgerEntry, number: int, _arg: str, _revise: Any
) -> CommandOutcome:
    reply = explanation(entry)
    _reply(publisher, number, reply)
    return CommandOutcome("done", "explain", entry.fingerprint, reply)


def explanation(entry: LedgerEntry) -> str:
    """The classification and the docs sections behind a proposal, from the ledger."""
    lines = [
        "**Why Pythia proposed this**",
        "",
        f"- Category: `{entry.category or 'unknown'}`, confidence {entry.confidence:.0%}",
        f"- Conversations: {', '.join(f'`{k}`' for k in entry.thread_keys) or 'none recorded'}",
        f"- Files changed: {', '.join(f'`{p}`' for p in entry.paths) or 'none recorded'}",
        "",
        "**Docs sections retrieved**" if entry.sources else "No docs sections were recorded.",
    ]
    for source in entry.sources:
        where = f"`{source.path}`" + (f" › {source.heading}" if source.heading else "")
        lines.append(f"- {where} (score {source.score:.3f})")
    return "\n".join(lines) + "\n"


def _revise(
    publisher: GitHubPublisher,
    entry: LedgerEntry,
    number: int,
    instruction: str,
    revise: Reviser | None,
) -> CommandOutcome:
    if not instruction:
        reply = "Say what to change, for example `/pythia revise keep it to one sentence`."
    elif revise is None or not entry.branch:
        reply = "This run cannot revise proposals; try again from the Pythia workflow."
    else:
        result = revise(entry.fingerprint, instruction)
        if isinstance(result, str):
            reply = f"Could not revise this proposal: {result}"
        else:
            try:
                sha = _push_revision(publisher, entry, result, instruction)
            except (git.GitCommandError, GithubException) as error:
                reply = "Could not push the revision; see the workflow log."
                log.warning("revising #%s failed: %s", number, type(error).__name__)
            else:
                reply = f"Pushed {sha[:7]} with the revision."
                _reply(publisher, number, reply)
                return CommandOutcome("done", "revise", entry.fingerprint, reply)
    _reply(publisher, number, reply)
    return CommandOutcome("failed", "revise", entry.fingerprint, reply)


def _push_revision(
    publisher: GitHubPublisher, entry: LedgerEntry, proposal: Proposal, instruction: str
) -> str:
    branches = publisher.branches
    parent = branches.fetch(entry.branch)
    message = f"docs: revise as asked in review\n\n/pythia revise {instruction[:200]}"
    sha = branches.commit(parent, proposal.files, message)
    branches.push(sha, entry.branch, expected=parent)
    publisher.ledger.put(
        entry.model_copy(update={"paths": list(proposal.paths), "updated_at": publisher.clock()})
    )
    return sha


_HANDLERS: dict[str, Callable[..., CommandOutcome]] = {
    "ignore": _ignore,
    "explain": _explain,
    "revise": _revise,
}
