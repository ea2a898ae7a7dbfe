"""Reading one Slack channel and its threads with the official slack_sdk, under tight limits.

Requests (bot token, https://docs.slack.dev/reference/methods):
- `auth.test` once, for the workspace URL of permalinks (it needs no scope);
- `conversations.history` over time windows after the watermark (`oldest`, `latest`,
  `inclusive`, `limit`, paged with `cursor` inside a window: Slack returns the newest messages
  of a range first);
- `conversations.replies` for each thread with replies past the watermark (`ts` is the thread's
  parent, `oldest` the watermark), paged with `cursor`.

Ids and watermarks: a message's `ts` ("1712345678.123456", seconds and microseconds) is its id
in a channel; Pythia's integer id is the same digits without the dot, the microseconds since
1970 (1712345678123456), which is also what Slack's permalinks show (`/p1712345678123456`), so
`start` and `--since` take the number from a message link. A reply posted later has a later
`ts`, so one watermark covers the channel and its threads. The numbers stay below 2**53, so
even JavaScript reads them exactly.

Completeness: Slack pages history backwards, so a channel is walked forwards in time windows
(one day at first, halved when a window needs several pages, grown when it is sparse) and each
window is yielded, with the thread replies that fall in it, only once it was read whole; a run
stopped by rate limits keeps the windows it finished. Replies later than the window being read
wait for their window. Messages of the last minute are left for the next run.

Threads: replies are not in `conversations.history`; a thread's replies are read when its parent
is read, and parents up to `thread_lookback_days` before the watermark are checked for
`latest_reply` past it, so a late answer in an older thread is found. An older thread's late
replies are read without their parent (which the watermark already passed).

What is read: messages people write (no subtype, `thread_broadcast`, `file_share`,
`me_message`) and bots' messages (`bot_message` or a `bot_id`, flagged so
`prefilter.ignore_bots` decides). Joins, leaves, topic and purpose changes, pins, deleted
parents (`tombstone`) and other events are skipped, as are messages without text (a file with no
comment). Edited messages arrive with their current text. Mentions of people (`<@U…>`) become
the mentioned person's pseudonym; links and channel names become plain text.

Rate limits: `conversations.history` and `conversations.replies` are Tier 3 (50+ requests a
minute) for internal apps, the kind a community creates for its own workspace; apps distributed
outside the Slack Marketplace get 1 request a minute and 15 messages a page since 2025-05-29
(https://docs.slack.dev/apis/web-api/rate-limits). A 429 is waited out for its `Retry-After`
seconds while this run's waits stay within `max_rate_limit_wait_seconds`; past that the stream
stops with the windows it finished. slack_sdk's own retry handlers are switched off so every
wait is this module's, injectable and counted.
"""

from __future__ import annotations

import heapq
import html
import itertools
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

from ..config import Secrets, SlackStream
from ..models import Message
from . import SourceError, StreamInterrupted, fixed_start, pseudonym

