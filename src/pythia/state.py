"""The state documents (per-stream progress, the proposal ledger), their merges, and their store."""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

import git
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .models import Edit, Evidence, Proposal

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_ERROR_CHARS = 300

ProposalStatus = Literal["open", "waiting", "merged", "rejected", "ignored", "failed"]
TERMINAL: frozenset[str] = frozenset({"merged", "rejected", "ignored"})
# Higher wins when two runs disagree about one fingerprint: a maintainer's decision is final,
# an opened PR beats a proposal still waiting for room or one whose publishing failed.
_PRECEDENCE = {"merged": 3, "rejected": 3, "ignored": 3, "open": 2, "failed": 1, "waiting": 1}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Failure(BaseModel):
    """How often one thread failed, and the last error (never message text)."""

    count: int = 0
    last_error: str = ""


class StreamState(BaseModel):
    """Progress of one stream: ids only, never message text."""

    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    schema_version: int = SCHEMA_VERSION
    stream: str
    watermark: int | None = None
    done_ids: list[int] = Field(default_factory=list)
    failures: dict[str, Failure] = Field(default_factory=dict)
    last_read_at: datetime | None = None
    messages_read_total: int = 0

    @field_validator("done_ids")
    @classmethod
    def _sorted_unique(cls, ids: list[int]) -> list[int]:
        return sorted(set(ids))

    def mark_done(self, ids: list[int] | tuple[int, ...]) -> None:
        """Record that these messages' outcome is known."""
        self.done_ids = [*self.done_ids, *ids]
        self.compact()

    def advance(self, to: int | None, done: Iterable[int] = ()) -> None:
        """Move the watermark forward (never back), add `done` ids, drop those it now covers."""
        if to is not None and (self.watermark is None or to > self.watermark):
            self.watermark = to
        if done:
            self.done_ids = [*self.done_ids, *done]
        self.compact()

    def compact(self) -> None:
        if self.watermark is not None:
            kept = [i for i in self.done_ids if i > self.watermark]
            if kept != self.done_ids:
                self.done_ids = kept

    def record_failure(self, thread_key: str, error: str) -> int:
        """Count one more failure of a thread; returns the new count."""
        failure = self.failures.get(thread_key, Failure())
        updated = Failure(count=failure.count + 1, last_error=error[:MAX_ERROR_CHARS])
        self.failures = {**self.failures, thread_key: updated}
        return updated.count


class SourceRef(BaseModel):
    """A docs section a proposal was grounded in."""

    path: str
    heading: str = ""
    anchor: str = ""
    score: float = 0.0


class ParkedProposal(BaseModel):
    """A proposal waiting for room under the PR limits: what will be published, minus quotes.

    It holds the edited docs text and the model's own summary (both end up in the public PR),
    message ids and permalinks, but never the text of a chat message.
    """

    stream: str
    thread_key: str
    category: str
    title: str
    summary: str
    reasoning: str
    confidence: float
    edits: list[tuple[str, str, str, str]]
    files: list[tuple[str, str]]
    diff: str
    evidence: list[tuple[int, str, datetime, str | None]] = Field(default_factory=list)

    @classmethod
    def of(cls, proposal: Proposal) -> ParkedProposal:
        return cls(
            stream=proposal.stream,
            thread_key=proposal.thread_key,
            category=proposal.category,
            title=proposal.title,
            summary=proposal.summary,
            reasoning=proposal.reasoning,
            confidence=proposal.confidence,
            edits=[(e.path, e.search, e.replace, e.reason) for e in proposal.edits],
            files=[(path, text) for path, text in proposal.files],
            diff=proposal.diff,
            evidence=[(e.message_id, e.author, e.sent_at, e.permalink) for e in proposal.evidence],
        )

    def proposal(self, fingerprint: str) -> Proposal:
        return Proposal(
            fingerprint=fingerprint,
            stream=self.stream,
            thread_key=self.thread_key,
            category=self.category,
            title=self.title,
            summary=self.summary,
            reasoning=self.reasoning,
            confidence=self.confidence,
            edits=tuple(Edit(*edit) for edit in self.edits),
            diff=self.diff,
            files=tuple((path, text) for path, text in self.files),
            evidence=tuple(
                Evidence(message_id=i, author=a, sent_at=t, quote="", permalink=link)
                for i, a, t, link in self.evidence
            ),
        )


