"""The state documents (per-stream progress, the proposal ledger), their merges, and their store."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from .models import Demand, Proposal

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_ERROR_CHARS = 300
MAX_HANDLED_COMMENTS = 50  # `/pythia` comments remembered per proposal, newest kept

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


class SourceRef(BaseModel):
    """A docs section a proposal was grounded in."""

    path: str
    heading: str = ""
    anchor: str = ""
    score: float = 0.0


class Judged(BaseModel):
    """A paid-for verdict on a thread not yet handled: its hash and category, never its text."""

    digest: str
    category: str
    confidence: float = 0.0
    hits: list[SourceRef] = Field(default_factory=list)  # the docs sections it was matched to


class PendingBatch(BaseModel):
    """A Batch API job a backfill sent and a later run collects: names and ids, never text."""

    name: str  # the job's resource name, e.g. batches/123abc
    model: str
    submitted_at: datetime
    stage: str = "classify"  # or "propose": one request per group of conversations
    requests: dict[str, list[str]]  # request key -> thread keys, in the order of its prompt
    digests: dict[str, str] = Field(default_factory=dict)  # thread key -> digest when sent
    # propose: request key -> the message ("stream:id", "" for context) each number stood for
    numbered: dict[str, list[str]] = Field(default_factory=dict)


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
    # Doc-worthy threads a run classified but did not finish (a cap, an outage): the next run
    # reuses the verdict instead of paying for it again, unless the thread changed.
    judged: dict[str, Judged] = Field(default_factory=dict)
    # Batch jobs (backfill.py) whose answers a later run collects.
    pending_batches: list[PendingBatch] = Field(default_factory=list)

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
            judged = {k: v for k, v in self.judged.items() if _first_id(k) > self.watermark}
            if judged != self.judged:
                self.judged = judged

    def record_failure(self, thread_key: str, error: str) -> int:
        """Count one more failure of a thread; returns the new count."""
        failure = self.failures.get(thread_key, Failure())
        updated = Failure(count=failure.count + 1, last_error=error[:MAX_ERROR_CHARS])
        self.failures = {**self.failures, thread_key: updated}
        return updated.count


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
    thread_keys: list[str] = Field(default_factory=list)  # every conversation behind it
    people: list[str] = Field(default_factory=list)  # their authors' pseudonyms
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    targets: list[str] = Field(default_factory=list)  # docs-section keys its demand came by
    sources: list[SourceRef] = Field(default_factory=list)
    evidence_comment_id: int | None = None
    reason: str = ""
    # A proposal waiting for room under the PR limits, as it will be published minus the chat:
    # the edited docs text and the model's summary (both end up in the public PR), message ids
    # and permalinks, but never a message's text.
    parked: Proposal | None = None
    handled_comments: list[int] = Field(default_factory=list)  # /pythia commands answered
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @model_validator(mode="before")
    @classmethod
    def _legacy_parked(cls, data: Any) -> Any:
        """Ledgers written before 0.2 kept parked proposals as rows of tuples."""
        if isinstance(data, dict) and isinstance(data.get("parked"), dict):
            parked = data["parked"]
            if "fingerprint" not in parked and isinstance(parked.get("edits"), list):
                data = {**data, "parked": _from_rows(str(data.get("fingerprint", "")), parked)}
        return data

    def demand(self) -> Demand | None:
        if not self.thread_keys or self.first_seen is None or self.last_seen is None:
            return None
        return Demand(
            conversations=tuple(self.thread_keys),
            people=tuple(self.people),
            first_seen=self.first_seen,
            last_seen=self.last_seen,
        )

    def with_demand(self, demand: Demand | None) -> LedgerEntry:
        """This entry with `demand` added to what it recorded before."""
        if demand is None:
            return self
        first = [t for t in (self.first_seen, demand.first_seen) if t is not None]
        last = [t for t in (self.last_seen, demand.last_seen) if t is not None]
        return self.model_copy(
            update={
                "thread_keys": sorted({*self.thread_keys, *demand.conversations}),
                "people": sorted({*self.people, *demand.people}),
                "first_seen": min(first),
                "last_seen": max(last),
            }
        )

    @field_validator("parked")
    @classmethod
    def _parked_without_chat(cls, parked: Proposal | None) -> Proposal | None:
        return None if parked is None else without_chat(parked)

    @field_serializer("parked", mode="wrap")
    def _parked_without_quote_fields(
        self, parked: Proposal | None, handler: SerializerFunctionWrapHandler
    ) -> Any:
        """The (always empty) quote is left out of the file as well."""
        data = handler(parked)
        if isinstance(data, dict):
            for evidence in data.get("evidence", []):
                evidence.pop("quote", None)
            data.pop("sources", None)
        return data


def without_chat(proposal: Proposal) -> Proposal:
    """The proposal as the public data branch may hold it: no quote, no retrieved text."""
    return replace(
        proposal, evidence=tuple(replace(e, quote="") for e in proposal.evidence), sources=()
    )


def _from_rows(fingerprint: str, rows: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: v for k, v in rows.items() if k not in ("edits", "evidence")},
        "fingerprint": fingerprint,
        "edits": [
            {"path": p, "search": s, "replace": r, "reason": why} for p, s, r, why in rows["edits"]
        ],
        "evidence": [
            {"message_id": i, "author": a, "sent_at": t, "quote": "", "permalink": link}
            for i, a, t, link in rows.get("evidence", [])
        ],
    }


class Ledger(BaseModel):
    """Every proposal Pythia made, keyed by fingerprint."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    proposals: dict[str, LedgerEntry] = Field(default_factory=dict)

    def get(self, fingerprint: str) -> LedgerEntry | None:
        return self.proposals.get(fingerprint)

    def put(self, entry: LedgerEntry) -> LedgerEntry:
        if entry.parked is not None:  # model_copy(update=...) skips the field's validator
            entry = entry.model_copy(update={"parked": without_chat(entry.parked)})
        self.proposals[entry.fingerprint] = entry
        return entry

    def by_pr(self, number: int) -> LedgerEntry | None:
        return next((e for e in self.proposals.values() if e.pr_number == number), None)

    def by_branch(self, branch: str) -> LedgerEntry | None:
        return next((e for e in self.proposals.values() if branch and e.branch == branch), None)

    def parked(self) -> list[Proposal]:
        """Proposals waiting for room, oldest first, ready to publish again."""
        waiting = [e for e in self.proposals.values() if e.status == "waiting"]
        return [
            e.parked for e in sorted(waiting, key=lambda e: e.created_at) if e.parked is not None
        ]

    def with_status(self, *statuses: str) -> list[LedgerEntry]:
        found = [e for e in self.proposals.values() if e.status in statuses]
        return sorted(found, key=lambda e: e.updated_at, reverse=True)


