"""Frozen domain types that travel between the pipeline's stages."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

# How a conversation was resolved: a reply the platform marks as the answer (a Discourse
# solution, GitHub's chosen answer), or a reply from one of the stream's `trusted_authors`.
Resolution = Literal["accepted", "maintainer"]
RESOLUTION_WORDS: dict[str, str] = {
    "accepted": "marked as the answer",
    "maintainer": "answered by a maintainer",
}


@dataclass(frozen=True)
class Message:
    """One chat message, normalised across sources; `author` is always a pseudonym."""

    stream: str
    id: int
    author: str
    sent_at: datetime
    text: str
    thread_key: str | None = None
    reply_to: int | None = None
    permalink: str | None = None
    is_bot: bool = False
    # The author's chat handle, when the platform says (Telegram usernames): only so that a
    # mention of it can be published as `author`; never stored, never published.
    handle: str | None = None
    # Resolution signals the source sets: the platform marks this reply as the answer, and the
    # author is one of the stream's `trusted_authors` (matched by the source, never published).
    is_answer: bool = False
    trusted: bool = False


def resolution_of(messages: Sequence[Message]) -> Resolution | None:
    """How a conversation was answered: a reply marked as the answer wins over a reply from a
    trusted author; the opening message answers nothing (a maintainer may ask, too)."""
    replies = messages[1:]
    if any(message.is_answer for message in replies):
        return "accepted"
    if any(message.trusted for message in replies):
        return "maintainer"
    return None


def strongest(resolutions: Iterable[Resolution | None]) -> Resolution | None:
    """The strongest of several conversations' resolutions ('accepted' above 'maintainer')."""
    found = set(resolutions)
    if "accepted" in found:
        return "accepted"
    return "maintainer" if "maintainer" in found else None


@dataclass(frozen=True)
class Thread:
    """A conversation: the messages to judge, plus a few earlier ones shown only as context.

    `omitted` holds the ids of messages of the thread left out to keep prompts small
    (`threads.trim_thread`); they are still part of it, so its outcome covers them too.
    `answered` is how the whole conversation was resolved (`resolution_of` its messages, those
    already judged included), set when it is grouped and kept when it is cut down.
    """

    stream: str
    messages: tuple[Message, ...]
    context: tuple[Message, ...] = ()
    omitted: tuple[int, ...] = ()
    answered: Resolution | None = None

    @property
    def key(self) -> str:
        """A stable id: the stream and the first message id."""
        return f"{self.stream}:{self.messages[0].id}"

    @property
    def first_id(self) -> int:
        return self.messages[0].id

    @property
    def last_id(self) -> int:
        return max(message.id for message in self.messages)

    @property
    def last_at(self) -> datetime:
        return max(message.sent_at for message in self.messages)

    @property
    def digest(self) -> str:
        """A hash of what the thread says (ids and texts): it changes when the thread does."""
        hasher = hashlib.sha256()
        for message in self.messages:
            hasher.update(f"{message.id}\0{message.text}\0".encode())
        return hasher.hexdigest()[:16]

    @property
    def message_ids(self) -> tuple[int, ...]:
        """Every message of the thread, shown or omitted, by id."""
        if not self.omitted:
            return tuple(message.id for message in self.messages)
        return tuple(sorted({*self.omitted, *(message.id for message in self.messages)}))


@dataclass(frozen=True)
class Verdict:
    """What classification decided about one thread."""

    thread_key: str
    category: str
    doc_value: bool
    summary: str
    reason: str
    queries: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    confidence: float = 0.0


@dataclass(frozen=True)
class Chunk:
    """One section of a docs file, as indexed."""

    path: str
    heading: str
    anchor: str
    text: str
    ordinal: int
    content_hash: str
    title: str = ""


@dataclass(frozen=True)
class Hit:
    """A search result: a chunk and its fused score."""

    path: str
    heading: str
    anchor: str
    score: float
    text: str


@dataclass(frozen=True)
class Edit:
    """A search/replace block against one docs file; an empty `search` creates the file."""

    path: str
    search: str
    replace: str
    reason: str = ""


@dataclass(frozen=True)
class Evidence:
    """A message that supports a proposal, as it may be published (already redacted)."""

    message_id: int
    author: str
    sent_at: datetime
    quote: str = ""
    permalink: str | None = None


@dataclass(frozen=True)
class LineNote:
    """An added line of a proposal and the evidence items (indices into `Proposal.evidence`)
    it rests on, for the PR body."""

    path: str
    line: int  # 1-based, in the edited file
    evidence: tuple[int, ...]


