"""Frozen domain types that travel between the pipeline's stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


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


@dataclass(frozen=True)
class Thread:
    """A conversation: the messages to judge, plus a few earlier ones shown only as context."""

    stream: str
    messages: tuple[Message, ...]
    context: tuple[Message, ...] = ()

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
    def message_ids(self) -> tuple[int, ...]:
        return tuple(message.id for message in self.messages)


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
    publish_attempts: int = 0
    publish_failed: list[tuple[str, str]] = field(default_factory=list)  # (thread, cause)
    embeddings_computed: int = 0  # docs chunks sent to the embedding model
    embeddings_cached: int = 0  # docs chunks whose vector came from the embedding cache
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
