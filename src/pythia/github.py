"""Publishing proposals as pull requests (git for branches, PyGithub for the API), or as files."""

from __future__ import annotations

import logging
import os
import posixpath
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import git
import jinja2
import requests
from github import Auth, Github, GithubException
from github.PullRequest import PullRequest
from github.Repository import Repository

from . import prompts
from .config import Publish
from .databranch import auth_env, bot_env, remote_url
from .edits import EditError, apply_edits
from .models import Evidence, Proposal
from .ports import Published
from .state import TERMINAL, Ledger, LedgerEntry, ParkedProposal, SourceRef, utcnow

log = logging.getLogger(__name__)

DEFAULT_API_URL = "https://api.github.com"
MAX_BODY_CHARS = 60_000
MAX_QUOTE_CHARS = 500
FINGERPRINT_RE = re.compile(r"<!-- pythia:fingerprint=([\w.-]+) -->")
THREAD_MARKER = "<!-- pythia:thread={key} -->"
EVIDENCE_MARKER = "<!-- pythia:evidence fingerprint={fingerprint} -->"
LABEL_COLORS = {"pythia": "5319e7"}
DEFAULT_LABEL_COLOR = "c5def5"


class PublishError(Exception):
    """A proposal could not be pushed or its pull request could not be opened."""


class _Stale(Exception):
    """The base branch moved and the proposal's edits no longer apply to it."""


class PublisherUnavailable(PublishError):
    """GitHub kept failing (5xx, rate limit, network) after PyGithub's retries: publishing
    stops for this run and the proposals wait for the next one."""


class PublishingBlocked(PublisherUnavailable):
    """GitHub refused the bot (401/403/404, or a rejected push): a setting or permission to
    fix. The proposal is parked in the ledger, publishing stops, and the run fails loudly."""


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
    """A PyGithub client for github.com or, through GITHUB_API_URL, a GitHub Enterprise Server."""
    options: dict[str, Any] = {} if retry is None else {"retry": retry}
    return Github(
        auth=Auth.Token(token),
        base_url=base_url or os.environ.get("GITHUB_API_URL") or DEFAULT_API_URL,
        per_page=100,
        seconds_between_requests=seconds_between_requests,
        seconds_between_writes=seconds_between_writes,
        **options,
    )


def branch_name(prefix: str, title: str, fingerprint: str) -> str:
    """`pythia/<slug>-<8 chars of fingerprint>`; the suffix alone finds the branch again."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40].rstrip("-") or "docs"
    return f"{prefix}{slug}-{fingerprint[:8]}"


def fingerprint_in(body: str | None) -> str | None:
    found = FINGERPRINT_RE.search(body or "")
    return found.group(1) if found else None


# --- rendering -------------------------------------------------------------------------------


def _short(evidence: Sequence[Evidence]) -> list[Evidence]:
    return [
        replace(
            e, quote=e.quote if len(e.quote) <= MAX_QUOTE_CHARS else e.quote[:MAX_QUOTE_CHARS] + "…"
        )
        for e in evidence
    ]


def render_capped(
    render: Callable[[list[Evidence], int], str], evidence: Sequence[Evidence]
) -> str:
    """Render with as much evidence as fits in GitHub's body limit, dropping the latest first."""
    items = _short(evidence)
    for keep in range(len(items), -1, -1):
        text = render(items[:keep], len(items) - keep)
        if len(text) <= MAX_BODY_CHARS:
            return text
    return text[: MAX_BODY_CHARS - 20] + "\n\n(truncated)\n"


def render_pr_body(
    proposal: Proposal, *, templates: jinja2.Environment, quotes: bool = True
) -> str:
    template = templates.get_template("pr_body.md.j2")

    def render(evidence: list[Evidence], omitted: int) -> str:
        return template.render(
            proposal=proposal,
            fingerprint=proposal.fingerprint,
            thread_key=proposal.thread_key,
            evidence=evidence,
            omitted=omitted,
            quotes=quotes,
        )

    return render_capped(render, proposal.evidence)