class LedgerEntry(BaseModel):
    """What happened to one proposal fingerprint; no message text."""

    model_config = ConfigDict(extra="ignore")

    fingerprint: str
    status: ProposalStatus
    title: str = ""
    category: str = ""
    confidence: float = 0.0
    paths: list[str] = Field(default_factory=list)
    branch: str = ""
    pr_number: int | None = None
    url: str = ""
    thread_keys: list[str] = Field(default_factory=list)
    sources: list[SourceRef] = Field(default_factory=list)
    evidence_comment_id: int | None = None
    reason: str = ""
    parked: ParkedProposal | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Ledger(BaseModel):
    """Every proposal Pythia made, keyed by fingerprint."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    proposals: dict[str, LedgerEntry] = Field(default_factory=dict)

    def get(self, fingerprint: str) -> LedgerEntry | None:
        return self.proposals.get(fingerprint)

    def put(self, entry: LedgerEntry) -> LedgerEntry:
        self.proposals[entry.fingerprint] = entry
        return entry

    def by_pr(self, number: int) -> LedgerEntry | None:
        return next((e for e in self.proposals.values() if e.pr_number == number), None)

    def by_branch(self, branch: str) -> LedgerEntry | None:
        return next((e for e in self.proposals.values() if branch and e.branch == branch), None)

    def parked(self) -> list[Proposal]:
        """Proposals waiting for room, oldest first, ready to publish again."""
        waiting = [e for e in self.proposals.values() if e.status == "waiting" and e.parked]
        return [
            e.parked.proposal(e.fingerprint)
            for e in sorted(waiting, key=lambda e: e.created_at)
            if e.parked is not None
        ]

    def with_status(self, *statuses: str) -> list[LedgerEntry]:
        found = [e for e in self.proposals.values() if e.status in statuses]
        return sorted(found, key=lambda e: e.updated_at, reverse=True)


# --- merges for optimistic concurrency -------------------------------------------------------


def merge_stream_states(ours: StreamState, theirs: StreamState) -> StreamState:
    """Combine two runs' views of one stream so neither loses progress."""
    marks = [w for w in (ours.watermark, theirs.watermark) if w is not None]
    failures = dict(theirs.failures)
    for key, failure in ours.failures.items():
        other = failures.get(key)
        if other is None or failure.count >= other.count:
            failures[key] = failure
    read_at = [t for t in (ours.last_read_at, theirs.last_read_at) if t is not None]
    merged = StreamState(
        stream=ours.stream,
        watermark=max(marks) if marks else None,
        done_ids=[*ours.done_ids, *theirs.done_ids],
        failures=failures,
        last_read_at=max(read_at) if read_at else None,
        messages_read_total=max(ours.messages_read_total, theirs.messages_read_total),
    )
    merged.compact()
    return merged


def merge_ledger_entries(ours: LedgerEntry, theirs: LedgerEntry) -> LedgerEntry:
    """The stronger status wins, then the newer entry; gaps are filled from the other."""
    rank = (_PRECEDENCE[ours.status], ours.updated_at)
    other_rank = (_PRECEDENCE[theirs.status], theirs.updated_at)
    winner, loser = (ours, theirs) if rank >= other_rank else (theirs, ours)
    filled: dict[str, Any] = {}
    for name in ("pr_number", "evidence_comment_id"):
        if getattr(winner, name) is None and getattr(loser, name) is not None:
            filled[name] = getattr(loser, name)
    for name in ("branch", "url", "title", "category"):
        if not getattr(winner, name) and getattr(loser, name):
            filled[name] = getattr(loser, name)
    filled["thread_keys"] = sorted({*winner.thread_keys, *loser.thread_keys})
    filled["created_at"] = min(winner.created_at, loser.created_at)
    return winner.model_copy(update=filled)


def merge_ledgers(ours: Ledger, theirs: Ledger) -> Ledger:
    proposals = dict(theirs.proposals)
    for fingerprint, entry in ours.proposals.items():
        other = proposals.get(fingerprint)
        proposals[fingerprint] = entry if other is None else merge_ledger_entries(entry, other)
    return Ledger(proposals=dict(sorted(proposals.items())))


def merge_state_file(name: str, ours: bytes, theirs: bytes) -> bytes:
    """Merge two versions of a file under `state/`; unreadable versions lose to readable ones."""
    if name == LEDGER_FILE:
        ledger = merge_ledgers(_parse(Ledger, ours, name), _parse(Ledger, theirs, name))
        return _dump(ledger)
    stream = name.removesuffix(".json")
    ours_state = _parse(StreamState, ours, name, stream=stream)
    theirs_state = _parse(StreamState, theirs, name, stream=stream)
    return _dump(merge_stream_states(ours_state, theirs_state))


