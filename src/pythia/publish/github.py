"""The GitHub publisher: one pull request per proposal through PyGithub, evidence on open ones."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import git
import jinja2
import requests
from github import Auth, Github, GithubException
from github.PullRequest import PullRequest
from github.Repository import Repository

from .. import prompts
from ..config import Publish
from ..edits import EditError
from ..models import Proposal
from ..ports import (
    Published,
    PublishError,
    PublisherUnavailable,
    PublishingBlocked,
    one_line,
)
from ..propose import rebase
from ..state import TERMINAL, Ledger, LedgerEntry, SourceRef, utcnow
from .branches import ProposalBranches
from .render import (
    EVIDENCE_MARKER,
    branch_name,
    fingerprint_in,
    render_evidence_comment,
    render_pr_body,
    thread_marker,
)

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
LABEL_COLORS = {"pythia": "5319e7"}
DEFAULT_LABEL_COLOR = "c5def5"


class _Stale(Exception):
    """The base branch moved and the proposal's edits no longer apply to it."""


BLOCKED_HINT = (
    "allow it under Settings > Actions > General > Workflow permissions (\"Allow GitHub Actions "
    "to create and approve pull requests\") and give the workflow `contents: write` and "
    "`pull-requests: write`"
)


# PyGithub raises requests' own errors when its urllib3 retries run out on 5xx answers
# (requests.exceptions.RetryError) or the network (ConnectionError), not GithubException.
_API_ERRORS = (GithubException, requests.RequestException)


def _blocked(error: BaseException) -> bool:
    if isinstance(error, GithubException):
        return error.status in (401, 403, 404)
    if isinstance(error, git.GitCommandError):
        text = str(error).lower()
        return any(
            sign in text
            for sign in ("authentication failed", "permission to", "403", "denied", "protected")
        )
    return False


def _outage(error: BaseException) -> bool:
    if isinstance(error, requests.RequestException):
        return True
    return isinstance(error, GithubException) and (error.status >= 500 or error.status == 429)


def github_client(
    token: str,
    *,
    base_url: str | None = None,
    seconds_between_requests: float | None = 0.25,
    seconds_between_writes: float | None = 1.0,
    retry: Any = None,
) -> Github:
    """A PyGithub client for github.com or, with `base_url`, a GitHub Enterprise Server."""
    options: dict[str, Any] = {} if retry is None else {"retry": retry}
    return Github(
        auth=Auth.Token(token),
        base_url=base_url or DEFAULT_API_URL,
        per_page=100,
        seconds_between_requests=seconds_between_requests,
        seconds_between_writes=seconds_between_writes,
        **options,
    )


