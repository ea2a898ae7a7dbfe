"""The Zulip source: recorded HTTP for the wire format, a fake server for first-run searches."""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any

import pytest

from pythia.app.sourcing import build_source
from pythia.config import Secrets, ZulipStream
from pythia.sources import SourceError, StreamInterrupted, pseudonym, read_stream
from pythia.sources.zulip import ZulipSource, hash_encode, make_client, narrow_url

SITE = "https://kestrel.zulipchat.com"
SALT = "test-salt"


def stream(**settings: Any) -> ZulipStream:
    return ZulipStream.model_validate(
        {
            "kind": "zulip",
            "id": "zulip-help",
            "site": SITE,
            "email": "pythia-bot@kestrel.zulipchat.com",
            "channel": "help",
            **settings,
        }
    )


def live_source(config: ZulipStream, sleeps: list[float]) -> ZulipSource:
    secrets = Secrets.from_env()
    return ZulipSource(
        config,
        client_factory=lambda: make_client(config, secrets=secrets),
        salt=SALT,
        sleep=sleeps.append,
    )


@pytest.mark.vcr
def test_fetch_pages_until_found_newest(secrets_env: dict[str, str], vcr: Any) -> None:
    messages = list(live_source(stream(batch_size=2), []).fetch(2000))
    assert [m.id for m in messages] == [2051, 2054, 2060, 2063]
    assert vcr.all_played  # server_settings, then three pages
    first, answer, bot, moved = messages
    assert first.thread_key == answer.thread_key == "topic:remote cache behind a proxy"
    assert first.text.startswith("Does the remote cache work behind a corporate proxy? `kestrel")
    assert first.sent_at == datetime.fromtimestamp(1772442041, tz=timezone.utc)
    assert first.author == pseudonym(SALT, "zulip:kestrel.zulipchat.com:31")
    assert first.permalink == (
        f"{SITE}/#narrow/channel/12-help/topic/remote.20cache.20behind.20a.20proxy/near/2051"
    )
    assert (
        moved.permalink
        == f"{SITE}/#narrow/channel/12-help/topic/cache.20location.20in.203.2E0/near/2063"
    )
    assert bot.is_bot and not first.is_bot
    assert all("example.org" not in m.author and "Priya" not in m.author for m in messages)


@pytest.mark.vcr
def test_a_rate_limit_answer_is_waited_out(secrets_env: dict[str, str], vcr: Any) -> None:
    sleeps: list[float] = []
    messages = list(live_source(stream(), sleeps).fetch(2063))
    assert [m.id for m in messages] == [2070]
    assert sleeps == [1.75]
    assert vcr.all_played


@pytest.mark.vcr
def test_topics_on_an_older_server_use_the_stream_operator(
    secrets_env: dict[str, str], vcr: Any
) -> None:
    config = stream(topics=["install", "cache location in 3.0"])
    messages = list(live_source(config, []).fetch(2000))
    assert [(m.id, m.thread_key) for m in messages] == [
        (2052, "topic:install"),
        (2055, "topic:cache location in 3.0"),
        (2058, "topic:install"),
    ]
    assert messages[0].permalink == f"{SITE}/#narrow/stream/12-help/topic/install/near/2052"
    assert vcr.all_played


@pytest.mark.vcr
def test_an_invalid_api_key_is_a_readable_error(secrets_env: dict[str, str]) -> None:
    batch_source = live_source(stream(), [])
    with pytest.raises(SourceError, match=r"Invalid API key\); check the channel name, the bot's"):
        read_stream(batch_source, 0)


def test_hash_encoding_matches_zulip() -> None:
    assert hash_encode("cache location in 3.0") == "cache.20location.20in.203.2E0"
    assert hash_encode("a/b (c)%") == "a.2Fb.20.28c.29.25"
    assert hash_encode("café") == "caf.C3.A9"
    url = narrow_url(
        SITE + "/",
        channel_id=5,
        channel="kestrel help",
        topic="x",
        message_id=9,
        operator="channel",
    )
    assert url == f"{SITE}/#narrow/channel/5-kestrel-help/topic/x/near/9"


