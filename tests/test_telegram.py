"""The Telegram source against real telethon TL objects served by a fake client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from telethon._updates import EntityCache
from telethon.errors import FloodWaitError, PhoneCodeInvalidError, SessionPasswordNeededError
from telethon.tl import types

from pythia.config import Secrets, TelegramStream
from pythia.sources import SourceError, StreamInterrupted, pseudonym, read_stream
from pythia.sources.telegram import (
    LoginError,
    SyncTelegram,
    TelegramSource,
    connect_client,
    login,
    permalink,
)

CHANNEL = 1987654321
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
SALT = "test-salt"
USERS = {
    101: types.User(id=101, first_name="Mira", username="mira_o", phone="447700900101"),
    102: types.User(id=102, first_name="Priya"),
    900: types.User(id=900, first_name="Kestrel CI", username="kestrel_ci_bot", bot=True),
}


class FakeTelegram:
    """Serves TL messages the way telethon's client does, oldest first in reverse mode."""

    _self_id = 555  # read by telethon's Message._finish_init

    def __init__(self, messages: list[Any]) -> None:
        self._mb_entity_cache = EntityCache()
        self.messages = sorted(messages, key=lambda message: message.id)
        for message in self.messages:
            message._finish_init(self, dict(USERS), None)
        self.floods: dict[int, int] = {}  # message id -> FloodWait seconds raised once before it
        self.calls: list[tuple[str, Any]] = []

    def iter_messages(
        self, chat: str | int, *, min_id: int = 0, reverse: bool = False
    ) -> Iterator[Any]:
        self.calls.append(("iter_messages", (chat, min_id, reverse)))
        assert reverse, "history must be read oldest first"
        for message in self.messages:
            if message.id <= min_id:
                continue
            if message.id in self.floods:
                raise FloodWaitError(request=None, capture=self.floods.pop(message.id))
            yield message

    def get_messages(
        self,
        chat: str | int,
        *,
        ids: list[int] | None = None,
        limit: int | None = None,
        offset_date: datetime | None = None,
    ) -> list[Any]:
        self.calls.append(("get_messages", ids if ids is not None else (limit, offset_date)))
        if ids is not None:
            if ids[0] in self.floods:
                raise FloodWaitError(request=None, capture=self.floods.pop(ids[0]))
            by_id = {message.id: message for message in self.messages}
            return [by_id.get(message_id) for message_id in ids]
        older = [m for m in self.messages if offset_date is None or m.date < offset_date]
        return list(reversed(older))[: limit or None]


def message(
    message_id: int,
    minute: float,
    text: str,
    *,
    user: int = 102,
    reply_to: types.MessageReplyHeader | None = None,
    media: Any = None,
) -> types.Message:
    return types.Message(
        id=message_id,
        peer_id=types.PeerChannel(CHANNEL),
        date=T0 + timedelta(minutes=minute),
        message=text,
        from_id=types.PeerUser(user),
        reply_to=reply_to,
        media=media,
    )


def service(message_id: int, minute: float, action: Any) -> types.MessageService:
    return types.MessageService(
        id=message_id,
        peer_id=types.PeerChannel(CHANNEL),
        date=T0 + timedelta(minutes=minute),
        action=action,
        from_id=types.PeerUser(101),
    )


def reply(to: int) -> types.MessageReplyHeader:
    return types.MessageReplyHeader(reply_to_msg_id=to)


PHOTO = types.MessageMediaPhoto(photo=types.PhotoEmpty(id=7001))

CHAT = [
    service(1, 0, types.MessageActionChatJoinedByLink(inviter_id=101)),
    message(2, 1, "Has anyone got the remote cache working behind a proxy?"),
    message(3, 4, "Since 2.3 Kestrel honours HTTPS_PROXY.", user=101, reply_to=reply(2)),
    message(4, 6, "", media=PHOTO),
    message(5, 7, "Our CI after switching: 14 min down to 4.", media=PHOTO),
    message(6, 9, "Nightly build finished: 412 tasks, 97% cached.", user=900),
    service(7, 10, types.MessageActionPinMessage()),
    message(8, 12, "Thanks, that fixed it.", reply_to=reply(3)),
]


def stream(**settings: Any) -> TelegramStream:
    return TelegramStream.model_validate(
        {"kind": "telegram", "id": "tg", "chat": "@kestrel_users", **settings}
    )