def render_evidence_comment(
    proposal: Proposal,
    *,
    previous_body: str | None,
    templates: jinja2.Environment,
    quotes: bool = True,
) -> str:
    """The evidence comment with this thread's section added (or replaced) after earlier ones."""
    sections = [
        s for s in _sections(previous_body) if not s.startswith(_thread(proposal.thread_key))
    ]
    template = templates.get_template("evidence_comment.md.j2")
    while True:

        def render(evidence: list[Evidence], omitted: int, previous: list[str] = sections) -> str:
            return template.render(
                proposal=proposal,
                fingerprint=proposal.fingerprint,
                thread_key=proposal.thread_key,
                previous=previous,
                evidence=evidence,
                omitted=omitted,
                quotes=quotes,
            )

        text = render_capped(render, proposal.evidence)
        if len(text) < MAX_BODY_CHARS or not sections:
            return text
        sections = sections[1:]  # the oldest reports give way to the newest


def _thread(key: str) -> str:
    return THREAD_MARKER.format(key=key)


def _sections(body: str | None) -> list[str]:
    parts = re.split(r"(?=<!-- pythia:thread=)", body or "")
    return [p.strip() for p in parts[1:] if p.strip()]


# --- git: proposal branches without touching the working tree --------------------------------


class ProposalBranches:
    """Builds commits from a base branch plus new file contents and pushes them as branches.

    It works on git objects and a private index file (GIT_INDEX_FILE), so the user's working
    tree, index and checked-out branch never change.
    """

    def __init__(self, repo_path: Path, *, remote: str = "origin", token: str | None = None):
        self.repo = git.Repo(repo_path)
        self.remote = remote
        self._env = {**bot_env(), **auth_env(remote_url(Path(repo_path), remote), token)}

    def _git(self, *args: str, env: dict[str, str] | None = None) -> str:
        return str(self.repo.git.execute(["git", *args], env={**self._env, **(env or {})}))

    def fetch(self, branch: str) -> str:
        """The remote tip of `branch`, fetched into refs/remotes/<remote>/<branch>."""
        tracking = f"refs/remotes/{self.remote}/{branch}"
        self._git("fetch", "-q", self.remote, f"+refs/heads/{branch}:{tracking}")
        return self._git("rev-parse", tracking).strip()

    def read(self, commit: str, path: str) -> str | None:
        """A file's text at `commit`, or None when it does not exist there."""
        try:
            blob = self._git("rev-parse", "--verify", "--quiet", f"{commit}:{path}").strip()
        except git.GitCommandError:
            return None
        raw: bytes = self.repo.git.execute(
            ["git", "cat-file", "blob", blob], env=self._env, stdout_as_string=False,
            strip_newline_in_stdout=False,
        )
        return raw.decode("utf-8", errors="replace")

    def remote_head(self, branch: str) -> str | None:
        listed = self._git("ls-remote", "--heads", self.remote, f"refs/heads/{branch}").split()
        return listed[0] if listed else None

    def commit(self, parent: str, files: Sequence[tuple[str, str]], message: str) -> str:
        index_file = Path(self.repo.git_dir) / f"pythia-index-{os.getpid()}"
        env = {"GIT_INDEX_FILE": str(index_file)}
        try:
            self._git("read-tree", parent, env=env)
            for path, text in files:
                blob = self._store(text)
                entry = f"{self._mode(parent, path)},{blob},{path}"
                self._git("update-index", "--add", "--cacheinfo", entry, env=env)
            tree = self._git("write-tree", env=env).strip()
        finally:
            index_file.unlink(missing_ok=True)
        return self._git("commit-tree", tree, "-p", parent, "-m", message).strip()

    def _store(self, text: str) -> str:
        with tempfile.NamedTemporaryFile("wb", suffix=".md", delete=False) as handle:
            handle.write(text.encode("utf-8"))
        try:
            return self._git("hash-object", "-w", "--no-filters", handle.name).strip()
        finally:
            Path(handle.name).unlink(missing_ok=True)

    def _mode(self, parent: str, path: str) -> str:
        listed = self._git("ls-tree", parent, "--", path).split()
        return listed[0] if listed and listed[0] in ("100644", "100755") else "100644"

    def push(self, sha: str, branch: str, *, expected: str | None) -> None:
        """Push `sha` to `branch` if the remote branch is still at `expected` (None: absent)."""
        lease = f"--force-with-lease=refs/heads/{branch}:{expected or ''}"
        self._git("push", "-q", lease, self.remote, f"{sha}:refs/heads/{branch}")


