"""Reading one Discord channel, with its public threads or a forum's posts, over the REST API.

Requests (https://discord.com/developers/docs/reference, API v10, bot token):
- `GET /channels/{id}` once: the channel's type and its guild (for permalinks and threads);
- `GET /guilds/{guild}/threads/active` and `GET /channels/{id}/threads/archived/public`
  (newest archive first, paged with `before=<archive_timestamp>` until a thread was archived
  before the watermark: a thread that gets a message is unarchived, so older ones have nothing
  new); private threads are never read;
- `GET /channels/{id}/messages?after=<id>&limit=<batch_size>` for the channel (a forum has no
  messages of its own) and for each thread whose `last_message_id` is past the watermark, page
  after page, oldest first (`after` is the newest id of the page before).

Ids and watermarks: message ids are snowflakes, 64-bit integers whose top 42 bits are the
milliseconds since 2015-01-01 (https://discord.com/developers/docs/reference#snowflakes). They
grow with time across every channel and thread of Discord, so one watermark covers a channel and
its threads, and `start` needs no request: 'newest' is the snowflake of now, a date the snowflake
of that midnight (UTC) minus one. Snowflakes fit a signed 64-bit integer (SQLite) until 2084;
JSON keeps them exactly in Python, though a JavaScript reader would round them past 2**53.

Completeness: what `fetch` yields is complete up to the highest id it yields, so the watermark
never skips a message: everything is read first, and a run cut short (rate limits past
`max_rate_limit_wait_seconds`, the network) yields only what lies below the first place the
read stopped, in any channel or thread. Messages sent during the last minute are left for the
next run, as a message sent to the channel while a thread is read must not be passed over.

Rate limits (https://discord.com/developers/docs/topics/rate-limits): a 429 answer is waited
out for the `retry_after` seconds of its body (per route or `global`), and after an answer with
`X-RateLimit-Remaining: 0` the next request waits `X-RateLimit-Reset-After`; the waits count
against `max_rate_limit_wait_seconds`. 5xx answers are retried with backoff.

Content: without the privileged Message Content intent a bot gets every message with empty
`content`, `embeds` and `attachments` (except those that mention it). When most people's
messages of a run arrive that way, the stream fails with one line saying how to turn the intent
on, and its watermark stays where it was. Other messages without text (a picture, a sticker)
are skipped, like system messages (joins, pins, thread notices); bots' and webhooks' messages
are flagged so `prefilter.ignore_bots` decides. Mentions of people (`<@id>`) become the
mentioned person's pseudonym.

Why plain HTTP through requests (already installed with PyGithub and zulip) rather than
discord.py or hikari: those libraries are built around the asyncio gateway connection and
retry rate limits on their own timers; a scheduled, read-only history pull needs four GET
routes, and doing them here keeps the wire format visible to recorded tests, the waits
injectable and counted, and the run synchronous like every other source.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

import requests

from ..config import DiscordStream, Secrets
from ..models import Message
from . import SourceError, StreamInterrupted, fixed_start, pseudonym

API = "https://discord.com/api/v10"
USER_AGENT = "DiscordBot (https://github.com/OWNER/pythia, 0.1)"
DISCORD_EPOCH_MS = 1_420_070_400_000
MAX_RETRIES = 5
SETTLING = timedelta(minutes=1)

# Channel types (https://discord.com/developers/docs/resources/channel#channel-object-channel-types)
TEXT, ANNOUNCEMENT, FORUM, MEDIA = 0, 5, 15, 16
ANNOUNCEMENT_THREAD, PUBLIC_THREAD, PRIVATE_THREAD = 10, 11, 12
WITH_THREADS = {TEXT, ANNOUNCEMENT, FORUM, MEDIA}
THREADS = {ANNOUNCEMENT_THREAD, PUBLIC_THREAD, PRIVATE_THREAD}
READABLE = WITH_THREADS | THREADS
POSTS_ONLY = {FORUM, MEDIA}
# Message types people (and apps answering them) write: DEFAULT, REPLY, and command replies.
TALK_TYPES = {0, 19, 20, 23}
REPLY = 19
HAS_THREAD = 1 << 5
FORWARD = 1  # message_reference.type of a forwarded message

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_CUSTOM_EMOJI = re.compile(r"<a?(:\w+:)\d+>")


@dataclass(frozen=True)
class DiscordAnswer:
    """One HTTP answer: status, headers (names in lower case) and the parsed JSON body."""

    status: int
    headers: Mapping[str, str]
    body: Any


class DiscordHTTP(Protocol):
    """GET requests against the API; network failures raise OSError."""

    def get(self, path: str, params: Mapping[str, str | int]) -> DiscordAnswer: ...


class RequestsDiscord:
    """`DiscordHTTP` over a requests session with the bot token."""

    def __init__(self, token: str, *, base_url: str = API, timeout: float = 30.0) -> None:
        self._session = requests.Session()
        self._session.headers.update({"Authorization": f"Bot {token}", "User-Agent": USER_AGENT})
        self._base = base_url.rstrip("/")
        self._timeout = timeout

    def get(self, path: str, params: Mapping[str, str | int]) -> DiscordAnswer:
        response = self._session.get(self._base + path, params=dict(params), timeout=self._timeout)
        try:
            body = response.json()
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in response.headers.items()}
        return DiscordAnswer(response.status_code, headers, body)


def snowflake_at(moment: datetime) -> int:
    """The smallest snowflake of a message sent at `moment`."""
    milliseconds = int(moment.timestamp() * 1000) - DISCORD_EPOCH_MS
    return max(milliseconds, 0) << 22


def snowflake_time(snowflake: int) -> datetime:
    return datetime.fromtimestamp(((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000, tz=timezone.utc)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def utcnow() -> datetime:
    """The time a run reads up to (tests replace it to replay recorded answers)."""
    return datetime.now(timezone.utc)


class _Cut(Exception):
    """A request gave up (rate limits past the budget, 5xx, the network): the read stops."""


@dataclass
class _Channel:
    """A channel or thread to read, and how far its messages are known to be complete."""

    id: int
    thread: int | None  # the thread's id when this is a thread
    read_to: int  # every message of it with an id at or below this has been read


class DiscordSource:
    """One configured Discord channel as a `ChatSource`."""

    def __init__(
        self,
        config: DiscordStream,
        *,
        http_factory: Callable[[], DiscordHTTP],
        salt: str,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.stream = config.id
        self.config = config
        self._factory = http_factory
        self._http: DiscordHTTP | None = None
        self._salt = salt
        self._sleep = sleep
        self._clock = clock or utcnow
        self._waited = 0.0
        self._pause = 0.0

    @property
    def http(self) -> DiscordHTTP:
        if self._http is None:
            self._http = self._factory()
        return self._http

    def close(self) -> None:
        self._http = None

    def start_after(self) -> int:
        start = self.config.start
        if (fixed := fixed_start(start)) is not None:
            return fixed
        if start == "newest":
            return snowflake_at(self._clock()) - 1
        assert isinstance(start, date)
        return snowflake_at(datetime(start.year, start.month, start.day, tzinfo=timezone.utc)) - 1

    def fetch(self, after: int | None) -> Iterator[Message]:
        start = self.start_after() if after is None else after
        horizon = snowflake_at(self._clock() - SETTLING) - 1
        raws: list[dict[str, Any]] = []
        channel: dict[str, Any] = {}
        pending: list[_Channel] = []
        stopped: str | None = None
        try:
            channel = self._get(f"/channels/{self.config.channel}", {})
            pending = self._channels(channel, start)
            while pending:
                self._read(pending[0], after=start, horizon=horizon, into=raws)
                pending.pop(0)
        except _Cut as cut:
            stopped = str(cut)
        # Complete up to the first place a read stopped; nothing at all if the list of what
        # to read was not complete.
        if stopped is None:
            complete_to = horizon
        else:
            complete_to = min((c.read_to for c in pending), default=start)
        talk = {
            int(raw["id"]): raw
            for raw in raws
            if int(raw.get("type", 0)) in TALK_TYPES and start < int(raw["id"]) <= complete_to
        }
        kept = [talk[message_id] for message_id in sorted(talk)]
        self._check_content(kept)
        guild = str(channel.get("guild_id") or "")
        last = None
        for raw in kept:
            message = self.normalise(raw, guild=guild)
            if message is not None:
                last = message.id
                yield message
        if stopped is not None:
            raise StreamInterrupted(self.stream, last_id=last, reason=stopped)

    def _channels(self, channel: dict[str, Any], start: int) -> list[_Channel]:
        """The channel (unless it is a forum) and its threads with messages past `start`."""
        kind = int(channel.get("type", -1))
        if kind not in READABLE:
            raise SourceError(
                f"stream '{self.stream}': channel {self.config.channel} is not a text, "
                "announcement or forum channel (nor a thread); use the id of one of those"
            )
        own = int(channel["id"])
        found = (
            [] if kind in POSTS_ONLY else [_Channel(own, own if kind in THREADS else None, start)]
        )
        if kind in WITH_THREADS and (self.config.threads or kind in POSTS_ONLY):
            for thread in self._threads(str(channel["guild_id"]), start):
                thread_id = int(thread["id"])
                # A thread's messages all come after its own id: unread, it is complete below.
                found.append(_Channel(thread_id, thread_id, max(start, thread_id - 1)))
        return found

    def _threads(self, guild: str, start: int) -> list[dict[str, Any]]:
        channel = str(self.config.channel)
        active = self._get(f"/guilds/{guild}/threads/active", {}).get("threads", [])
        threads = [thread for thread in active if str(thread.get("parent_id")) == channel]
        since = snowflake_time(start) if start else None
        before: str | None = None
        while True:
            params: dict[str, str | int] = {"limit": 100}
            if before is not None:
                params["before"] = before
            page = self._get(f"/channels/{channel}/threads/archived/public", params)
            archived: list[dict[str, Any]] = page.get("threads", [])
            threads += archived
            if not archived or not page.get("has_more"):
                break
            before = str(archived[-1]["thread_metadata"]["archive_timestamp"])
            if since is not None and _parse_time(before) < since:
                break
        unique = {str(thread["id"]): thread for thread in threads}.values()
        return sorted(
            (
                thread
                for thread in unique
                if int(thread.get("type", -1)) in (ANNOUNCEMENT_THREAD, PUBLIC_THREAD)
                and int(thread.get("last_message_id") or 0) > start
            ),
            key=lambda thread: int(thread["id"]),
        )

    def _read(
        self, channel: _Channel, *, after: int, horizon: int, into: list[dict[str, Any]]
    ) -> None:
        """Every message of the channel after `after` and up to past `horizon`, oldest page
        first, into `into`; `channel.read_to` follows the pages read."""
        cursor = after
        while True:
            page = self._get(
                f"/channels/{channel.id}/messages",
                {"after": str(cursor), "limit": self.config.batch_size},
            )
            if not isinstance(page, list):
                raise _Cut(f"Discord answered an unexpected page for channel {channel.id}")
            for raw in page:
                raw["_thread"] = channel.thread
            into.extend(page)
            if not page:
                return
            cursor = max(int(raw["id"]) for raw in page)
            channel.read_to = cursor
            if len(page) < self.config.batch_size or cursor > horizon:
                return

    def _get(self, path: str, params: Mapping[str, str | int]) -> Any:
        for attempt in range(MAX_RETRIES + 1):
            if self._pause:
                pause, self._pause = self._pause, 0.0
                self._wait(pause)
            try:
                answer = self.http.get(path, params)
            except OSError as error:
                # requests' errors are OSErrors: timeouts and resets keep what was read.
                raise _Cut(
                    f"cannot reach Discord ({type(error).__name__}); the rest is read next run"
                ) from error
            if answer.status == 429:
                body = answer.body if isinstance(answer.body, dict) else {}
                seconds = body.get("retry_after") or answer.headers.get("retry-after") or 1
                self._wait(float(seconds))
                continue
            if answer.status >= 500:
                if attempt < MAX_RETRIES:
                    self._wait(float(2**attempt))
                continue
            if answer.status >= 400:
                raise SourceError(self._refusal(answer, path))
            if answer.headers.get("x-ratelimit-remaining") == "0":
                self._pause = float(answer.headers.get("x-ratelimit-reset-after") or 0)
            return answer.body
        raise _Cut("Discord kept answering 429 or 5xx; the rest is read next run")

    def _wait(self, seconds: float) -> None:
        budget = self.config.max_rate_limit_wait_seconds
        if self._waited + seconds > budget:
            raise _Cut(
                f"Discord asked to wait {seconds:g} s, past this run's "
                f"max_rate_limit_wait_seconds ({budget}); the rest is read next run"
            )
        self._waited += seconds
        self._sleep(seconds)

    def _refusal(self, answer: DiscordAnswer, path: str) -> str:
        body = answer.body if isinstance(answer.body, dict) else {}
        said = body.get("message") or f"HTTP {answer.status}"
        where = f"stream '{self.stream}'"
        if answer.status == 401:
            return (
                f"{where}: Discord refused DISCORD_BOT_TOKEN ({said}); copy the bot's token "
                "again from the Developer Portal (Bot, Reset Token)"
            )
        if answer.status == 403:
            return (
                f"{where}: the bot may not read channel {self.config.channel} ({said}); "
                "give it View Channel and Read Message History there"
            )
        if answer.status == 404:
            return (
                f"{where}: Discord does not know channel {self.config.channel} ({said}); "
                "check the id and that the bot was added to the server"
            )
        return f"{where}: Discord answered {answer.status} ({said}) to GET {path}"

    def _check_content(self, raws: list[dict[str, Any]]) -> None:
        """Fail when most people's messages arrive without content: the intent is off."""
        people = [raw for raw in raws if int(raw.get("type", 0)) in TALK_TYPES and not _is_bot(raw)]
        empty = [raw for raw in people if _is_blank(raw)]
        if people and len(empty) * 2 > len(people):
            raise SourceError(
                f"stream '{self.stream}': Discord sent {len(empty)} of {len(people)} messages "
                "without their text, so the bot lacks the Message Content intent; turn it on "
                "in the Developer Portal (Bot, Privileged Gateway Intents, Message Content Intent)"
            )

    def normalise(self, raw: dict[str, Any], *, guild: str) -> Message | None:
        """The message as Pythia sees it, or None for system messages and messages without
        text."""
        if int(raw.get("type", 0)) not in TALK_TYPES:
            return None
        text = self.readable(_text(raw))
        if not text.strip():
            return None
        message_id = int(raw["id"])
        thread = raw.get("_thread")
        reference = raw.get("message_reference") or {}
        reply_to: int | None = None
        if int(raw.get("type", 0)) == REPLY and reference.get("message_id"):
            reply_to = int(reference["message_id"])
        elif thread is not None and message_id != thread:
            reply_to = int(thread)  # the thread's starter, in the channel or the forum post
        if thread is not None:
            thread_key: str | None = f"thread:{thread}"
        elif raw.get("thread") or int(raw.get("flags") or 0) & HAS_THREAD:
            thread_key = f"thread:{message_id}"  # a thread started from this message
        else:
            thread_key = None
        author = raw.get("author") or {}
        return Message(
            stream=self.stream,
            id=message_id,
            author=pseudonym(self._salt, f"discord:{author.get('id', 'unknown')}"),
            sent_at=snowflake_time(message_id),
            text=text,
            thread_key=thread_key,
            reply_to=reply_to,
            permalink=(
                f"https://discord.com/channels/{guild}/{raw['channel_id']}/{message_id}"
                if guild
                else None
            ),
            is_bot=_is_bot(raw),
        )

    def readable(self, text: str) -> str:
        """Mentions of people as their pseudonyms, custom emoji as their names."""
        text = _USER_MENTION.sub(
            lambda match: "@" + pseudonym(self._salt, f"discord:{match.group(1)}"), text
        )
        return _CUSTOM_EMOJI.sub(r"\1", text)


def _is_bot(raw: dict[str, Any]) -> bool:
    return bool((raw.get("author") or {}).get("bot")) or bool(raw.get("webhook_id"))


def _text(raw: dict[str, Any]) -> str:
    """The content, or for a forwarded message the content of what was forwarded."""
    content = str(raw.get("content") or "")
    if content or (raw.get("message_reference") or {}).get("type") != FORWARD:
        return content
    snapshots = raw.get("message_snapshots") or [{}]
    return str((snapshots[0].get("message") or {}).get("content") or "")


def _is_blank(raw: dict[str, Any]) -> bool:
    """Nothing at all to read: how messages look without the Message Content intent."""
    fields = ("content", "attachments", "embeds", "sticker_items", "poll", "message_snapshots")
    return not any(raw.get(name) for name in fields)


def make_http(config: DiscordStream, *, secrets: Secrets) -> DiscordHTTP:
    if secrets.discord_bot_token is None:
        raise SourceError(
            f"stream '{config.id}' needs the DISCORD_BOT_TOKEN secret (the bot's token)"
        )
    return RequestsDiscord(secrets.discord_bot_token.get_secret_value())