def source(
    client: FakeTelegram, sleeps: list[float] | None = None, **settings: Any
) -> TelegramSource:
    sink = sleeps if sleeps is not None else []
    return TelegramSource(stream(**settings), client=client, salt=SALT, sleep=sink.append)


def test_history_is_normalised_and_skips_service_messages_and_bare_media() -> None:
    client = FakeTelegram(CHAT)
    messages = list(source(client).fetch(0))
    assert [m.id for m in messages] == [2, 3, 5, 6, 8]
    assert client.calls == [("iter_messages", ("kestrel_users", 0, True))]
    by_id = {m.id: m for m in messages}
    assert by_id[3].reply_to == 2 and by_id[8].reply_to == 3 and by_id[2].reply_to is None
    assert by_id[5].text == "Our CI after switching: 14 min down to 4."  # caption kept
    assert by_id[6].is_bot and not by_id[3].is_bot
    assert by_id[3].author == pseudonym(SALT, "telegram:101")
    assert by_id[3].handle == "mira_o"  # only to publish a mention of her as her pseudonym
    assert by_id[2].sent_at == T0 + timedelta(minutes=1)
    assert by_id[2].permalink == "https://t.me/kestrel_users/2"
    for kept in messages:
        assert "Mira" not in kept.author and "447700900101" not in kept.author
        assert kept.thread_key is None


def test_fetch_starts_after_the_watermark() -> None:
    client = FakeTelegram(CHAT)
    assert [m.id for m in source(client).fetch(5)] == [6, 8]
    assert client.calls == [("iter_messages", ("kestrel_users", 5, True))]


def test_forum_topics_become_thread_keys_and_can_be_selected() -> None:
    forum = [
        service(40, 0, types.MessageActionTopicCreate(title="Install", icon_color=0x6FB9F0)),
        message(
            41,
            1,
            "brew or pipx?",
            reply_to=types.MessageReplyHeader(forum_topic=True, reply_to_msg_id=40),
        ),
        message(
            42,
            2,
            "pipx, it keeps Kestrel isolated.",
            user=101,
            reply_to=types.MessageReplyHeader(
                forum_topic=True, reply_to_msg_id=41, reply_to_top_id=40
            ),
        ),
        message(43, 3, "Hello from the General topic"),
    ]
    messages = list(source(FakeTelegram(forum)).fetch(0))
    assert [(m.id, m.thread_key, m.reply_to) for m in messages] == [
        (41, "topic:40", None),
        (42, "topic:40", 41),
        (43, None, None),
    ]
    assert [m.id for m in source(FakeTelegram(forum), topics=[40]).fetch(0)] == [41, 42]
    assert [m.id for m in source(FakeTelegram(forum), topics=[1]).fetch(0)] == [43]


def test_private_groups_get_internal_links() -> None:
    client = FakeTelegram(CHAT)
    first = next(iter(source(client, chat=-1001987654321).fetch(0)))
    assert first.permalink == "https://t.me/c/1987654321/2"
    assert permalink("-1001987654321", None, 9) == "https://t.me/c/1987654321/9"
    assert permalink(-4001234, types.PeerChat(4001234), 9) is None


def test_a_flood_wait_within_the_bound_is_slept_through_and_reading_resumes() -> None:
    client = FakeTelegram(CHAT)
    client.floods = {5: 30}
    sleeps: list[float] = []
    messages = list(source(client, sleeps, max_flood_wait_seconds=300).fetch(0))
    assert [m.id for m in messages] == [2, 3, 5, 6, 8]
    assert sleeps == [30]
    assert [call[1][1] for call in client.calls] == [0, 4]  # resumed after the last id read


def test_a_flood_wait_beyond_the_bound_stops_the_stream_keeping_what_was_read() -> None:
    client = FakeTelegram(CHAT)
    client.floods = {5: 3600}
    sleeps: list[float] = []
    tg = source(client, sleeps, max_flood_wait_seconds=300)
    with pytest.raises(StreamInterrupted) as stopped:
        list(tg.fetch(0))
    assert stopped.value.last_id == 4
    assert sleeps == []
    client.floods = {5: 3600}
    batch = read_stream(tg, 0)
    assert [m.id for m in batch.messages] == [2, 3]
    assert (
        batch.interrupted
        and "3600 s" in batch.interrupted
        and "after message 4" in batch.interrupted
    )