class FakeZulip:
    """Answers GET /messages like a Zulip server over an in-memory channel."""

    feature_level = 410

    def __init__(self, messages: list[tuple[int, int, str]]) -> None:
        self.messages = [
            {
                "id": message_id,
                "timestamp": timestamp,
                "subject": topic,
                "sender_id": 7,
                "sender_email": "mira@example.org",
                "content": f"message {message_id}",
                "display_recipient": "help",
                "stream_id": 12,
                "type": "stream",
            }
            for message_id, timestamp, topic in messages
        ]
        self.requests: list[dict[str, Any]] = []
        self.rate_limited: list[float] = []  # retry-after answers given before the next success

    def get_messages(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        if self.rate_limited:
            return {
                "result": "error",
                "code": "RATE_LIMIT_HIT",
                "msg": "API usage exceeded rate limit",
                "retry-after": self.rate_limited.pop(0),
            }
        topics = [term["operand"] for term in request["narrow"] if term["operator"] == "topic"]
        matching = [m for m in self.messages if not topics or m["subject"] in topics]
        anchor = request["anchor"]
        if anchor == "newest":
            before = matching[-request["num_before"] :] if request["num_before"] else []
            return {"result": "success", "messages": before, "found_newest": True}
        include = request.get("include_anchor", True)
        after = [m for m in matching if m["id"] > anchor or (include and m["id"] == anchor)]
        page = after[: request["num_after"]]
        return {"result": "success", "messages": page, "found_newest": len(after) <= len(page)}


DAY = 86_400
START = int(datetime(2026, 3, 1, tzinfo=timezone.utc).timestamp())
HISTORY = [
    (10, START + 0 * DAY + 600, "install"),
    (11, START + 0 * DAY + 900, "install"),
    (57, START + 1 * DAY + 100, "cache"),
    (58, START + 1 * DAY + 700, "install"),
    (300, START + 2 * DAY + 50, "cache"),
    (301, START + 3 * DAY + 50, "cache"),
    (999, START + 3 * DAY + 90, "install"),
]


def fake_source(
    client: FakeZulip, sleeps: list[float] | None = None, **settings: Any
) -> ZulipSource:
    sink = sleeps if sleeps is not None else []
    return ZulipSource(
        stream(**settings), client_factory=lambda: client, salt=SALT, sleep=sink.append
    )


@pytest.mark.parametrize(
    ("day", "after"),
    [
        (date(2026, 3, 1), 0),
        (date(2026, 3, 2), 11),
        (date(2026, 3, 3), 58),
        (date(2026, 3, 4), 300),
        (date(2026, 3, 9), 999),
    ],
)
def test_a_start_date_is_resolved_to_the_last_message_before_it(day: date, after: int) -> None:
    client = FakeZulip(HISTORY)
    assert fake_source(client, start=day.isoformat()).start_after() == after
    assert all(request["anchor"] != "date" for request in client.requests)
    assert len(client.requests) <= 12  # a binary search, not a scan


def test_a_start_date_with_topics_uses_the_earliest_topic() -> None:
    client = FakeZulip(HISTORY)
    assert fake_source(client, start="2026-03-03", topics=["cache", "install"]).start_after() == 57


def test_first_run_newest_reads_nothing_but_sets_the_watermark() -> None:
    batch = read_stream(fake_source(FakeZulip(HISTORY), start="newest"), None)
    assert batch.after == 999 and batch.messages == ()
    assert fake_source(FakeZulip(HISTORY), start=58).start_after() == 57
    assert [
        m.id for m in read_stream(fake_source(FakeZulip(HISTORY), start=58), None).messages
    ] == [
        58,
        300,
        301,
        999,
    ]


def test_repeated_rate_limits_stop_the_stream_keeping_what_was_read() -> None:
    client = FakeZulip(HISTORY)
    sleeps: list[float] = []
    source = fake_source(client, sleeps, batch_size=3)
    pages = source.fetch(0)
    assert [next(pages).id for _ in range(3)] == [10, 11, 57]
    client.rate_limited = [2.0] * 6
    with pytest.raises(StreamInterrupted, match="after message 57: Zulip kept answering 429"):
        next(pages)
    assert sleeps == [2.0] * 5


def test_a_very_long_retry_after_is_not_slept() -> None:
    client = FakeZulip(HISTORY)
    client.rate_limited = [3600.0]
    sleeps: list[float] = []
    batch = read_stream(fake_source(client, sleeps), 0)
    assert sleeps == [] and batch.messages == () and batch.interrupted


def test_build_source_is_lazy_and_needs_the_api_key() -> None:
    source = build_source(stream(), secrets=Secrets(), salt=SALT)
    assert isinstance(source, ZulipSource)  # nothing was requested yet
    with pytest.raises(SourceError, match="needs the ZULIP_API_KEY secret"):
        source.start_after()
    with pytest.raises(SourceError, match="pseudonym salt is empty"):
        build_source(stream(), secrets=Secrets(), salt="")


class _Answers:
    """A zulip.Client stand-in whose get_messages answers from a script, for error paths."""

    feature_level = 300

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.requests: list[dict[str, object]] = []

    def get_messages(self, request: dict[str, object]) -> dict[str, object]:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, dict)
        return answer


def _raw(message_id: int) -> dict[str, object]:
    return {
        "id": message_id,
        "sender_id": 1,
        "sender_email": "a@chat.example.net",
        "timestamp": 1772442000 + message_id,
        "subject": "t",
        "display_recipient": "help",
        "stream_id": 9,
        "content": f"message {message_id}",
    }


def _source(client: _Answers, sleeps: list[float]) -> object:
    from pythia.config import parse_config
    from pythia.sources.zulip import ZulipSource

    stream = parse_config(
        {
            "streams": [
                {
                    "id": "z",
                    "kind": "zulip",
                    "site": "https://chat.example.net",
                    "email": "bot@chat.example.net",
                    "channel": "help",
                }
            ]
        }
    ).streams[0]
    return ZulipSource(stream, client_factory=lambda: client, salt="s", sleep=sleeps.append)


def test_a_json_500_is_retried_and_the_anchor_is_never_read_again() -> None:
    from pythia.sources import read_stream

    sleeps: list[float] = []
    client = _Answers(
        {"result": "error", "msg": "Internal server error"},
        # an old server (no include_anchor) sends the anchor back: it must not count as new
        {"result": "success", "found_newest": True, "messages": [_raw(4), _raw(5), _raw(6)]},
    )
    batch = read_stream(_source(client, sleeps), 4)  # type: ignore[arg-type]
    assert [m.id for m in batch.messages] == [5, 6]
    assert sleeps == [1.0]


def test_a_timeout_keeps_the_pages_already_read() -> None:
    import requests

    from pythia.sources import read_stream

    client = _Answers(
        {"result": "success", "found_newest": False, "messages": [_raw(5), _raw(6)]},
        requests.exceptions.ReadTimeout("read timed out"),
    )
    batch = read_stream(_source(client, []), 4)  # type: ignore[arg-type]
    assert [m.id for m in batch.messages] == [5, 6]
    assert batch.interrupted and "cannot reach https://chat.example.net" in batch.interrupted