# --- the store -------------------------------------------------------------------------------

LEDGER_FILE = "ledger.json"
M = TypeVar("M", bound=BaseModel)


class StateStore:
    """Reads and writes the state documents of one directory (`state/` on the data branch)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.warnings: list[str] = []

    def stream_path(self, stream: str) -> Path:
        return self.directory / f"{stream}.json"

    def load_stream(self, stream: str) -> StreamState:
        path = self.stream_path(stream)
        if not path.exists():
            return StreamState(stream=stream)
        state = self._load(StreamState, path, stream=stream)
        return state.model_copy(update={"stream": stream})

    def save_stream(self, state: StreamState) -> None:
        state.compact()
        _write_atomic(self.stream_path(state.stream), _dump(state))

    def streams(self) -> list[StreamState]:
        if not self.directory.is_dir():
            return []
        names = sorted(p.stem for p in self.directory.glob("*.json") if p.name != LEDGER_FILE)
        return [self.load_stream(name) for name in names]

    def load_ledger(self) -> Ledger:
        path = self.directory / LEDGER_FILE
        return self._load(Ledger, path) if path.exists() else Ledger()

    def save_ledger(self, ledger: Ledger) -> None:
        _write_atomic(self.directory / LEDGER_FILE, _dump(ledger))

    def _load(self, model: type[M], path: Path, **defaults: Any) -> M:
        try:
            raw = path.read_bytes()
        except OSError as error:
            return self._rebuilt(model, path, f"cannot be read ({error.strerror})", defaults)
        problems: list[str] = []
        loaded = _parse(model, raw, path.name, problems=problems, **defaults)
        if problems:
            self._warn(f"{path.name} {'; '.join(problems)}")
        return loaded

    def _rebuilt(self, model: type[M], path: Path, why: str, defaults: dict[str, Any]) -> M:
        self._warn(f"{path.name} {why}; starting it afresh")
        return model.model_validate(defaults)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("state file %s", message)


def _parse(
    model: type[M],
    raw: bytes,
    name: str,
    *,
    problems: list[str] | None = None,
    **defaults: Any,
) -> M:
    """Validate a state document, salvaging what is valid; never raises."""
    notes = problems if problems is not None else []
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        notes.append("was not valid JSON; rebuilt it empty (the old version is in git history)")
        return model.model_validate(defaults)
    if not isinstance(data, dict):
        notes.append("was not a JSON object; rebuilt it empty")
        return model.model_validate(defaults)
    version = data.get("schema_version", SCHEMA_VERSION)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        notes.append("was written by a newer Pythia; kept what this version understands")
    data = {**defaults, **data, "schema_version": SCHEMA_VERSION}
    if model is Ledger and isinstance(data.get("proposals"), dict):
        data["proposals"] = _valid_entries(data["proposals"], notes)
    for _ in range(len(data) + 1):
        try:
            return model.model_validate(data)
        except ValidationError as error:
            bad = {str(item["loc"][0]) for item in error.errors() if item["loc"]}
            bad -= set(defaults)
            if not bad:
                break
            notes.append(f"had invalid {', '.join(sorted(bad))}; those were reset")
            data = {k: v for k, v in data.items() if k not in bad}
    notes.append("could not be read; rebuilt it empty")
    return model.model_validate(defaults)


def _valid_entries(proposals: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for fingerprint, entry in proposals.items():
        try:
            kept[fingerprint] = LedgerEntry.model_validate(entry)
        except ValidationError:
            notes.append(f"had an unreadable entry {fingerprint!r}; dropped it")
    return kept


def _dump(model: BaseModel) -> bytes:
    text = json.dumps(model.model_dump(mode="json"), indent=2, sort_keys=True)
    return (text + "\n").encode("utf-8")


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --- the data branch -------------------------------------------------------------------------

BOT_NAME = "github-actions[bot]"
BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"
INDEX_FILE = "index.sqlite"
STATE_DIR = "state"
INDEX_SUBJECT = "pythia: update the docs index"
_README = """# pythia-data

