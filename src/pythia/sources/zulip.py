"""Reading one Zulip channel (optionally some of its topics) with the zulip client.

Messages come from `GET /api/v1/messages` (https://zulip.com/api/get-messages) with
`anchor=<watermark>`, `include_anchor=false`, `num_before=0`, `num_after=batch_size` and
`apply_markdown=false` (so `content` is the raw Markdown people typed), page after page until
the server says `found_newest`. Several configured topics are read as one narrow each (narrow
terms are ANDed, so one request cannot ask for two topics) and merged by message id.

The narrow's channel operator is "channel" on servers at feature level 250 (Zulip 9.0) or
newer and "stream" before (https://zulip.com/api/construct-narrow), read from the
`zulip_feature_level` that `zulip.Client` fetches from `/api/v1/server_settings` when it is
constructed.

First runs: 'oldest' reads from the start, a message id N reads from N, 'newest' asks for the
newest message of the narrow and starts after it. A date is resolved to a message id by a
binary search over message ids (`anchor=<id>`, `num_after=1`, `include_anchor=true` returns the
first message at or after an id, and ids grow with time); `anchor=date` is not used because
only the newest servers understand it.

Rate limits: the zulip client (0.9) returns a 429 answer as its JSON body,
`{"result": "error", "code": "RATE_LIMIT_HIT", "retry-after": <seconds>}`, without retrying
and without exposing the `Retry-After` header, so this module sleeps for `retry-after` (with an
injectable `sleep`) and asks again, at most `MAX_RATE_LIMIT_WAITS` times per request and never
longer than `MAX_RATE_LIMIT_SECONDS` at once; past that `StreamInterrupted` is raised after
what was read. The client's own retry loop on 5xx answers (`time.sleep(1)`, ten times) is
switched off with `retry_on_errors=False` so runs are deterministic.

Bots: the message payload does not say whether the sender is a bot; Zulip names every bot
account `<name>-bot@<realm host>`, so a sender email containing "-bot@" is flagged as a bot.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime, timezone
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import zulip

from ..config import Secrets, ZulipStream
from ..models import Message
from . import SourceError, StreamInterrupted, fixed_start, is_trusted, pseudonym

CHANNEL_OPERATOR_FEATURE_LEVEL = 250
MAX_RATE_LIMIT_WAITS = 5
MAX_RATE_LIMIT_SECONDS = 120.0


class ZulipClientLike(Protocol):
    """The slice of `zulip.Client` this module uses."""

    feature_level: int

    def get_messages(self, message_filters: dict[str, Any]) -> dict[str, Any]: ...


def hash_encode(text: str) -> str:
    """Zulip's URL-hash encoding of a channel or topic name.

    Same as the server's `zerver.lib.url_encoding.hash_util_encode`: percent-encode everything
    (even '/'), then write '.' as '.2E' and '%' as '.'.
    """
    return quote(text, safe="").replace(".", "%2E").replace("%", ".")


def narrow_url(
    site: str, *, channel_id: int, channel: str, topic: str, message_id: int, operator: str
) -> str:
    """The web app's link to one message in its topic."""
    encoded_channel = f"{channel_id}-{hash_encode(channel.replace(' ', '-'))}"
    return (
        f"{site.rstrip('/')}/#narrow/{operator}/{encoded_channel}"
        f"/topic/{hash_encode(topic)}/near/{message_id}"
    )


def is_bot_email(email: str) -> bool:
    return "-bot@" in email.lower()


def _server_error(answer: dict[str, Any]) -> bool:
    """A 5xx: non-JSON ones come back as `http-error` from the client (zulip/__init__.py,
    do_api_query); JSON ones as an ordinary error whose message says so."""
    if answer.get("result") == "http-error":
        return int(answer.get("status_code") or 0) >= 500
    return "internal server error" in str(answer.get("msg", "")).lower()