def test_flood_waits_add_up_against_the_bound() -> None:
    client = FakeTelegram(CHAT)
    client.floods = {3: 200, 6: 200}
    sleeps: list[float] = []
    batch = read_stream(source(client, sleeps, max_flood_wait_seconds=300), 0)
    assert sleeps == [200]
    assert [m.id for m in batch.messages] == [2, 3, 5]
    assert batch.interrupted is not None


def test_first_run_starts() -> None:
    assert source(FakeTelegram(CHAT), start="newest").start_after() == 8
    assert source(FakeTelegram(CHAT), start="oldest").start_after() == 0
    assert source(FakeTelegram(CHAT), start=5).start_after() == 4
    dated = FakeTelegram(CHAT)
    cutoff = source(dated, start=date(2026, 3, 2)).start_after()
    assert cutoff == 0
    assert dated.calls == [("get_messages", (1, datetime(2026, 3, 2, tzinfo=timezone.utc)))]
    later = [message(9, 24 * 60 + 5, "next day")]
    assert source(FakeTelegram(CHAT + later), start=date(2026, 3, 3)).start_after() == 8
    batch = read_stream(source(FakeTelegram(CHAT), start="newest"), None)
    assert batch.after == 8 and batch.messages == ()


def sparse_chat() -> list[Any]:
    found = [message(i, i, f"message {i}") for i in (3, 4, 7, 60)]
    return [*found, service(8, 8, types.MessageActionPinMessage()), message(150, 150, "late")]


def test_bot_mode_probes_id_blocks_and_stops_after_a_run_of_missing_ids() -> None:
    client = FakeTelegram(sparse_chat())
    messages = list(source(client, mode="bot", max_missing_ids=50).fetch(0))
    assert [m.id for m in messages] == [3, 4, 7]  # 9..58 are 50 missing ids in a row
    assert [call[1][0] for call in client.calls] == [1]
    assert all(len(call[1]) == 100 for call in client.calls)


def test_bot_mode_crosses_smaller_gaps_and_blocks() -> None:
    client = FakeTelegram(sparse_chat())
    messages = list(source(client, mode="bot", max_missing_ids=100).fetch(2))
    assert [m.id for m in messages] == [3, 4, 7, 60, 150]
    assert [call[1][0] for call in client.calls] == [3, 103, 203]


def test_bot_mode_waits_out_flood_and_refuses_history_starts() -> None:
    client = FakeTelegram(sparse_chat())
    client.floods = {1: 12}
    sleeps: list[float] = []
    assert [m.id for m in source(client, sleeps, mode="bot", max_missing_ids=50).fetch(0)] == [
        3,
        4,
        7,
    ]
    assert sleeps == [12]
    with pytest.raises(SourceError, match="bot mode cannot find the newest message"):
        source(FakeTelegram(CHAT), mode="bot", start="newest").start_after()


def test_connect_client_needs_the_secrets() -> None:
    with pytest.raises(SourceError, match="TELEGRAM_API_ID and TELEGRAM_API_HASH"):
        connect_client(stream(), secrets=Secrets())
    with pytest.raises(SourceError, match="run 'pythia telegram-login'"):
        connect_client(stream(), secrets=Secrets(telegram_api_id=1, telegram_api_hash="h"))
    with pytest.raises(SourceError, match="TELEGRAM_BOT_TOKEN"):
        connect_client(
            stream(mode="bot"), secrets=Secrets(telegram_api_id=1, telegram_api_hash="h")
        )


def test_connect_client_builds_a_lazy_client_without_network() -> None:
    client = connect_client(
        stream(), secrets=Secrets(telegram_api_id=1, telegram_api_hash="h", telegram_session="")
    )
    assert isinstance(client, SyncTelegram)
    assert client.session_string() == ""


class FakeLogin:
    def __init__(self, *, password_needed: bool = False, bad_code: bool = False) -> None:
        self.password_needed = password_needed
        self.bad_code = bad_code
        self.calls: list[tuple[str, Any]] = []

    def send_code_request(self, phone: str) -> object:
        self.calls.append(("send_code_request", phone))
        return object()

    def sign_in(self, **kwargs: Any) -> object:
        self.calls.append(("sign_in", kwargs))
        if "code" in kwargs and self.bad_code:
            raise PhoneCodeInvalidError(request=None)
        if "code" in kwargs and self.password_needed:
            raise SessionPasswordNeededError(request=None)
        return object()

    def session_string(self) -> str:
        return "1BVtsOKABu0-fake-session"