# --- the publishers --------------------------------------------------------------------------


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
            reason = _one_line(error)
            if _outage(error):
                raise PublisherUnavailable(
                    f"GitHub is not answering ({reason}); publishing resumes next run"
                ) from None
            raise PublishError(f"could not publish '{proposal.title}': {reason}") from None

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
        waiting = self._over_limit(proposal)
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

    def _over_limit(self, proposal: Proposal) -> str:
        config = self.config
        if proposal.confidence < config.min_confidence:
            return (
                f"confidence {proposal.confidence:.2f} is below "
                f"publish.min_confidence {config.min_confidence:.2f}"
            )
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
            reason = _one_line(error)
            if _blocked(error):
                self._record(proposal, entry, status="waiting", reason=reason, branch=branch)
                raise PublishingBlocked(
                    f"GitHub refused to let Pythia open a PR ({reason[:160]}); {BLOCKED_HINT}"
                ) from None
            self._record(proposal, entry, status="failed", reason=reason, branch=branch)
            failure = PublisherUnavailable if _outage(error) else PublishError
            raise failure(f"could not open a PR for '{proposal.title}': {reason}") from None
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
        texts = {
            edit.path: text
            for edit in proposal.edits
            if (text := self.branches.read(parent, edit.path)) is not None
        }
        created = [posixpath.dirname(e.path) for e in proposal.edits if not e.search.strip()]
        try:
            # The paths were authorised when the proposal was made; only the text may differ.
            changed = apply_edits(
                texts, proposal.edits, allowed=lambda _path: True, new_file_dirs=created
            )
        except EditError as error:
            raise _Stale(
                f"{base} changed since the docs were read and the edits no longer apply "
                f"({_one_line(error)[:200]})"
            ) from None
        return tuple(sorted(changed.items()))

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
            log.warning("could not label #%s: %s", pr.number, _one_line(error))

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
        thread = _thread(proposal.thread_key)
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
        update["parked"] = ParkedProposal.of(proposal) if status == "waiting" else None
        return self.ledger.put(base.model_copy(update=update))


def _lazy_repo(github: Github, repository: str) -> Repository:
    # A lazy Repository skips `GET /repos/{owner}/{repo}` until an attribute is needed.
    return github.withLazy(True).get_repo(repository)


def _one_line(error: BaseException) -> str:
    if isinstance(error, GithubException):
        data = error.data if isinstance(error.data, dict) else {}
        text = f"GitHub answered {error.status}: {data.get('message', '')}".strip(": ")
    elif isinstance(error, git.GitCommandError):
        lines = [x for x in str(error.stderr).splitlines() if x.strip()]
        text = f"git {error.command[1] if len(error.command) > 1 else ''} failed: " + (
            lines[-1].strip(" '\"") if lines else f"exit {error.status}"
        )
    else:
        text = str(error)
    return " ".join(text.split())[:300]


class DryRunPublisher:
    """Writes each proposal to `<out_dir>/<fingerprint>/` (proposal.md, change.patch) instead
    of touching GitHub."""

    def __init__(
        self,
        out_dir: Path,
        *,
        templates: jinja2.Environment | None = None,
        ledger: Ledger | None = None,
        evidence_quotes: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.templates = templates or prompts.environment()
        self.ledger = ledger
        self.evidence_quotes = evidence_quotes

    def publish(self, proposal: Proposal) -> Published:
        entry = self.ledger.get(proposal.fingerprint) if self.ledger else None
        if entry is not None and entry.status in TERMINAL:
            return Published(action="skipped", reason=f"maintainers already {entry.status} it")
        folder = self.out_dir / proposal.fingerprint
        folder.mkdir(parents=True, exist_ok=True)
        body = render_pr_body(proposal, templates=self.templates, quotes=self.evidence_quotes)
        (folder / "proposal.md").write_text(f"# {proposal.title}\n\n{body}", encoding="utf-8")
        (folder / "change.patch").write_text(proposal.diff, encoding="utf-8")
        return Published(action="opened", url=folder.resolve().as_uri(), reason="dry run")
