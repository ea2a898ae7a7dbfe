"""What the forum sources (GitHub Discussions, Discourse) share: message ids made from times,
the update-time cursor, reading touched topics so that a stop leaves a consistent prefix, and
one HTTP loop that waits out rate limits.

Ids. A watermark is one integer that must grow with time across everything a forum holds, and
a forum's own ids do not: GitHub numbers discussions and their comments in separate sequences,
and a Discourse post id says nothing about when an answer was chosen. So a forum message's id
is its time in whole seconds times ID_SCALE plus the platform's own id modulo ID_SCALE
(`forum_id`): ids grow with time, two messages of one second are told apart (and ordered) by
their platform ids, a watermark reads back as a time (`time_of`), and ids stay below 2**53 (exact
in any JSON reader) until the year 2255. `start: <number>` is such an id, as `pythia ingest
--json` and the dashboard show watermarks; `start: <date>` needs no request at all.

An answer takes the time it was chosen, when the platform says and that is later (`answer_id`):
an answer chosen after its conversation was judged is a new message, so the conversation is
judged again with the rest as context. Unmarked again, the reply returns to its old id, which
its recorded outcome covers.

Cursor. `fetch(after)` lists topics by latest activity, newest first, and stops at the first
topic whose activity is older than `time_of(after)` less SCAN_MARGIN. Each touched topic is read
whole: its messages above `after` are new, those at or below it are context (the pipeline counts
ids at or below the watermark as recorded), and every post replies to the opening or to the
post it answers (`link_replies`), so a topic is one thread however long its silences.

Order. No new message of a topic is older than its floor, `max(after + 1, first_id_at(created))`.
Topics are read in floor order and their messages yielded, in id order, once no unread topic can
hold an older one. A stop (a rate limit that outlasts the waits, or `max_topics` per run) thus
leaves a prefix the watermark may pass, and the rest is read next run. Topics sharing the lowest
floor (every touched topic created before the watermark) are read in one run whatever the cap:
stopping among them would leave nothing the watermark could pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from typing import Any

import requests

from ..models import Message
from . import StreamInterrupted, fixed_start

ID_SCALE = 1_000_000
SCAN_MARGIN = timedelta(minutes=5)
MAX_WAITS = 5
MAX_WAIT_SECONDS = 120.0
TIMEOUT_SECONDS = 30.0


def forum_id(moment: datetime, platform_id: int) -> int:
    """A forum message's id: its second, then its platform id (see the module docstring)."""
    return first_id_at(moment) + platform_id % ID_SCALE


def first_id_at(moment: datetime) -> int:
    """The smallest id a message of `moment`'s second can have."""
    return int(moment.timestamp()) * ID_SCALE


def time_of(message_id: int) -> datetime:
    """The second a forum id (or a watermark) stands for."""
    return datetime.fromtimestamp(message_id // ID_SCALE, tz=timezone.utc)


def answer_id(created: datetime, chosen: datetime | None, platform_id: int) -> int:
    """The id of a reply marked as the answer: when it was chosen, if that is later."""
    return forum_id(max(created, chosen) if chosen is not None else created, platform_id)


def parse_time(value: object) -> datetime | None:
    """An ISO-8601 timestamp from an API ('2026-03-02T10:14:00Z', '...00.123Z'), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def start_after(start: str | int | date, *, newest: Callable[[], datetime | None]) -> int:
    """The watermark of a first run: 'oldest' is 0, a forum id N is N - 1, a date is the last
    id before that day (UTC), 'newest' the last id of the latest activity (0 on an empty forum)."""
    if (fixed := fixed_start(start)) is not None:
        return fixed
    if isinstance(start, date):
        day = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
        return max(first_id_at(day) - 1, 0)
    latest = newest()
    return first_id_at(latest + timedelta(seconds=1)) - 1 if latest is not None else 0


def scan_cutoff(after: int) -> datetime:
    """Topics whose latest activity is older than this hold nothing above `after`."""
    return time_of(after) - SCAN_MARGIN


@dataclass(frozen=True)
class Topic:
    """A topic the listing found active since the cutoff: its key, and when it began."""

    key: int
    created_at: datetime


def floor(topic: Topic, after: int) -> int:
    """The lowest id a new message of `topic` can have."""
    return max(after + 1, first_id_at(topic.created_at))


def read_topics(
    topics: Iterable[Topic],
    after: int,
    *,
    read: Callable[[Topic], list[Message]],
    max_topics: int,
    stream: str,
) -> Iterator[Message]:
    """The messages of the touched topics, each topic whole, in the order the module docstring
    describes; a StreamInterrupted from `read` names the last new message yielded."""
    unique = {topic.key: topic for topic in topics}
    ordered = sorted(unique.values(), key=lambda topic: (floor(topic, after), topic.key))
    held: list[Message] = []
    last: int | None = None
    for count, topic in enumerate(ordered):
        below = floor(topic, after)
        ready = sorted((m for m in held if m.id < below), key=lambda m: m.id)
        held = [m for m in held if m.id >= below]
        for message in ready:
            if message.id > after:
                last = message.id
            yield message
        if count >= max_topics and below > after + 1:
            return  # the rest is read next run, from the watermark this prefix allows
        try:
            held.extend(read(topic))
        except StreamInterrupted as stopped:
            raise StreamInterrupted(stream, last_id=last, reason=stopped.reason) from stopped
    yield from sorted(held, key=lambda m: m.id)


def link_replies(messages: Sequence[Message], parents: Sequence[int | None]) -> list[Message]:
    """A topic's kept messages (the opening first), each replying to its parent when that was
    kept and to the opening otherwise, so grouping keeps the topic in one thread."""
    if not messages:
        return []
    kept = {message.id for message in messages}
    opening = messages[0].id
    linked = [replace(messages[0], reply_to=None)]
    for message, parent in zip(messages[1:], parents[1:], strict=True):
        linked.append(replace(message, reply_to=parent if parent in kept else opening))
    return linked


class Http:
    """One requests session for a stream: rate limits waited out (at most MAX_WAITS waits of at
    most MAX_WAIT_SECONDS each), 5xx answers retried with backoff (1, 2, 4, ... s), and a
    network failure, or limits that outlast the waits, raised as StreamInterrupted.

    `rate_limit(response)` says how long a platform asks to wait (None when the response is
    not a rate limit; 0.0 when it is one without a hint, which gets the backoff too).
    """

    def __init__(
        self,
        stream: str,
        *,
        platform: str,
        rate_limit: Callable[[requests.Response], float | None],
        session_factory: Callable[[], requests.Session] = requests.Session,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.stream = stream
        self.platform = platform
        self._rate_limit = rate_limit
        self._factory = session_factory
        self._session: requests.Session | None = None
        self._sleep = sleep

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        if self._session is None:
            self._session = self._factory()
        for attempt in range(MAX_WAITS + 1):
            try:
                response = self._session.request(method, url, timeout=TIMEOUT_SECONDS, **kwargs)
            except requests.RequestException as error:
                raise StreamInterrupted(
                    self.stream,
                    last_id=None,
                    reason=f"cannot reach {self.platform} ({type(error).__name__}); "
                    "check the site URL and the network",
                ) from error
            wait = self._rate_limit(response)
            if wait is None and response.status_code < 500:
                return response
            seconds = wait if wait else float(2**attempt)
            if attempt == MAX_WAITS or seconds > MAX_WAIT_SECONDS:
                break
            self._sleep(seconds)
        raise StreamInterrupted(
            self.stream,
            last_id=None,
            reason=f"{self.platform} kept answering with rate limits or server errors; "
            "the rest is read next run",
        )