class GitHubPublisher:
    """Opens one PR per proposal, comments on an open one for the same fingerprint, never
    re-proposes what maintainers closed, and keeps to the open-PR limits."""

    def __init__(
        self,
        *,
        repo_path: Path,
        repository: str,
        github: Github,
        ledger: Ledger,
        config: Publish | None = None,
        token: str | None = None,
        remote: str = "origin",
        templates: jinja2.Environment | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.repository = repository
        self.owner = repository.split("/", 1)[0]
        self.github = github
        self.repo: Repository = _lazy_repo(github, repository)
        self.ledger = ledger
        self.config = config or Publish.model_validate({})
        self.branches = ProposalBranches(repo_path, remote=remote, token=token)
        self.templates = templates or prompts.environment(repo_path)
        self.clock = clock
        self.opened_this_run = 0
        self._open_prs: list[PullRequest] | None = None
        self._labels_ready: set[str] = set()
        self._base: str | None = None

    # -- the port --

    def publish(self, proposal: Proposal) -> Published:
        try:
            return self._publish(proposal)
        except _API_ERRORS as error:
            reason = _describe(error, self.repository)
            if _outage(error):
                message = f"GitHub is not answering ({reason}); publishing resumes next run"
                raise PublisherUnavailable(message, cause=message) from None
            raise PublishError(
                f"could not publish '{proposal.title}': {reason}", cause=reason
            ) from None

    def _publish(self, proposal: Proposal) -> Published:
        entry = self.ledger.get(proposal.fingerprint)
        if entry is not None and entry.status in TERMINAL:
            where = f" #{entry.pr_number}" if entry.pr_number else ""
            return Published(
                action="skipped",
                url=entry.url,
                number=entry.pr_number,
                reason=f"maintainers already {entry.status} this proposal{where}",
            )
        existing = self._find_open_pr(proposal.fingerprint, entry)
        if existing is not None:
            return self._add_evidence(existing, proposal, entry)
        if entry is not None and entry.status == "open" and entry.pr_number is not None:
            closed = self._closed_meanwhile(entry)
            if closed is not None:
                return closed
        if not proposal.edits:
            # Evidence for a PR that is no longer open: there is no change to open one with.
            return Published(action="skipped", reason="its pull request is no longer open")
        waiting = self._over_limit()
        if waiting:
            self._record(proposal, entry, status="waiting", reason=waiting)
            return Published(action="waiting", reason=waiting)
        return self._open(proposal, entry)

    # -- finding --

    def open_prs(self) -> list[PullRequest]:
        """Open PRs from this repository's Pythia branches (one listing, cached for the run)."""
        if self._open_prs is None:
            prefix = f"{self.owner}:{self.config.branch_prefix}"
            pulls = self.repo.get_pulls(state="open")
            self._open_prs = [pr for pr in pulls if pr.head.label.startswith(prefix)]
        return self._open_prs

    def _find_open_pr(self, fingerprint: str, entry: LedgerEntry | None) -> PullRequest | None:
        for pr in self.open_prs():
            if (entry is not None and entry.pr_number == pr.number) or (
                pr.head.ref.endswith(f"-{fingerprint[:8]}")
                or fingerprint_in(pr.body) == fingerprint
            ):
                return pr
        return None

    def _closed_meanwhile(self, entry: LedgerEntry) -> Published | None:
        """The ledger says open but the PR is not: learn what maintainers did (the
        pull_request closed event may never have reached a workflow)."""
        assert entry.pr_number is not None
        pr = self.repo.get_pull(entry.pr_number)
        if pr.state == "open":
            return None
        status = "merged" if pr.merged else "rejected"
        self.ledger.put(entry.model_copy(update={"status": status, "updated_at": self.clock()}))
        return Published(
            action="skipped",
            url=pr.html_url,
            number=pr.number,
            reason=f"maintainers already {status} this proposal #{pr.number}",
        )

    def _over_limit(self) -> str:
        # publish.min_confidence is the pipeline's gate, before a proposal reaches a publisher.
        config = self.config
        if self.opened_this_run >= config.max_prs_per_run:
            return f"publish.max_prs_per_run ({config.max_prs_per_run}) reached in this run"
        if len(self.open_prs()) >= config.max_open_prs:
            return f"{len(self.open_prs())} Pythia PRs are open (publish.max_open_prs)"
        return ""

    # -- opening --

    def base_branch(self) -> str:
        if self._base is None:
            self._base = self.config.base_branch or self.repo.default_branch
        return self._base

    def _open(self, proposal: Proposal, entry: LedgerEntry | None) -> Published:
        branch = (
            entry.branch
            if entry is not None and entry.branch
            else branch_name(self.config.branch_prefix, proposal.title, proposal.fingerprint)
        )
        try:
            base = self.base_branch()
            parent = self.branches.fetch(base)
            files = self._rebased(proposal, parent, base)
            message = f"docs: {proposal.title}\n\nProposed by Pythia ({proposal.fingerprint})."
            sha = self.branches.commit(parent, files, message)
            # No open PR uses this branch (checked above), so an existing one is left over
            # from a run that died before opening its PR: replace it.
            self.branches.push(sha, branch, expected=self.branches.remote_head(branch))
            pr = self._create_pull(proposal, branch=branch, base=base)
        except (*_API_ERRORS, git.GitCommandError, _Stale) as error:
            reason = _describe(error, self.repository)
            if _blocked(error):
                self._record(proposal, entry, status="waiting", reason=reason, branch=branch)
                raise PublishingBlocked(
                    f"GitHub refused to let Pythia open a PR ({reason[:200]}); {BLOCKED_HINT}"
                ) from None
            self._record(proposal, entry, status="failed", reason=reason, branch=branch)
            failure = PublisherUnavailable if _outage(error) else PublishError
            raise failure(
                f"could not open a PR for '{proposal.title}': {reason}", cause=reason
            ) from None
        self._label(pr, [*self.config.labels, proposal.category])
        self.open_prs().append(pr)
        self.opened_this_run += 1
        self._record(proposal, entry, status="open", pr=pr, branch=branch)
        log.info("opened %s", pr.html_url)
        return Published(action="opened", url=pr.html_url, number=pr.number)

    def _rebased(self, proposal: Proposal, parent: str, base: str) -> tuple[tuple[str, str], ...]:
        """The proposal's edits applied to the base branch as it is now, not as it was read.

        Writing the stored whole-file texts would revert whatever was merged since the run
        checked the docs out (or since a parked proposal was made).
        """
        try:
            rebased = rebase(proposal, read=lambda path: self.branches.read(parent, path))
        except EditError as error:
            raise _Stale(
                f"{base} changed since the docs were read and the edits no longer apply "
                f"({one_line(error, limit=200)})"
            ) from None
        return rebased.files

    def _create_pull(self, proposal: Proposal, *, branch: str, base: str) -> PullRequest:
        body = render_pr_body(
            proposal, templates=self.templates, quotes=self.config.evidence_quotes
        )
        try:
            return self.repo.create_pull(
                base=base, head=branch, title=proposal.title, body=body, draft=self.config.draft
            )
        except GithubException as error:
            # Draft PRs are not available on every plan: "Draft pull requests are not
            # supported in this repository." (422); open a normal one instead.
            if error.status == 422 and self.config.draft and "draft" in str(error.data).lower():
                return self.repo.create_pull(
                    base=base, head=branch, title=proposal.title, body=body, draft=False
                )
            raise

    def _label(self, pr: PullRequest, names: Sequence[str]) -> None:
        # Labels are a convenience: a PR without them is still a good PR.
        try:
            pr.add_to_labels(*self._ensure_labels(names))
        except _API_ERRORS as error:
            log.warning("could not label #%s: %s", pr.number, _describe(error, self.repository))

    def _ensure_labels(self, names: Sequence[str]) -> list[str]:
        wanted = list(dict.fromkeys(n for n in names if n and n != "no-doc-value"))
        for name in wanted:
            if name in self._labels_ready:
                continue
            try:
                self.repo.get_label(name).color  # noqa: B018  (reading it completes the lazy label)
            except GithubException as error:
                if error.status != 404:
                    raise
                color = LABEL_COLORS.get(name, DEFAULT_LABEL_COLOR)
                self.repo.create_label(name, color, "Opened by Pythia from community chat")
            self._labels_ready.add(name)
        return wanted

    # -- evidence on an open PR --

    def _add_evidence(
        self, pr: PullRequest, proposal: Proposal, entry: LedgerEntry | None
    ) -> Published:
        thread = thread_marker(proposal.thread_key)
        if thread in (pr.body or "") or (entry and proposal.thread_key in entry.thread_keys):
            # A rerun of the run that opened it: the PR already carries this thread.
            self._record(proposal, entry, status="open", pr=pr)
            return Published(
                action="skipped", url=pr.html_url, number=pr.number, reason="already in the PR"
            )
        marker = EVIDENCE_MARKER.format(fingerprint=proposal.fingerprint)
        mine = next((c for c in pr.get_issue_comments() if marker in (c.body or "")), None)
        body = render_evidence_comment(
            proposal,
            previous_body=mine.body if mine else None,
            templates=self.templates,
            quotes=self.config.evidence_quotes,
        )
        if mine is None:
            mine = pr.create_issue_comment(body)
        elif mine.body != body:
            mine.edit(body)
        self._record(proposal, entry, status="open", pr=pr, comment_id=mine.id)
        return Published(action="updated", url=mine.html_url, number=pr.number)

    # -- the ledger --

    def _record(
        self,
        proposal: Proposal,
        entry: LedgerEntry | None,
        *,
        status: str,
        reason: str = "",
        pr: PullRequest | None = None,
        branch: str = "",
        comment_id: int | None = None,
    ) -> LedgerEntry:
        now = self.clock()
        base = entry or LedgerEntry(
            fingerprint=proposal.fingerprint, status="waiting", created_at=now
        )
        update: dict[str, Any] = {
            "status": status,
            "reason": reason,
            "title": base.title if base.pr_number and base.title else proposal.title,
            "category": proposal.category,
            "confidence": proposal.confidence,
            "paths": list(proposal.paths),
            "thread_keys": sorted({*base.thread_keys, proposal.thread_key}),
            "sources": [
                SourceRef(path=h.path, heading=h.heading, anchor=h.anchor, score=h.score)
                for h in proposal.sources
            ]
            or base.sources,
            "updated_at": now,
        }
        if pr is not None:
            update.update(pr_number=pr.number, url=pr.html_url, branch=pr.head.ref)
        if branch:
            update["branch"] = branch
        if comment_id is not None:
            update["evidence_comment_id"] = comment_id
        # A waiting proposal keeps what it needs to be published by a later run.
        update["parked"] = proposal if status == "waiting" else None
        return self.ledger.put(base.model_copy(update=update))


def _lazy_repo(github: Github, repository: str) -> Repository:
    # A lazy Repository skips `GET /repos/{owner}/{repo}` until an attribute is needed.
    return github.withLazy(True).get_repo(repository)


def _describe(error: BaseException, repository: str) -> str:
    """One line naming what failed, and for API errors the repository asked about."""
    if isinstance(error, GithubException):
        data = error.data if isinstance(error.data, dict) else {}
        text = f"GitHub answered {error.status} for {repository}: {data.get('message', '')}"
        text = text.strip(": ")
        if error.status == 404:
            # GitHub answers 404, not 403, for a repository the token may not see.
            text += (
                f" (is GITHUB_REPOSITORY '{repository}' the owner/name of this repository, "
                "and may the workflow's token read it?)"
            )
    elif isinstance(error, git.GitCommandError):
        lines = [x for x in str(error.stderr).splitlines() if x.strip()]
        text = f"git {error.command[1] if len(error.command) > 1 else ''} failed: " + (
            lines[-1].strip(" '\"") if lines else f"exit {error.status}"
        )
    else:
        text = str(error)
    return one_line(text)


