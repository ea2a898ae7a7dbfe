"""Reading one Telegram group with telethon, as a plain iterator of normalised messages.

User-session mode (the normal one) logs in with TELEGRAM_API_ID, TELEGRAM_API_HASH and a
StringSession string in TELEGRAM_SESSION (made once with `pythia telegram-login`), and reads
history with `iter_messages(chat, min_id=watermark, reverse=True)`, oldest first.

Bot-token mode (`mode: bot`, TELEGRAM_BOT_TOKEN) exists for groups where a user session is not
wanted. Bots may not read history (`messages.getHistory` answers BOT_METHOD_INVALID), so it asks
for message ids after the watermark in blocks of 100 with `get_messages(chat, ids=[...])` and
stops after `max_missing_ids` ids in a row that do not exist. Its limits:
- the bot must be a member of the group, and the group a supergroup (basic groups number
  messages per account, so ids cannot be probed);
- a first run must start at 'oldest' or a message id: 'newest' and dates need history;
- a run of deleted messages longer than `max_missing_ids` looks like the end of the chat, so
  the stream stays stuck before it until `max_missing_ids` is raised;
- every run spends one request on the ids past the newest message.

Both modes read only the one chat named in the stream's config. Forum topics become thread
keys ("topic:<id>"); messages in the General topic have no topic header and no key. Service
messages and media without a caption are skipped; captions are kept as text.

Flood waits: telethon's own silent sleeping is switched off (`flood_sleep_threshold=0`) so every
`FloodWaitError` reaches this module, which sleeps through it (with an injectable `sleep`) as
long as the waits of this run add up to at most `max_flood_wait_seconds`. Past that, `fetch`
raises `StreamInterrupted` after yielding everything it already read.

telethon is asyncio-based; `SyncTelegram` runs one coroutine per call on the client's loop
(telethon's message iterator is itself a plain iterator when no loop is running), so this
module and its callers stay synchronous.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timezone
from datetime import time as dtime
from functools import partial
from typing import Any, Protocol

from telethon.errors import FloodWaitError, SessionPasswordNeededError
from telethon.tl import types

from ..config import Secrets, TelegramStream
from ..models import Message
from . import SourceError, StreamInterrupted, fixed_start, is_trusted, pseudonym

BOT_BLOCK = 100  # telethon asks for at most 100 ids per channels.getMessages call


class TelegramClientLike(Protocol):
    """The synchronous slice of a telethon client this module uses (see `SyncTelegram`)."""

    def iter_messages(self, chat: str | int, **kwargs: Any) -> Iterable[Any]: ...

    def get_messages(self, chat: str | int, **kwargs: Any) -> list[Any]: ...


class LoginClient(Protocol):
    def send_code_request(self, phone: str) -> object: ...

    def sign_in(self, **kwargs: Any) -> object: ...

    def session_string(self) -> str: ...


class LoginError(Exception):
    """`pythia telegram-login` could not log in; the message says what to do."""


def chat_ref(chat: str | int) -> str | int:
    """The chat as telethon wants it: a bare username or an integer id."""
    if isinstance(chat, int):
        return chat
    text = chat.strip().removeprefix("https://t.me/").removeprefix("@")
    if text.lstrip("-").isdigit():
        return int(text)
    return text


def permalink(chat: str | int, peer: object, message_id: int) -> str | None:
    """t.me/<username>/<id> for a public chat, t.me/c/<internal id>/<id> otherwise."""
    ref = chat_ref(chat)
    if isinstance(ref, str):
        return f"https://t.me/{ref}/{message_id}"
    if isinstance(peer, types.PeerChannel):
        return f"https://t.me/c/{peer.channel_id}/{message_id}"
    internal = str(ref).removeprefix("-100")
    if str(ref).startswith("-100") and internal.isdigit():
        return f"https://t.me/c/{internal}/{message_id}"
    return None  # basic groups have no message links


def topic_and_reply(header: object) -> tuple[int | None, int | None]:
    """The forum topic id and the replied-to message id of a reply header.

    In a forum, a message posted straight into topic T carries forum_topic=True and
    reply_to_msg_id=T; a reply to M inside T carries reply_to_msg_id=M and reply_to_top_id=T
    (https://core.telegram.org/api/forum#forum-topics).
    """
    if not isinstance(header, types.MessageReplyHeader):
        return None, None  # no reply, or a reply to a story
    # A reply to a message in another chat keeps its topic here but has no local parent.
    elsewhere = header.reply_to_peer_id is not None
    if header.forum_topic:
        if header.reply_to_top_id:
            return header.reply_to_top_id, None if elsewhere else header.reply_to_msg_id
        return (None, None) if elsewhere else (header.reply_to_msg_id, None)
    return None, None if elsewhere else header.reply_to_msg_id


def author_id(raw: Any) -> str:
    """The raw, namespaced author id (pseudonymised before it goes anywhere)."""
    sender = raw.from_id or raw.peer_id
    if isinstance(sender, types.PeerUser):
        return f"telegram:{sender.user_id}"
    if isinstance(sender, types.PeerChannel):
        return f"telegram:channel:{sender.channel_id}"
    if isinstance(sender, types.PeerChat):
        return f"telegram:chat:{sender.chat_id}"
    return "telegram:unknown"


class TelegramSource:
    """One configured Telegram chat as a `Source`."""

    def __init__(
        self,
        config: TelegramStream,
        *,
        client: TelegramClientLike,
        salt: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.stream = config.id
        self.config = config
        self.chat = chat_ref(config.chat)
        self._client = client
        self._salt = salt
        self._sleep = sleep
        self._waited = 0.0

    def close(self) -> None:
        disconnect = getattr(self._client, "disconnect", None)
        if callable(disconnect):
            disconnect()

    def start_after(self) -> int:
        start = self.config.start
        if (fixed := fixed_start(start)) is not None:
            return fixed
        if self.config.mode == "bot":
            raise SourceError(
                f"stream '{self.stream}': bot mode cannot find the newest message or a date; "
                "set start to 'oldest' or a message id"
            )
        if start == "newest":
            latest = self._call(lambda: self._client.get_messages(self.chat, limit=1), None)
            return latest[0].id if latest else 0
        assert isinstance(start, date)
        midnight = datetime.combine(start, dtime(0, 0), tzinfo=timezone.utc)
        # Without `reverse`, offset_date returns messages sent strictly before it.
        before = self._call(
            lambda: self._client.get_messages(self.chat, limit=1, offset_date=midnight), None
        )
        return before[0].id if before else 0

    def fetch(self, after: int | None) -> Iterator[Message]:
        start = self.start_after() if after is None else after
        self._waited = 0.0
        if self.config.mode == "bot":
            yield from self._fetch_by_ids(start)
        else:
            yield from self._fetch_history(start)

    def _fetch_history(self, after: int) -> Iterator[Message]:
        last = after
        while True:
            try:
                for raw in self._client.iter_messages(self.chat, min_id=last, reverse=True):
                    if raw.id <= last:
                        continue
                    last = raw.id
                    message = self.normalise(raw)
                    if message is not None:
                        yield message
                return
            except FloodWaitError as error:
                # The iterator is dead after an error; resume after the last id read.
                self._wait_out(error, last if last > after else None)

    def _fetch_by_ids(self, after: int) -> Iterator[Message]:
        next_id, missing = after + 1, 0
        while True:
            ids = list(range(next_id, next_id + BOT_BLOCK))
            read_up_to = next_id - 1 if next_id - 1 > after else None
            found = self._call(partial(self._client.get_messages, self.chat, ids=ids), read_up_to)
            for raw in found:
                if raw is None:
                    missing += 1
                    if missing >= self.config.max_missing_ids:
                        return
                    continue
                missing = 0
                message = self.normalise(raw)
                if message is not None:
                    yield message
            next_id = ids[-1] + 1

    def _call(self, request: Callable[[], list[Any]], last_id: int | None) -> list[Any]:
        while True:
            try:
                return request()
            except FloodWaitError as error:
                self._wait_out(error, last_id)

    def _wait_out(self, error: FloodWaitError, last_id: int | None) -> None:
        if self._waited + error.seconds > self.config.max_flood_wait_seconds:
            raise StreamInterrupted(
                self.stream,
                last_id=last_id,
                reason=(
                    f"Telegram asked to wait {error.seconds} s, beyond max_flood_wait_seconds "
                    f"({self.config.max_flood_wait_seconds} s); the rest is read next run"
                ),
            ) from error
        self._waited += error.seconds
        self._sleep(error.seconds)

    def normalise(self, raw: Any) -> Message | None:
        """A telethon message as a `Message`, or None for what is not conversation."""
        if isinstance(raw, types.MessageService) or not isinstance(raw, types.Message):
            return None
        text = raw.message or ""
        if not text.strip():
            return None  # media without a caption, stickers, empty messages
        topic, reply = topic_and_reply(raw.reply_to)
        if self.config.topics and (topic or 1) not in self.config.topics:
            return None  # topic 1 is General, whose messages carry no topic header
        sender = getattr(raw, "sender", None)
        author = author_id(raw)
        handle = getattr(sender, "username", None) or None
        return Message(
            stream=self.stream,
            id=raw.id,
            author=pseudonym(self._salt, author),
            sent_at=_utc(raw.date),
            text=text,
            thread_key=f"topic:{topic}" if topic else None,
            reply_to=reply,
            permalink=permalink(self.config.chat, raw.peer_id, raw.id),
            is_bot=bool(getattr(sender, "bot", False)),
            handle=handle,
            trusted=is_trusted(
                self.config.trusted_authors, author.rsplit(":", 1)[-1], author, handle
            ),
        )


def _utc(moment: datetime | None) -> datetime:
    if moment is None:
        raise SourceError("Telegram returned a message without a date; retry the run")
    return (
        moment.replace(tzinfo=timezone.utc)
        if moment.tzinfo is None
        else moment.astimezone(timezone.utc)
    )


class SyncTelegram:
    """A telethon `TelegramClient` driven synchronously, connecting on first use."""

    def __init__(self, client: Any, *, bot_token: str | None = None, chat: str | int = "") -> None:
        self._client = client
        self._bot_token = bot_token
        self._chat = chat
        self._connected = False

    def _run(self, coroutine: Any) -> Any:
        return self._client.loop.run_until_complete(coroutine)

    def connect(self) -> None:
        if self._connected:
            return
        self._run(self._client.connect())
        if self._bot_token:
            self._run(self._client.sign_in(bot_token=self._bot_token))
        elif not self._run(self._client.is_user_authorized()):
            raise SourceError(
                "TELEGRAM_SESSION is not a logged-in session; run 'pythia telegram-login' "
                "and store the string it prints as the TELEGRAM_SESSION secret"
            )
        if isinstance(self._chat, int) and not self._bot_token:
            # A StringSession keeps no entity cache, and a bare numeric id needs one
            # (https://docs.telethon.dev/en/stable/concepts/entities.html).
            self._run(self._client.get_dialogs())
        # Only now: a FloodWait in sign-in or dialogs must make the retry do them again.
        self._connected = True

    def iter_messages(self, chat: str | int, **kwargs: Any) -> Iterable[Any]:
        self.connect()
        iterator: Iterable[Any] = self._client.iter_messages(chat, **kwargs)
        return iterator

    def get_messages(self, chat: str | int, **kwargs: Any) -> list[Any]:
        self.connect()
        found: list[Any] = self._run(self._client.get_messages(chat, **kwargs))
        return found

    def send_code_request(self, phone: str) -> object:
        self._run(self._client.connect())
        return self._run(self._client.send_code_request(phone))

    def sign_in(self, **kwargs: Any) -> object:
        return self._run(self._client.sign_in(**kwargs))

    def session_string(self) -> str:
        saved: str = self._client.session.save()
        return saved

    def disconnect(self) -> None:
        if self._connected:
            self._run(self._client.disconnect())
            self._connected = False


_loop: asyncio.AbstractEventLoop | None = None


def _telethon_client(api_id: int, api_hash: str, session: str = "") -> Any:
    from telethon import TelegramClient
    from telethon.sessions import StringSession

    # telethon uses the thread's current event loop (telethon.helpers.get_running_loop); set one
    # explicitly, shared by all clients, as Python >= 3.12 no longer creates it implicitly.
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    asyncio.set_event_loop(_loop)
    return TelegramClient(StringSession(session), api_id, api_hash, flood_sleep_threshold=0)


def connect_client(config: TelegramStream, *, secrets: Secrets) -> SyncTelegram:
    """A lazily connecting client for one stream, from the secrets in the environment."""
    if secrets.telegram_api_id is None or secrets.telegram_api_hash is None:
        raise SourceError(
            f"stream '{config.id}' needs TELEGRAM_API_ID and TELEGRAM_API_HASH; "
            "get them at https://my.telegram.org and set them as secrets"
        )
    api_hash = secrets.telegram_api_hash.get_secret_value()
    if config.mode == "bot":
        if secrets.telegram_bot_token is None:
            raise SourceError(f"stream '{config.id}' is in bot mode; set TELEGRAM_BOT_TOKEN")
        client = _telethon_client(secrets.telegram_api_id, api_hash)
        return SyncTelegram(
            client,
            bot_token=secrets.telegram_bot_token.get_secret_value(),
            chat=chat_ref(config.chat),
        )
    if secrets.telegram_session is None:
        raise SourceError(
            f"stream '{config.id}' needs TELEGRAM_SESSION; run 'pythia telegram-login' to make one"
        )
    try:
        client = _telethon_client(
            secrets.telegram_api_id, api_hash, secrets.telegram_session.get_secret_value()
        )
    except ValueError:  # StringSession's "Not a valid string", binascii's padding errors
        raise SourceError(
            f"stream '{config.id}': TELEGRAM_SESSION is not a session string; make a new one "
            "with 'pythia telegram-login' and store it as the secret"
        ) from None
    return SyncTelegram(client, chat=chat_ref(config.chat))


def login(
    *,
    make_client: Callable[[int, str], LoginClient] | None = None,
    ask: Callable[[str], str] = input,
    ask_secret: Callable[[str], str] = getpass.getpass,
    say: Callable[[str], None] = print,
) -> str:
    """Interactive `pythia telegram-login`: log in once and print the session string."""
    from telethon.errors import PhoneCodeExpiredError, PhoneCodeInvalidError, RPCError

    factory = make_client or (
        lambda api_id, api_hash: SyncTelegram(_telethon_client(api_id, api_hash))
    )
    say("Log in the Telegram account Pythia reads with (use a dedicated account that only")
    say("joins the chats to read: the session string grants full access to it).")
    raw_id = ask("API id (from https://my.telegram.org > API development tools): ").strip()
    if not raw_id.isdigit():
        raise LoginError(
            f"the API id must be a number, not '{raw_id}'; copy it from my.telegram.org"
        )
    api_hash = ask_secret("API hash: ").strip()
    client = factory(int(raw_id), api_hash)
    phone = ask("Phone number, in international format (e.g. +44 7700 900123): ").strip()
    try:
        client.send_code_request(phone)
        code = ask("The login code Telegram just sent you: ").strip()
        try:
            client.sign_in(phone=phone, code=code)
        except SessionPasswordNeededError:
            client.sign_in(password=ask_secret("Two-step verification password: "))
    except (PhoneCodeInvalidError, PhoneCodeExpiredError):
        raise LoginError("the login code was wrong or expired; run telegram-login again") from None
    except RPCError as error:
        # e.g. PhoneNumberInvalidError, PasswordHashInvalidError
        raise LoginError(
            f"Telegram refused the login ({type(error).__name__}); check the phone number "
            "and the password, then run telegram-login again"
        ) from None
    session = client.session_string()
    say("")
    say("Logged in. Store this string as the TELEGRAM_SESSION secret of the docs repository,")
    say("for example with: gh secret set TELEGRAM_SESSION")
    say("and set TELEGRAM_API_ID and TELEGRAM_API_HASH the same way. Keep it secret.")
    say("")
    say(session)
    return session
