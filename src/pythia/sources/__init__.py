"""Chat sources: the author pseudonym, the errors sources raise, and reading a stream.

How the pipeline reads a stream (the first-run design):

    source = app.sourcing.build_source(stream_config, secrets=secrets, salt=salt)
    try:
        batch = read_stream(source, watermark)   # watermark: int | None from the stream's state
    finally:
        source.close()

`read_stream` resolves a first run (`watermark is None`) through `source.start_after()`, which
turns the stream's `start` setting into a watermark: 'oldest' is 0, a message id N is N - 1 (so
N itself is read), a date is the id of the last message sent before that day (UTC), and
'newest' is the latest id in the stream, so nothing old is read but the watermark still moves to
"now". `batch.after` is that resolved starting point: the pipeline passes it as the `after` of
`threads.next_watermark`, so even a batch without messages saves a watermark.

A stream that has to stop early (a Telegram flood wait longer than allowed) raises
`StreamInterrupted` from `fetch` after yielding what it read; `read_stream` keeps those
messages and reports the reason in `batch.interrupted`. Any other `SourceError` means the
stream could not be read this run.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from functools import lru_cache

from ..models import Message
from ..ports import ChatSource


class SourceError(Exception):
    """A stream could not be read; the message is one sentence saying what to do."""


class StreamInterrupted(SourceError):
    """A stream stopped before its end this run; everything yielded before it is good."""

    def __init__(self, stream: str, *, last_id: int | None, reason: str) -> None:
        where = f"after message {last_id}" if last_id is not None else "before reading anything"
        super().__init__(f"stream '{stream}' stopped {where}: {reason}")
        self.stream = stream
        self.last_id = last_id
        self.reason = reason


@dataclass(frozen=True)
class Batch:
    """What one run read from one stream."""

    stream: str
    after: int
    messages: tuple[Message, ...]
    interrupted: str | None = None


class UnreadableSource:
    """A stream that could not even be set up (a missing secret, a malformed session): reading
    it fails with the reason, so it fails alone and the other streams are read."""

    def __init__(self, stream: str, reason: str) -> None:
        self.stream = stream
        self.reason = reason

    def start_after(self) -> int:
        raise SourceError(self.reason)

    def fetch(self, after: int | None) -> Iterator[Message]:
        raise SourceError(self.reason)

    def close(self) -> None:
        pass


@lru_cache(maxsize=65536)  # a chat has few authors and many messages; memory only
def pseudonym(salt: str, raw_author_id: str | int) -> str:
    """A stable, salted, non-reversible author name like 'user-3fa2b9c1'.

    Callers namespace the raw id by network ("telegram:123", "zulip:45") so that the same
    person gets the same pseudonym from a Telegram export and from live Telegram reading.
    """
    digest = hmac.new(salt.encode(), str(raw_author_id).encode(), hashlib.sha256).hexdigest()
    return f"user-{digest[:8]}"


def is_trusted(trusted_authors: Collection[str], *identities: str | int | None) -> bool:
    """Whether any of an author's identities (a user id, a handle, an email) is one of the
    stream's `trusted_authors`: case-insensitive, a leading '@' ignored on both sides."""
    if not trusted_authors:
        return False
    wanted = {_identity(author) for author in trusted_authors}
    return any(_identity(found) in wanted for found in identities if found not in (None, ""))


def _identity(value: str | int | None) -> str:
    return str(value).strip().lstrip("@").casefold()


def fixed_start(start: str | int | object) -> int | None:
    """The watermark a `start` setting gives without asking the chat: 'oldest' is 0, message
    id N is N - 1 (so N itself is read); None for 'newest' and dates, which a source resolves."""
    if start == "oldest":
        return 0
    if isinstance(start, int):
        return max(start - 1, 0)
    return None


def read_stream(source: ChatSource, watermark: int | None) -> Batch:
    """Read everything after `watermark` (or from the configured start), oldest first."""
    after = source.start_after() if watermark is None else watermark
    messages: list[Message] = []
    try:
        for message in source.fetch(after):
            messages.append(message)
    except StreamInterrupted as stopped:
        return Batch(source.stream, after, tuple(messages), interrupted=str(stopped))
    return Batch(source.stream, after, tuple(messages))