MICROS = 1_000_000
HOUR = 3600 * MICROS
DAY = 24 * HOUR
FIRST_WINDOW = DAY
SMALLEST_WINDOW = HOUR
SETTLING = 60 * MICROS
MAX_RETRIES = 5
TALK_SUBTYPES = {None, "thread_broadcast", "file_share", "me_message", "bot_message"}
TOKEN_ERRORS = {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"}
SERVER_ERRORS = {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}

_ANGLED = re.compile(r"<([^<>]+)>")


@dataclass(frozen=True)
class SlackAnswer:
    """One Web API answer: HTTP status, headers (names in lower case) and the JSON body."""

    status: int
    headers: Mapping[str, str]
    body: Mapping[str, Any]


class SlackWeb(Protocol):
    """Web API calls; network failures raise OSError."""

    def call(self, method: str, params: Mapping[str, str | int]) -> SlackAnswer: ...


class SdkSlack:
    """`SlackWeb` over slack_sdk's WebClient (the token goes in the Authorization header)."""

    def __init__(self, token: str, *, base_url: str | None = None) -> None:
        from slack_sdk import WebClient

        options: dict[str, Any] = {"base_url": base_url} if base_url else {}
        # slack_sdk logs every answer, message texts included, at debug level: keep it quiet
        # so `--log-level debug` never puts a chat into a public Actions log.
        quiet = logging.getLogger("pythia.sources.slack.sdk")
        quiet.setLevel(logging.WARNING)
        self._client = WebClient(
            token=token, timeout=30, retry_handlers=[], logger=quiet, **options
        )

    def call(self, method: str, params: Mapping[str, str | int]) -> SlackAnswer:
        from slack_sdk.errors import SlackApiError

        try:
            response = self._client.api_call(method, http_verb="GET", params=dict(params))
        except SlackApiError as error:  # any answer without "ok": true, 429s included
            response = error.response
        data = response.data if isinstance(response.data, dict) else {}
        headers = {str(name).lower(): str(value) for name, value in response.headers.items()}
        return SlackAnswer(int(response.status_code), headers, data)


def ts_to_id(ts: str) -> int:
    """'1712345678.123456' -> 1712345678123456: the microseconds since 1970."""
    seconds, _, fraction = str(ts).partition(".")
    return int(seconds) * MICROS + int((fraction + "000000")[:6])


def id_to_ts(message_id: int) -> str:
    """1712345678123456 -> '1712345678.123456'."""
    return f"{message_id // MICROS}.{message_id % MICROS:06d}"


def utcnow() -> datetime:
    """The time a run reads up to (tests replace it to replay recorded answers)."""
    return datetime.now(timezone.utc)


class _Cut(Exception):
    """A request gave up (rate limits past the budget, 5xx, the network): the read stops."""


class SlackSource:
    """One configured Slack channel as a `ChatSource`."""

    def __init__(
        self,
        config: SlackStream,
        *,
        web_factory: Callable[[], SlackWeb],
        salt: str,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.stream = config.id
        self.config = config
        self._factory = web_factory
        self._web: SlackWeb | None = None
        self._salt = salt
        self._sleep = sleep
        self._clock = clock or utcnow
        self._waited = 0.0
        self._workspace = ""
        self._order = itertools.count()  # breaks ties in the reply queue
        # Slack may serve fewer messages a page than asked (15 for Marketplace-less public
        # apps): the size of a page that said "has_more" is the real one.
        self._full_page = config.page_size

    @property
    def web(self) -> SlackWeb:
        if self._web is None:
            self._web = self._factory()
        return self._web

    def close(self) -> None:
        self._web = None

    def _now(self) -> int:
        moment = self._clock()
        return int(moment.timestamp()) * MICROS + moment.microsecond

    def start_after(self) -> int:
        start = self.config.start
        if (fixed := fixed_start(start)) is not None:
            return fixed
        if start == "newest":
            return self._now()
        assert isinstance(start, date)
        midnight = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
        return int(midnight.timestamp()) * MICROS - 1

    def fetch(self, after: int | None) -> Iterator[Message]:
        start = self.start_after() if after is None else after
        horizon = self._now() - SETTLING
        later: list[tuple[int, int, dict[str, Any]]] = []  # replies whose window is ahead
        seen: set[int] = set()
        last: int | None = None
        try:
            self._workspace = str(self._call("auth.test", {}).get("url", ""))
            if self.config.threads and self.config.thread_lookback_days and start > 0:
                since = max(start - self.config.thread_lookback_days * DAY, 0)
                for parent in self._history(since, start):
                    self._hold_replies(parent, start, later)
            low, width = start, FIRST_WINDOW
            while low < horizon:
                window, high, width = self._window(low, width=width, horizon=horizon)
                for raw in window:
                    self._hold_replies(raw, start, later)
                replies = []
                while later and later[0][0] <= high:
                    replies.append(heapq.heappop(later)[2])
                for raw in sorted([*window, *replies], key=lambda raw: ts_to_id(raw["ts"])):
                    message_id = ts_to_id(raw["ts"])
                    if message_id in seen:
                        continue  # a reply also sent to the channel comes twice
                    seen.add(message_id)
                    message = self.normalise(raw)
                    if message is not None:
                        last = message_id
                        yield message
                low = high
        except _Cut as cut:
            raise StreamInterrupted(self.stream, last_id=last, reason=str(cut)) from None

    def _window(
        self, low: int, *, width: int, horizon: int
    ) -> tuple[list[dict[str, Any]], int, int]:
        """The messages of the next window after `low`, where it ends, and the width to try
        next.

        A window should fit one page: a first page that says there is more is put aside and
        the window narrowed to about three quarters of what that page spanned (at least
        halved, down to an hour, which is then read page by page), so a run stopped by rate
        limits has spent its requests on windows it finished. A window filling less than half
        a page makes the next one twice as wide, an empty one four times, so quiet months cost
        a few requests.
        """
        while True:
            high = min(low + width, horizon)
            body = self._call("conversations.history", self._history_params(low, high))
            served = body.get("messages", [])
            page = [m for m in served if low < ts_to_id(m["ts"]) <= high]
            cursor = (body.get("response_metadata") or {}).get("next_cursor")
            if not (body.get("has_more") and cursor):
                sparse = len(page) * 2 < self._full_page
                return page, high, width * 4 if not page else width * 2 if sparse else width
            self._full_page = max(1, min(self._full_page, len(served)))
            if high - low <= SMALLEST_WINDOW:
                return page + self._history(low, high, cursor=cursor), high, width
            spanned = high - min((ts_to_id(m["ts"]) for m in page), default=low)
            width = max(SMALLEST_WINDOW, min(width // 2, spanned * 3 // 4))

    def _history_params(self, low: int, high: int) -> dict[str, str | int]:
        return {
            "channel": self.config.channel,
            "oldest": id_to_ts(low),
            "latest": id_to_ts(high),
            "inclusive": 1,
            "limit": self.config.page_size,
        }

    def _history(self, low: int, high: int, *, cursor: str = "") -> list[dict[str, Any]]:
        """Every message with `low` < id <= `high` (from `cursor` on, when given)."""
        params = self._history_params(low, high)
        found: list[dict[str, Any]] = []
        while True:
            if cursor:
                params["cursor"] = cursor
            body = self._call("conversations.history", params)
            found += [m for m in body.get("messages", []) if low < ts_to_id(m["ts"]) <= high]
            cursor = (body.get("response_metadata") or {}).get("next_cursor") or ""
            if not body.get("has_more") or not cursor:
                return found

    def _hold_replies(
        self, parent: dict[str, Any], start: int, later: list[tuple[int, int, dict[str, Any]]]
    ) -> None:
        """Queue the replies after `start` of a thread parent (nothing for other messages)."""
        ts = str(parent.get("ts", ""))
        if not self.config.threads or parent.get("thread_ts") != ts:
            return
        if not parent.get("reply_count") or ts_to_id(parent.get("latest_reply") or ts) <= start:
            return
        params: dict[str, str | int] = {
            "channel": self.config.channel,
            "ts": ts,
            "oldest": id_to_ts(start),
            "limit": self.config.page_size,
        }
        while True:
            body = self._call("conversations.replies", params)
            for raw in body.get("messages", []):
                if raw.get("ts") != ts and ts_to_id(raw["ts"]) > start:
                    heapq.heappush(later, (ts_to_id(raw["ts"]), next(self._order), raw))
            cursor = (body.get("response_metadata") or {}).get("next_cursor")
            if not body.get("has_more") or not cursor:
                return
            params = {**params, "cursor": cursor}

    def _call(self, method: str, params: Mapping[str, str | int]) -> Mapping[str, Any]:
        for attempt in range(MAX_RETRIES + 1):
            try:
                answer = self.web.call(method, params)
            except OSError as failure:
                raise _Cut(
                    f"cannot reach Slack ({type(failure).__name__}); the rest is read next run"
                ) from failure
            error = str(answer.body.get("error") or "")
            if answer.status == 200 and answer.body.get("ok"):
                return answer.body
            if answer.status == 429 or error == "ratelimited":
                self._wait(float(answer.headers.get("retry-after") or 60), method)
                continue
            if answer.status >= 500 or error in SERVER_ERRORS:
                if attempt < MAX_RETRIES:
                    self._wait(float(2**attempt), method)
                continue
            raise SourceError(self._refusal(method, answer.body))
        raise _Cut("Slack kept answering 429 or 5xx; the rest is read next run")

    def _wait(self, seconds: float, method: str) -> None:
        budget = self.config.max_rate_limit_wait_seconds
        if self._waited + seconds > budget:
            raise _Cut(
                f"Slack asked to wait {seconds:g} s before the next {method}, past this run's "
                f"max_rate_limit_wait_seconds ({budget}); the rest is read next run"
            )
        self._waited += seconds
        self._sleep(seconds)

    def _refusal(self, method: str, body: Mapping[str, Any]) -> str:
        error = str(body.get("error") or "no reason given")
        where = f"stream '{self.stream}'"
        channel = self.config.channel
        if error == "not_in_channel":
            return (
                f"{where}: the app is not a member of channel {channel} (not_in_channel); "
                "invite it there with /invite @<app name>"
            )
        if error == "channel_not_found":
            return (
                f"{where}: Slack does not know channel {channel} (channel_not_found); check the "
                "id, and for a private channel invite the app and give it groups:history"
            )
        if error == "missing_scope":
            needed = body.get("needed") or "a history"
            return (
                f"{where}: the app lacks the {needed} scope (missing_scope in {method}); add it "
                "under OAuth & Permissions, Bot Token Scopes, and reinstall the app"
            )
        if error in TOKEN_ERRORS:
            return (
                f"{where}: Slack refused SLACK_BOT_TOKEN ({error}); copy the app's Bot User "
                "OAuth Token (xoxb-...) again"
            )
        return f"{where}: Slack answered {error} to {method} for channel {channel}"

    def normalise(self, raw: dict[str, Any]) -> Message | None:
        """The message as Pythia sees it, or None for events and messages without text."""
        subtype = raw.get("subtype")
        if subtype not in TALK_SUBTYPES or raw.get("hidden"):
            return None
        text = self.readable(str(raw.get("text") or ""))
        if not text.strip():
            return None
        ts = str(raw["ts"])
        message_id = ts_to_id(ts)
        thread_ts = raw.get("thread_ts")
        is_reply = bool(thread_ts) and thread_ts != ts
        has_replies = thread_ts == ts and bool(raw.get("reply_count"))
        link = f"{self._workspace}archives/{self.config.channel}/p{ts.replace('.', '')}"
        if is_reply:
            link += f"?thread_ts={thread_ts}&cid={self.config.channel}"
        user = raw.get("user") or (f"bot:{raw['bot_id']}" if raw.get("bot_id") else "unknown")
        seconds, micros = divmod(message_id, MICROS)
        return Message(
            stream=self.stream,
            id=message_id,
            author=pseudonym(self._salt, f"slack:{user}"),
            sent_at=datetime.fromtimestamp(seconds, tz=timezone.utc)
            + timedelta(microseconds=micros),
            text=text,
            thread_key=f"thread:{thread_ts}" if is_reply or has_replies else None,
            reply_to=ts_to_id(str(thread_ts)) if is_reply else None,
            permalink=link if self._workspace else None,
            is_bot=subtype == "bot_message" or bool(raw.get("bot_id")),
        )

    def readable(self, text: str) -> str:
        """Slack's markup as plain text: `<@U1>` as the person's pseudonym, `<#C1|help>` as
        #help, `<!here>` as @here, `<https://x|label>` as "label (https://x)", entities decoded
        (https://docs.slack.dev/messaging/formatting-message-text)."""

        def plain(match: re.Match[str]) -> str:
            target, _, label = match.group(1).partition("|")
            if target.startswith("@"):
                return "@" + pseudonym(self._salt, f"slack:{target[1:]}")
            if target.startswith("#"):
                return "#" + (label or target[1:])
            if target.startswith("!"):
                return label or "@" + target[1:].split("^")[0]
            if label and label != target and not target.startswith("mailto:"):
                return f"{label} ({target})"
            return label or target

        return html.unescape(_ANGLED.sub(plain, text))


def make_web(config: SlackStream, *, secrets: Secrets) -> SlackWeb:
    if secrets.slack_bot_token is None:
        raise SourceError(
            f"stream '{config.id}' needs the SLACK_BOT_TOKEN secret (the app's xoxb- token)"
        )
    return SdkSlack(secrets.slack_bot_token.get_secret_value())