@dataclass(frozen=True)
class Demand:
    """How often a docs gap was asked about: conversation keys and author pseudonyms (ids
    only, never text), and when it was first and last asked."""

    conversations: tuple[str, ...]
    people: tuple[str, ...]
    first_seen: datetime
    last_seen: datetime

    def merged(self, other: Demand | None) -> Demand:
        if other is None:
            return self
        return Demand(
            conversations=tuple(sorted({*self.conversations, *other.conversations})),
            people=tuple(sorted({*self.people, *other.people})),
            first_seen=min(self.first_seen, other.first_seen),
            last_seen=max(self.last_seen, other.last_seen),
        )

    def sentence(self) -> str:
        """'asked in 7 conversations by 5 people since 2026-10-02'."""
        talks, people = len(self.conversations), len(self.people)
        return (
            f"asked in {talks} conversation{'s' if talks != 1 else ''} by {people} "
            f"{'people' if people != 1 else 'person'} since {self.first_seen:%Y-%m-%d}"
        )

    @classmethod
    def of(cls, threads: Sequence[Thread]) -> Demand:
        """The demand a set of threads shows: their keys and the people who asked (each thread's
        first author; those who answered are not demand)."""
        messages = [message for thread in threads for message in thread.messages]
        return cls(
            conversations=tuple(sorted({thread.key for thread in threads})),
            people=tuple(sorted({thread.messages[0].author for thread in threads})),
            first_seen=min(m.sent_at for m in messages),
            last_seen=max(m.sent_at for m in messages),
        )


@dataclass(frozen=True)
class Proposal:
    """A grounded documentation change, ready to be safety-checked and published."""

    fingerprint: str
    stream: str
    thread_key: str
    category: str
    title: str
    summary: str
    reasoning: str
    confidence: float
    edits: tuple[Edit, ...]
    diff: str
    files: tuple[tuple[str, str], ...]
    evidence: tuple[Evidence, ...] = ()
    sources: tuple[Hit, ...] = ()
    demand: Demand | None = None  # every conversation behind it, this run's and earlier ones
    support: tuple[LineNote, ...] = ()  # which messages each added line rests on
    answered: Resolution | None = None  # the strongest resolution among its conversations

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(sorted({edit.path for edit in self.edits}))


@dataclass(frozen=True)
class Usage:
    """Token counts of one LLM call."""

    input_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0


@dataclass
class StageUsage:
    """Running totals for one pipeline stage (classify, propose, embed)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    cost_usd: float = 0.0


@dataclass
class StreamReport:
    """What one stream contributed to a run."""

    stream: str
    messages_read: int = 0
    threads: int = 0
    threads_settled: int = 0
    watermark_before: int | None = None
    watermark_after: int | None = None
    error: str | None = None


@dataclass
class RunReport:
    """Everything a run did, for the job summary, the outputs and the dashboard.

    The index, command and feedback modes fill in what applies to them (`mode`, `outcome`,
    the index figures) so that every mode leaves a report and meaningful outputs.
    """

    dry_run: bool = False
    mode: str = "run"
    outcome: str = ""  # one line: what this run did
    streams: list[StreamReport] = field(default_factory=list)
    prefiltered: int = 0
    classified: dict[str, int] = field(default_factory=dict)
    proposals_opened: list[str] = field(default_factory=list)
    proposals_previewed: list[str] = field(default_factory=list)  # a dry run's "would open"
    proposals_updated: list[str] = field(default_factory=list)
    proposal_lines: dict[str, str] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)  # refusals by kind of check
    publish_attempts: int = 0
    publish_failed: list[tuple[str, str]] = field(default_factory=list)  # (thread, cause)
    embeddings_computed: int = 0  # docs chunks sent to the embedding model
    embeddings_cached: int = 0  # docs chunks whose vector came from the embedding cache
    answers_stored: int = 0  # new model answers kept in the response cache
    usage: dict[str, StageUsage] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stopped_early: str | None = None
    fatal: str | None = None  # something only a maintainer can fix; the run exits non-zero

    @property
    def messages_read(self) -> int:
        return sum(stream.messages_read for stream in self.streams)

    @property
    def threads_classified(self) -> int:
        return sum(self.classified.values())

    @property
    def nothing_published(self) -> bool:
        """Proposals were handed to the publisher and not one of them got through."""
        return bool(self.publish_failed) and len(self.publish_failed) >= self.publish_attempts