class ZulipSource:
    """One configured Zulip channel as a `Source`."""

    def __init__(
        self,
        config: ZulipStream,
        *,
        client_factory: Callable[[], ZulipClientLike],
        salt: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.stream = config.id
        self.config = config
        self._factory = client_factory
        self._client: ZulipClientLike | None = None
        self._salt = salt
        self._sleep = sleep
        self._host = urlsplit(self.site).netloc or self.site

    @property
    def site(self) -> str:
        site = self.config.site.rstrip("/")
        return site if site.startswith("http") else f"https://{site}"

    @property
    def client(self) -> ZulipClientLike:
        if self._client is None:
            self._client = self._factory()
        return self._client

    @property
    def operator(self) -> str:
        level = int(getattr(self.client, "feature_level", 0) or 0)
        return "channel" if level >= CHANNEL_OPERATOR_FEATURE_LEVEL else "stream"

    def close(self) -> None:
        self._client = None

    def narrows(self) -> list[list[dict[str, str]]]:
        channel = {"operator": self.operator, "operand": self.config.channel}
        if not self.config.topics:
            return [[channel]]
        return [[channel, {"operator": "topic", "operand": topic}] for topic in self.config.topics]

    def start_after(self) -> int:
        start = self.config.start
        if (fixed := fixed_start(start)) is not None:
            return fixed
        if start == "newest":
            newest = [self._edge(narrow, "newest") for narrow in self.narrows()]
            return max((message["id"] for message in newest if message), default=0)
        assert isinstance(start, date)
        return min(self._last_before(narrow, start) for narrow in self.narrows())

    def fetch(self, after: int | None) -> Iterator[Message]:
        start = self.start_after() if after is None else after
        pages = [self._read(narrow, start) for narrow in self.narrows()]
        last = None
        for raw in heapq.merge(*pages, key=lambda raw: int(raw["id"])):
            if raw["id"] == last:
                continue  # a message in two configured topics cannot happen, but be safe
            last = raw["id"]
            yield self.normalise(raw)

    def _read(self, narrow: list[dict[str, str]], after: int) -> Iterator[dict[str, Any]]:
        anchor = after
        while True:
            answer = self._get(
                {
                    "anchor": anchor,
                    "include_anchor": False,
                    "num_before": 0,
                    "num_after": self.config.batch_size,
                    "apply_markdown": False,
                    "narrow": narrow,
                },
                last_id=anchor if anchor > after else None,
            )
            messages: list[dict[str, Any]] = answer.get("messages", [])
            # Servers before `include_anchor` (Zulip 6.0) always return the anchor itself.
            yield from (raw for raw in messages if int(raw["id"]) > after)
            if answer.get("found_newest", True) or not messages:
                return
            anchor = int(messages[-1]["id"])

    def _edge(self, narrow: list[dict[str, str]], anchor: str) -> dict[str, Any] | None:
        answer = self._get(
            {
                "anchor": anchor,
                "num_before": 1,
                "num_after": 0,
                "apply_markdown": False,
                "narrow": narrow,
            },
            last_id=None,
        )
        messages: list[dict[str, Any]] = answer.get("messages", [])
        return messages[-1] if messages else None

    def _first_at_or_after(
        self, narrow: list[dict[str, str]], anchor: int
    ) -> dict[str, Any] | None:
        answer = self._get(
            {
                "anchor": anchor,
                "include_anchor": True,
                "num_before": 0,
                "num_after": 1,
                "apply_markdown": False,
                "narrow": narrow,
            },
            last_id=None,
        )
        messages: list[dict[str, Any]] = answer.get("messages", [])
        return messages[0] if messages else None

    def _last_before(self, narrow: list[dict[str, str]], day: date) -> int:
        """The id of the last message of the narrow sent before `day` (UTC), or 0."""
        cutoff = datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()
        newest = self._edge(narrow, "newest")
        if newest is None or newest["timestamp"] < cutoff:
            return int(newest["id"]) if newest else 0
        low, high = 0, int(newest["id"])  # invariant: first message at or after `high` is >= cutoff
        while high - low > 1:
            middle = (low + high) // 2
            found = self._first_at_or_after(narrow, middle)
            if found is not None and found["timestamp"] < cutoff:
                low = int(found["id"])
            else:
                high = middle
        return low

    def _get(self, request: dict[str, Any], *, last_id: int | None) -> dict[str, Any]:
        for attempt in range(MAX_RATE_LIMIT_WAITS + 1):
            try:
                answer = self.client.get_messages(request)
            except (OSError, zulip.ZulipError) as error:
                # Timeouts and resets (requests' errors are OSErrors) keep what was read.
                raise StreamInterrupted(
                    self.stream,
                    last_id=last_id,
                    reason=f"cannot reach {self.site} ({type(error).__name__}); "
                    "check the site URL and the network",
                ) from error
            if answer.get("result") == "success":
                return answer
            server_error = _server_error(answer)
            if not server_error and answer.get("code") != "RATE_LIMIT_HIT":
                raise SourceError(
                    f"stream '{self.stream}': Zulip refused to list messages of "
                    f"'{self.config.channel}' ({answer.get('msg', 'no reason given')}); "
                    "check the channel name, the bot's subscription and ZULIP_API_KEY"
                )
            # A 429 says how long to wait; a 5xx gets exponential backoff (1, 2, 4, ... s).
            seconds = (
                float(2**attempt) if server_error else float(answer.get("retry-after", 1.0))
            )
            if attempt == MAX_RATE_LIMIT_WAITS or seconds > MAX_RATE_LIMIT_SECONDS:
                break
            self._sleep(seconds)
        raise StreamInterrupted(
            self.stream,
            last_id=last_id,
            reason="Zulip kept answering 429 or 5xx; the rest is read next run",
        )

    def normalise(self, raw: dict[str, Any]) -> Message:
        topic = str(raw.get("subject", raw.get("topic", "")))
        channel = raw.get("display_recipient")
        return Message(
            stream=self.stream,
            id=int(raw["id"]),
            author=pseudonym(self._salt, f"zulip:{self._host}:{raw['sender_id']}"),
            sent_at=datetime.fromtimestamp(int(raw["timestamp"]), tz=timezone.utc),
            text=str(raw.get("content", "")),
            thread_key=f"topic:{topic}",
            permalink=narrow_url(
                self.site,
                channel_id=int(raw.get("stream_id", 0)),
                channel=channel if isinstance(channel, str) else self.config.channel,
                topic=topic,
                message_id=int(raw["id"]),
                operator=self.operator,
            ),
            is_bot=is_bot_email(str(raw.get("sender_email", ""))),
            trusted=is_trusted(
                self.config.trusted_authors, raw.get("sender_id"), raw.get("sender_email")
            ),
        )


def make_client(config: ZulipStream, *, secrets: Secrets) -> ZulipClientLike:
    """A `zulip.Client` for the stream; constructing it calls GET /api/v1/server_settings."""
    if secrets.zulip_api_key is None:
        raise SourceError(
            f"stream '{config.id}' needs the ZULIP_API_KEY secret (the bot's API key)"
        )
    try:
        client: ZulipClientLike = zulip.Client(
            site=config.site,
            email=config.email,
            api_key=secrets.zulip_api_key.get_secret_value(),
            retry_on_errors=False,
            client="Pythia",
        )
    except (OSError, AssertionError, zulip.ZulipError) as error:
        # The client asserts on a server_settings answer without a version (e.g. a non-Zulip URL).
        raise SourceError(
            f"stream '{config.id}': {config.site} did not answer like a Zulip server "
            f"({type(error).__name__}); check the site URL"
        ) from error
    return client