def run_login(
    client: FakeLogin, answers: list[str], secrets: list[str]
) -> tuple[str, list[str], list[tuple[int, str]]]:
    said: list[str] = []
    made: list[tuple[int, str]] = []

    def make(api_id: int, api_hash: str) -> FakeLogin:
        made.append((api_id, api_hash))
        return client

    session = login(
        make_client=make,
        ask=lambda prompt: answers.pop(0),
        ask_secret=lambda prompt: secrets.pop(0),
        say=said.append,
    )
    return session, said, made


def test_login_prints_the_session_string_and_how_to_store_it() -> None:
    client = FakeLogin()
    session, said, made = run_login(client, ["12345", "+44 7700 900123", "24680"], ["abcdef0123"])
    assert session == "1BVtsOKABu0-fake-session"
    assert made == [(12345, "abcdef0123")]
    assert client.calls == [
        ("send_code_request", "+44 7700 900123"),
        ("sign_in", {"phone": "+44 7700 900123", "code": "24680"}),
    ]
    text = "\n".join(said)
    assert session in said and "TELEGRAM_SESSION" in text and "dedicated account" in text


def test_login_asks_for_the_two_step_password_when_needed() -> None:
    client = FakeLogin(password_needed=True)
    run_login(client, ["12345", "+447700900123", "24680"], ["abcdef0123", "hunter2"])
    assert client.calls[-1] == ("sign_in", {"password": "hunter2"})


def test_login_errors_are_one_sentence() -> None:
    with pytest.raises(LoginError, match="the API id must be a number"):
        run_login(FakeLogin(), ["my-app"], [])
    with pytest.raises(LoginError, match="login code was wrong or expired"):
        run_login(FakeLogin(bad_code=True), ["1", "+447700900123", "0"], ["h"])


def test_a_cross_chat_reply_keeps_its_forum_topic_but_no_local_parent() -> None:
    from telethon.tl import types as tl

    from pythia.sources.telegram import topic_and_reply

    header = tl.MessageReplyHeader(
        forum_topic=True,
        reply_to_msg_id=777,
        reply_to_peer_id=tl.PeerChannel(999),
        reply_to_top_id=50,
    )
    assert topic_and_reply(header) == (50, None)
    local = tl.MessageReplyHeader(forum_topic=True, reply_to_msg_id=777, reply_to_top_id=50)
    assert topic_and_reply(local) == (50, 777)
    plain = tl.MessageReplyHeader(reply_to_msg_id=12, reply_to_peer_id=tl.PeerUser(5))
    assert topic_and_reply(plain) == (None, None)


def test_a_flood_wait_during_bot_sign_in_signs_in_again_on_retry() -> None:
    import asyncio

    from telethon.errors import FloodWaitError

    from pythia.sources.telegram import SyncTelegram

    class Client:
        def __init__(self) -> None:
            self.loop = asyncio.new_event_loop()
            self.sign_ins = 0

        async def connect(self) -> None:
            return None

        async def sign_in(self, *, bot_token: str) -> None:
            self.sign_ins += 1
            if self.sign_ins == 1:
                raise FloodWaitError(request=None, capture=5)

    client = Client()
    sync = SyncTelegram(client, bot_token="123:abc")
    try:
        with pytest.raises(FloodWaitError):
            sync.connect()
        sync.connect()  # the retry after the wait
        sync.connect()  # connected now: no third sign-in
        assert client.sign_ins == 2
    finally:
        client.loop.close()


def test_a_wrong_password_or_phone_is_a_login_error_not_a_traceback() -> None:
    from telethon.errors import PasswordHashInvalidError, PhoneNumberInvalidError

    class WrongPassword(FakeLogin):
        def sign_in(self, **kwargs: Any) -> object:
            if "password" in kwargs:
                raise PasswordHashInvalidError(request=None)
            return super().sign_in(**kwargs)

    with pytest.raises(LoginError, match=r"Telegram refused the login \(PasswordHashInvalid"):
        run_login(WrongPassword(password_needed=True), ["1", "+447700900123", "0"], ["h", "x"])

    class BadPhone(FakeLogin):
        def send_code_request(self, phone: str) -> object:
            raise PhoneNumberInvalidError(request=None)

    with pytest.raises(LoginError, match="check the phone number"):
        run_login(BadPhone(), ["1", "12"], ["h"])