# --- merges for optimistic concurrency -------------------------------------------------------


def _first_id(thread_key: str) -> int:
    """The first message id in a thread key ('stream:123'); threads start after it."""
    try:
        return int(thread_key.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return 0


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
        judged={**theirs.judged, **ours.judged},
        pending_batches=list(
            {job.name: job for job in [*theirs.pending_batches, *ours.pending_batches]}.values()
        ),
    )
    merged.compact()
    return merged


def merge_ledger_entries(ours: LedgerEntry, theirs: LedgerEntry) -> LedgerEntry:
    """The stronger status wins, then the newer entry; every field the winner lacks is filled
    from the other, and the lists (threads, answered commands) are united."""
    rank = (_PRECEDENCE[ours.status], ours.updated_at)
    other_rank = (_PRECEDENCE[theirs.status], theirs.updated_at)
    winner, loser = (ours, theirs) if rank >= other_rank else (theirs, ours)
    filled: dict[str, Any] = {}
    for name in ("pr_number", "evidence_comment_id"):
        if getattr(winner, name) is None and getattr(loser, name) is not None:
            filled[name] = getattr(loser, name)
    for name in ("branch", "url", "title", "category", "reason", "paths", "sources"):
        if not getattr(winner, name) and getattr(loser, name):
            filled[name] = getattr(loser, name)
    if winner.status == "waiting" and winner.parked is None and loser.parked is not None:
        filled["parked"] = loser.parked
    if not winner.confidence and loser.confidence:
        filled["confidence"] = loser.confidence
    filled["thread_keys"] = sorted({*winner.thread_keys, *loser.thread_keys})
    filled["people"] = sorted({*winner.people, *loser.people})
    filled["targets"] = sorted({*winner.targets, *loser.targets})
    seen = [t for t in (winner.first_seen, loser.first_seen) if t is not None]
    filled["first_seen"] = min(seen) if seen else None
    seen = [t for t in (winner.last_seen, loser.last_seen) if t is not None]
    filled["last_seen"] = max(seen) if seen else None
    handled = sorted({*winner.handled_comments, *loser.handled_comments})
    filled["handled_comments"] = handled[-MAX_HANDLED_COMMENTS:]
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