Written by Pythia: `index.sqlite` (the docs index) and `state/` (stream watermarks and the
proposal ledger). It holds ids, hashes, statuses and PR numbers, never chat messages.
Do not protect this branch; Pythia replaces its index commit instead of stacking them.
"""


class DataBranchError(Exception):
    """The data branch could not be fetched or pushed."""


def bot_env() -> dict[str, str]:
    """The bot identity for commits, through the environment so no git config is touched."""
    return {
        "GIT_AUTHOR_NAME": BOT_NAME,
        "GIT_AUTHOR_EMAIL": BOT_EMAIL,
        "GIT_COMMITTER_NAME": BOT_NAME,
        "GIT_COMMITTER_EMAIL": BOT_EMAIL,
    }


def auth_env(remote_url: str, token: str | None) -> dict[str, str]:
    """Pass the token as an `http.extraheader` through GIT_CONFIG_* variables.

    Not `-c` on the command line: GitPython puts the whole command line into GitCommandError
    messages (and `ps` shows it), which would leak the token. The key is URL-qualified because
    git keeps only the most specific match (git-config(1), "http.<url>.*"), so a generic key
    would lose to the header actions/checkout persists; the empty value first clears that one
    ("an empty value will reset the extra headers to the empty list").
    """
    if not token or not remote_url.startswith(("https://", "http://")):
        return {}
    scheme, rest = remote_url.split("://", 1)
    key = f"http.{scheme}://{rest.split('/', 1)[0]}/.extraheader"
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": key,
        "GIT_CONFIG_VALUE_0": "",
        "GIT_CONFIG_KEY_1": key,
        "GIT_CONFIG_VALUE_1": f"AUTHORIZATION: basic {basic}",
    }


def remote_url(repo_path: Path, remote: str) -> str:
    """The URL of `remote`, with a relative local path made absolute."""
    try:
        url = str(git.Repo(repo_path).git.remote("get-url", remote))
    except (git.GitCommandError, git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise DataBranchError(
            f"{repo_path} has no git remote '{remote}'; run Pythia inside a clone of the repo"
        ) from None
    if "://" not in url and not url.startswith("git@"):
        candidate = (Path(repo_path) / url).resolve()
        if candidate.exists():
            return str(candidate)
    return url


class DataBranch:
    """A private checkout of the data branch: open, change `path`, then `save`.

    The checkout is a throwaway repository in a temp dir, so the user's working tree, index and
    current branch are never touched.
    """

    def __init__(
        self,
        repo_path: Path | str,
        branch: str = "pythia-data",
        remote: str = "origin",
        token: str | None = None,
        *,
        max_attempts: int = 4,
    ) -> None:
        self.repo_path = Path(repo_path)
        self.branch = branch
        self.remote = remote
        self.max_attempts = max_attempts
        self.created = False
        self._token = token
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._remote_sha: str | None = None
        self._repo: Any = None

    def __enter__(self) -> DataBranch:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        if self._tmp is None:
            raise DataBranchError("the data branch is not open; call open() first")
        return Path(self._tmp.name)

    @property
    def index_path(self) -> Path:
        return self.path / INDEX_FILE

    @property
    def state_dir(self) -> Path:
        return self.path / STATE_DIR

    @property
    def store(self) -> StateStore:
        return StateStore(self.state_dir)

    def open(self) -> Path:
        """Fetch the branch into a temp checkout, or start it as an orphan if it is missing."""
        url = remote_url(self.repo_path, self.remote)
        self._tmp = tempfile.TemporaryDirectory(prefix="pythia-data-")
        self._repo = git.Repo.init(self._tmp.name)
        self._repo.git.update_environment(**bot_env(), **auth_env(url, self._token))
        self._git("remote", "add", "origin", url)
        self._remote_sha = self._fetch()
        if self._remote_sha is None:
            self._git("symbolic-ref", "HEAD", f"refs/heads/{self.branch}")
            self.state_dir.mkdir(parents=True, exist_ok=True)
            (self.path / "README.md").write_text(_README, encoding="utf-8")
            self.created = True
        else:
            self._git("checkout", "-q", "-B", self.branch, self._remote_sha)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self.path

    def close(self) -> None:
        if self._tmp is not None:
            self._repo.close()
            self._tmp.cleanup()
            self._tmp = None

    def save(self, message: str) -> bool:
        """Commit and push what changed; False when nothing did. Retries when another run won."""
        snapshot = self._changes()
        for _attempt in range(self.max_attempts):
            if not snapshot:
                return False
            self._commit(message)
            if self._push():
                self._remote_sha = self._rev("HEAD")
                return True
            self._reapply(snapshot)
            snapshot = self._changes()
        raise DataBranchError(
            f"another run kept pushing to '{self.branch}' ({self.max_attempts} attempts); "
            "this run's state was not saved, rerun it"
        )

    # -- git plumbing --

    def _git(self, *args: str) -> str:
        return str(self._repo.git.execute(["git", *args]))

    def _rev(self, ref: str) -> str | None:
        try:
            return self._git("rev-parse", "--verify", "-q", ref).strip() or None
        except git.GitCommandError:
            return None

    def _fetch(self) -> str | None:
        ref = f"refs/heads/{self.branch}"
        try:
            listed = self._git("ls-remote", "--heads", "origin", ref)
            if not listed.strip():
                return None
            self._git("fetch", "-q", "origin", f"+{ref}:refs/remotes/origin/{self.branch}")
        except git.GitCommandError as error:
            raise DataBranchError(
                f"cannot fetch '{self.branch}' from '{self.remote}' "
                f"({_last_line(error.stderr)}); check the token's contents permission"
            ) from None
        return self._rev(f"refs/remotes/origin/{self.branch}")

    def _changes(self) -> dict[str, bytes]:
        """Files that differ from the last pushed commit, with this run's content."""
        self._git("add", "-A")
        if self._rev("HEAD") is None:
            names = self._git("ls-files").splitlines()
        else:
            names = self._git("diff", "--cached", "--name-only", "HEAD").splitlines()
        return {n: (self.path / n).read_bytes() for n in names if (self.path / n).is_file()}

    def _commit(self, message: str) -> None:
        # The index always rides in its own commit on top: replacing that commit each save
        # keeps one index blob in history instead of one per rebuild; state commits (a few
        # KB of JSON) stack below it.
        head = self._rev("HEAD")
        if head is not None and self._is_index_commit(head):
            self._git("reset", "-q", "--soft", "HEAD~1")
            head = self._rev("HEAD")
        staged = self._staged(head)
        if any(name != INDEX_FILE for name in staged):
            if INDEX_FILE in staged:
                self._unstage_index(head)
            self._git("commit", "-q", "--no-verify", "-m", message)
            head = self._rev("HEAD")
        if INDEX_FILE in self._staged(head, add_index=True):
            self._git("commit", "-q", "--no-verify", "-m", INDEX_SUBJECT, "-m", message)

    def _staged(self, head: str | None, *, add_index: bool = False) -> list[str]:
        if add_index and (self.path / INDEX_FILE).exists():
            self._git("add", INDEX_FILE)
        if head is None:
            return self._git("ls-files").splitlines()
        return self._git("diff", "--cached", "--name-only", head).splitlines()

    def _unstage_index(self, head: str | None) -> None:
        if head is None:
            self._git("rm", "-q", "--cached", INDEX_FILE)
        else:
            self._git("reset", "-q", head, "--", INDEX_FILE)

    def _is_index_commit(self, sha: str) -> bool:
        author = self._git("log", "-1", "--format=%ae%n%s", sha).splitlines()
        if author[:2] != [BOT_EMAIL, INDEX_SUBJECT] or self._rev(f"{sha}~1") is None:
            return False
        touched = self._git("diff-tree", "--no-commit-id", "--name-only", "-r", sha).splitlines()
        return touched == [INDEX_FILE]

    def _push(self) -> bool:
        lease = f"refs/heads/{self.branch}:{self._remote_sha or ''}"
        try:
            self._git(
                "push", "-q", f"--force-with-lease={lease}", "origin",
                f"HEAD:refs/heads/{self.branch}",
            )  # fmt: skip
        except git.GitCommandError as error:
            stderr = str(error.stderr)
            if any(s in stderr for s in ("stale info", "rejected", "fetch first")):
                log.info("the data branch moved during this run; merging and retrying")
                return False
            raise DataBranchError(
                f"cannot push '{self.branch}' ({_last_line(stderr)}); the branch must not be "
                "protected and the token needs contents: write"
            ) from None
        return True

    def _reapply(self, snapshot: dict[str, bytes]) -> None:
        """Move onto the branch as another run left it, then re-apply this run's changes."""
        self._remote_sha = self._fetch()
        if self._remote_sha is None:
            raise DataBranchError(f"'{self.branch}' was deleted during this run; rerun it")
        self._git("reset", "-q", "--hard", self._remote_sha)
        self._git("clean", "-q", "-fdx")
        for name, ours in snapshot.items():
            target = self.path / name
            data = ours
            if name.startswith(f"{STATE_DIR}/") and name.endswith(".json") and target.exists():
                data = merge_state_file(Path(name).name, ours, target.read_bytes())
            # Anything else (the index) is this run's: it was built from the docs this run saw.
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


def _last_line(text: object) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1].strip("'\" ") if lines else "no detail"
