"""The Slack source: recorded Web API answers through slack_sdk, a fake API for the edges.

The cassettes under tests/cassettes/test_slack/ were written by hand from Slack's method
reference (form-encoded POSTs, `ok`/`error` bodies, `has_more` with `response_metadata`
cursors, 429 with Retry-After); a maintainer with a bot token re-records them with
`--record-mode=once` against a channel laid out the same way. Requests are matched on their
form body too, so each cassette pins the windows and cursors the source asks for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from cassettes.record_sample import sample_repo
from pythia.app.cli import main
from pythia.app.sourcing import build_source
from pythia.config import Secrets, SlackStream
from pythia.sources import SourceError, StreamInterrupted, pseudonym, read_stream, slack
from pythia.sources.slack import SlackAnswer, SlackSource, id_to_ts, make_web, ts_to_id

SALT = "test-salt"
CHANNEL = "C07KESTREL"
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
SITE = "https://kestrel-community.slack.com/"
BODY = ["method", "scheme", "host", "port", "path", "query", "body"]


def stream(**settings: Any) -> SlackStream:
    return SlackStream.model_validate(
        {"kind": "slack", "id": "slack-help", "channel": CHANNEL, **settings}
    )


def live_source(config: SlackStream, sleeps: list[float]) -> SlackSource:
    secrets = Secrets.from_env()
    return SlackSource(
        config,
        web_factory=lambda: make_web(config, secrets=secrets),
        salt=SALT,
        sleep=sleeps.append,
        clock=lambda: NOON,
    )


def author(user: str) -> str:
    return pseudonym(SALT, f"slack:{user}")


@pytest.mark.vcr(match_on=BODY)
def test_history_is_read_in_windows_with_threads(secrets_env: dict[str, str], vcr: Any) -> None:
    config = stream(page_size=4, thread_lookback_days=0)
    messages = list(live_source(config, []).fetch(ts_to_id("1772280000.000000")))
    assert vcr.all_played  # auth.test, two windows, the replies of two threads
    assert [id_to_ts(m.id) for m in messages] == [
        "1772300000.000200",  # the question, a thread parent
        "1772310000.000300",  # a bot's message
        "1772320000.000400",  # edited since
        "1772370000.000500",  # a reply in the thread, a day later
        "1772372000.000600",  # a reply also sent to the channel: read once
        "1772447400.000900",  # a reply whose parent was deleted
    ]
    question, bot, edited, answer, thanks, orphan = messages
    # the join, the file shared without a comment and the deleted parent are not read
    assert question.text.startswith("How do I point the remote cache at S3 behind a proxy?")
    assert question.author == author("U0MIRA")
    assert question.sent_at == datetime(2026, 2, 28, 17, 33, 20, 200, tzinfo=timezone.utc)
    assert (
        question.thread_key
        == answer.thread_key
        == thanks.thread_key
        == ("thread:1772300000.000200")
    )
    assert question.reply_to is None and answer.reply_to == question.id == thanks.reply_to
    assert question.permalink == f"{SITE}archives/{CHANNEL}/p1772300000000200"
    assert answer.permalink == (
        f"{SITE}archives/{CHANNEL}/p1772370000000500?thread_ts=1772300000.000200&cid={CHANNEL}"
    )
    assert answer.text == (
        f"@{author('U0MIRA')} set `remote.proxy` in kestrel.toml, see the config reference "
        "(https://kestrel.dev/docs/config#remote)"
    )
    assert bot.is_bot and not question.is_bot
    assert edited.text == (
        "Same here, and `kestrel cache push --verbose` shows no proxy at all & no retries"
    )
    assert edited.thread_key is None
    assert orphan.thread_key == "thread:1772445600.000700" and orphan.author == author("U0PAT")
    assert all("Mira" not in m.text for m in messages)


@pytest.mark.vcr(match_on=BODY)
def test_late_replies_in_an_older_thread_are_found(secrets_env: dict[str, str], vcr: Any) -> None:
    messages = list(
        live_source(stream(thread_lookback_days=1, page_size=2), []).fetch(1772366400000000)
    )
    assert vcr.all_played  # auth.test, the lookback (two pages), a thread's replies, a window
    (late,) = messages
    assert late.id == 1772438400000100 and late.reply_to == 1772308800000100
    assert late.thread_key == "thread:1772308800.000100"
    assert late.text == "Coming back to this: 3.1.2 reads HTTPS_PROXY for cache pushes too."


@pytest.mark.vcr(match_on=BODY)
def test_ratelimited_waits_its_retry_after(secrets_env: dict[str, str], vcr: Any) -> None:
    sleeps: list[float] = []
    messages = list(live_source(stream(thread_lookback_days=0), sleeps).fetch(1772442000000000))
    assert [m.text for m in messages] == ["Is there a way to see which cache a task hit?"]
    assert sleeps == [30.0]
    assert vcr.all_played


@pytest.mark.vcr(match_on=BODY)
def test_a_missing_scope_is_one_line(secrets_env: dict[str, str]) -> None:
    with pytest.raises(SourceError) as raised:
        read_stream(live_source(stream(thread_lookback_days=0), []), 1772442000000000)
    assert str(raised.value) == (
        "stream 'slack-help': the app lacks the channels:history scope (missing_scope in "
        "conversations.history); add it under OAuth & Permissions, Bot Token Scopes, and "
        "reinstall the app"
    )


@pytest.mark.vcr(match_on=BODY)
def test_an_app_outside_the_channel_is_one_line(secrets_env: dict[str, str]) -> None:
    with pytest.raises(SourceError) as raised:
        read_stream(live_source(stream(thread_lookback_days=0), []), 1772442000000000)
    assert str(raised.value) == (
        f"stream 'slack-help': the app is not a member of channel {CHANNEL} (not_in_channel); "
        "invite it there with /invite @<app name>"
    )


def test_ts_maps_to_microseconds_and_back() -> None:
    assert ts_to_id("1712345678.123456") == 1712345678123456
    assert id_to_ts(1712345678123456) == "1712345678.123456"
    assert ts_to_id("1712345678.000100") == 1712345678000100
    assert ts_to_id("1712345678.1") == 1712345678100000  # a short fraction still sorts right
    assert ts_to_id("1712345678") == 1712345678000000
    assert id_to_ts(ts_to_id("1355517523.000005")) == "1355517523.000005"
    assert ts_to_id("4102444800.000000") < 2**53  # exact even in JavaScript past 2100


def test_start_needs_no_request() -> None:
    fake = FakeSlack()

    def start(value: str | int) -> int:
        return fake_source(fake, start=value).start_after()

    assert start("oldest") == 0
    assert start(1772300000000200) == 1772300000000199
    assert start("newest") == 1772452800000000
    assert start("2026-03-02") == 1772409600000000 - 1
    assert fake.calls == []


def test_markup_becomes_plain_text() -> None:
    source = fake_source(FakeSlack())
    assert source.readable("<@U0MIRA|mira> see <#C0GENERAL|general> &amp; <!here>") == (
        f"@{author('U0MIRA')} see #general & @here"
    )
    assert source.readable("<https://kestrel.dev> and <mailto:a@b.org|a@b.org> a &lt;b&gt;") == (
        "https://kestrel.dev and a@b.org a <b>"
    )
    assert source.readable("<!subteam^S0TEAM|@maintainers> ping") == "@maintainers ping"


DAY = 86_400_000_000


class FakeSlack:
    """Answers Web API calls like Slack for one channel: history (newest first, paged), replies,
    auth.test; `failures` are answered first, per method."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.replies: dict[str, list[dict[str, Any]]] = {}
        self.failures: dict[str, list[SlackAnswer | OSError]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.cap = 999  # at most this many messages a page, whatever the limit asked

    def say(self, ts: str, text: str = "", **fields: Any) -> None:
        self.messages.append(
            {"type": "message", "user": "U0MIRA", "text": text or f"question {ts}", "ts": ts}
            | fields
        )

    def reply(self, parent: str, ts: str, text: str = "") -> None:
        self.replies.setdefault(parent, []).append(
            {
                "type": "message",
                "user": "U0DEVON",
                "text": text or f"answer {ts}",
                "ts": ts,
                "thread_ts": parent,
            }
        )
        for message in self.messages:
            if message["ts"] == parent:
                message.update(
                    thread_ts=parent,
                    reply_count=len(self.replies[parent]),
                    latest_reply=max(r["ts"] for r in self.replies[parent]),
                )

    def call(self, method: str, params: Mapping[str, str | int]) -> SlackAnswer:
        self.calls.append((method, dict(params)))
        if self.failures.get(method):
            failure = self.failures[method].pop(0)
            if isinstance(failure, OSError):
                raise failure
            return failure
        if method == "auth.test":
            return SlackAnswer(200, {}, {"ok": True, "url": SITE, "team_id": "T0KESTREL"})
        oldest = ts_to_id(str(params["oldest"]))
        if method == "conversations.replies":  # oldest first, like Slack
            inside = [r for r in self.replies[str(params["ts"])] if ts_to_id(r["ts"]) > oldest]
        else:  # newest first
            latest = ts_to_id(str(params["latest"]))
            inside = sorted(
                (m for m in self.messages if oldest <= ts_to_id(m["ts"]) <= latest),
                key=lambda m: ts_to_id(m["ts"]),
                reverse=True,
            )
        skip = int(str(params.get("cursor", "0")))
        page = inside[skip : skip + min(int(params["limit"]), self.cap)]
        more = skip + len(page) < len(inside)
        body: dict[str, Any] = {"ok": True, "messages": page, "has_more": more}
        if more:
            body["response_metadata"] = {"next_cursor": str(skip + len(page))}
        return SlackAnswer(200, {}, body)


def fake_source(fake: FakeSlack, sleeps: list[float] | None = None, **settings: Any) -> Any:
    sink = sleeps if sleeps is not None else []
    return SlackSource(
        stream(**settings),
        web_factory=lambda: fake,
        salt=SALT,
        sleep=sink.append,
        clock=lambda: NOON,
    )


def ts_at(moment: datetime) -> str:
    return id_to_ts(int(moment.timestamp()) * 1_000_000)


def test_windows_fit_a_page_from_1970_to_a_busy_month() -> None:
    fake = FakeSlack()
    start = NOON - timedelta(days=30)
    for hour in range(0, 30 * 24, 6):  # a message every six hours
        fake.say(ts_at(start + timedelta(hours=hour, minutes=1)))
    batch = read_stream(fake_source(fake, page_size=2, thread_lookback_days=0), 0)
    assert len(batch.messages) == 120 and batch.interrupted is None
    assert [m.id for m in batch.messages] == sorted(m.id for m in batch.messages)
    history = [params for method, params in fake.calls if method == "conversations.history"]
    # every window was narrowed until one page held it: no request went to a second page,
    # so a run stopped by rate limits loses at most the window it was reading
    assert all("cursor" not in params for params in history)
    assert len(history) < 200


def test_a_burst_within_an_hour_is_read_page_by_page() -> None:
    fake = FakeSlack()
    burst = NOON - timedelta(hours=3)
    for minute in range(5):
        fake.say(ts_at(burst + timedelta(minutes=minute)))
    watermark = ts_to_id(ts_at(burst)) - 1
    batch = read_stream(fake_source(fake, page_size=2, thread_lookback_days=0), watermark)
    assert len(batch.messages) == 5
    history = [params for method, params in fake.calls if method == "conversations.history"]
    assert any("cursor" in params for params in history)


def test_a_server_capped_page_size_is_learned() -> None:
    fake = FakeSlack()
    fake.cap = 15  # what Slack serves an app distributed outside the Marketplace
    start = NOON - timedelta(days=10)
    for hour in range(10 * 24):
        fake.say(ts_at(start + timedelta(hours=hour, minutes=1)))
    batch = read_stream(fake_source(fake, thread_lookback_days=0), ts_to_id(ts_at(start)) - 1)
    assert len(batch.messages) == 240
    history = [params for method, params in fake.calls if method == "conversations.history"]
    # 16 pages hold it all; narrowing after a page that said "has_more" costs a few more,
    # but windows do not keep doubling past what one page can hold
    assert len(history) <= 30


def test_a_stop_keeps_the_finished_windows_and_drops_replies_ahead_of_them() -> None:
    fake = FakeSlack()
    day1 = NOON - timedelta(days=3)
    fake.say(ts_at(day1))
    fake.reply(ts_at(day1), ts_at(day1 + timedelta(days=2)))  # answered two days later
    fake.say(ts_at(day1 + timedelta(hours=5)))
    fake.say(ts_at(day1 + timedelta(days=1, hours=5)))
    sleeps: list[float] = []
    source = fake_source(fake, sleeps, max_rate_limit_wait_seconds=90, thread_lookback_days=0)
    watermark = ts_to_id(ts_at(day1)) - 1
    read = []
    pages = source.fetch(watermark)
    read.append(next(pages))
    read.append(next(pages))  # the first day's window is done
    limited = SlackAnswer(429, {"retry-after": "60"}, {"ok": False, "error": "ratelimited"})
    fake.failures["conversations.history"] = [limited, limited]
    with pytest.raises(StreamInterrupted, match="past this run's max_rate_limit_wait_seconds"):
        read.extend(pages)
    assert sleeps == [60.0]
    # the reply two days on was read with its parent but its window never finished
    assert [id_to_ts(m.id) for m in read] == [ts_at(day1), ts_at(day1 + timedelta(hours=5))]


def test_server_errors_are_retried_and_bad_tokens_are_one_line() -> None:
    fake = FakeSlack()
    fake.say(ts_at(NOON - timedelta(hours=2)))
    fake.failures["conversations.history"] = [
        SlackAnswer(503, {}, {"ok": False, "error": "service_unavailable"}),
        SlackAnswer(200, {}, {"ok": False, "error": "internal_error"}),
    ]
    sleeps: list[float] = []
    batch = read_stream(fake_source(fake, sleeps), ts_to_id(ts_at(NOON - timedelta(hours=3))))
    assert len(batch.messages) == 1 and sleeps == [1.0, 2.0]

    fake.failures["auth.test"] = [SlackAnswer(200, {}, {"ok": False, "error": "invalid_auth"})]
    with pytest.raises(SourceError, match=r"refused SLACK_BOT_TOKEN \(invalid_auth\)"):
        read_stream(fake_source(fake), 0)


def test_the_network_failing_keeps_what_was_read() -> None:
    fake = FakeSlack()
    fake.failures["auth.test"] = [TimeoutError("timed out")]
    batch = read_stream(fake_source(fake), 0)
    assert batch.messages == () and "cannot reach Slack (TimeoutError)" in str(batch.interrupted)


def test_a_long_thread_is_read_page_by_page() -> None:
    fake = FakeSlack()
    question = ts_at(NOON - timedelta(hours=5))
    fake.say(question)
    answers = [ts_at(NOON - timedelta(hours=4, minutes=minute)) for minute in (50, 40, 30, 20, 10)]
    for answer in answers:
        fake.reply(question, answer)
    source = fake_source(fake, page_size=2, thread_lookback_days=0)
    batch = read_stream(source, ts_to_id(question) - 1)
    assert [id_to_ts(m.id) for m in batch.messages] == [question, *answers]
    replies = [params for method, params in fake.calls if method == "conversations.replies"]
    assert [params.get("cursor") for params in replies] == [None, "2", "4"]


def test_threads_off_reads_no_replies() -> None:
    fake = FakeSlack()
    question = ts_at(NOON - timedelta(hours=3))
    fake.say(question)
    fake.reply(question, ts_at(NOON - timedelta(hours=2)))
    batch = read_stream(fake_source(fake, threads=False), ts_to_id(question) - 1)
    assert [id_to_ts(m.id) for m in batch.messages] == [question]
    assert all(method != "conversations.replies" for method, _ in fake.calls)


def test_build_source_is_lazy_and_needs_the_token() -> None:
    secrets = Secrets.from_env({"SLACK_BOT_TOKEN": "xoxb-1-2-abc"})
    assert secrets.values() == ["xoxb-1-2-abc"]  # masked in Actions, scrubbed from logs
    assert "xoxb" not in repr(secrets)
    source = build_source(stream(), secrets=Secrets(), salt=SALT)
    assert isinstance(source, SlackSource)  # nothing was requested yet
    with pytest.raises(SourceError, match="needs the SLACK_BOT_TOKEN secret"):
        list(source.fetch(0))


@pytest.mark.vcr(match_on=BODY)
def test_pythia_ingest_json_reads_a_slack_channel(
    secrets_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = sample_repo(tmp_path)
    config_path = repo / ".github/pythia.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    start = 1772445000000100  # the id in the question's link, .../p1772445000000100
    config["streams"].append(
        {
            "id": "slack-help",
            "kind": "slack",
            "channel": CHANNEL,
            "start": start,
            "thread_lookback_days": 0,
        }
    )
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    monkeypatch.setattr(slack, "utcnow", lambda: NOON)
    assert main(["ingest", "--repo", str(repo), "--json", "--stream", "slack-help"]) == 0
    (read,) = json.loads(capsys.readouterr().out)["streams"]
    assert read == {
        "stream": "slack-help",
        "watermark": None,
        "new_messages": 2,
        "threads": 1,
        "settled_threads": 1,
        "unsettled_threads": 0,
        "watermark_if_all_settled_recorded": 1772445600000200,
        "interrupted": None,
    }


@pytest.mark.vcr("test_pythia_ingest_json_reads_a_slack_channel.yaml")
def test_a_dry_run_proposes_from_a_slack_channel_like_from_telegram(
    secrets_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same pipeline as for Telegram: the thread's question and answer become a grounded,
    previewed proposal that quotes pseudonyms and links the Slack messages."""
    import harness
    from doubles import FunctionLLM, HashEmbedder
    from pythia.config import parse_config
    from pythia.ports import GenerateRequest
    from pythia.publish.dryrun import DryRunPublisher
    from pythia.state import StateStore

    def model(request: GenerateRequest) -> str:
        if request.stage == "classify":
            thread = request.prompt.split('<conversation id="', 1)[1].split('"', 1)[0]
            return json.dumps({"verdicts": [{
                "thread": thread, "category": "question", "doc_value": True,
                "summary": "kestrel run --explain shows which cache a task hit.",
                "reason": "asked and answered", "queries": ["cache hit explain"],
                "keywords": [], "confidence": 0.9,
            }]})  # fmt: skip
        return json.dumps({
            "change": True, "title": "Which cache a task hit", "summary": "s",
            "reasoning": "r", "confidence": 0.9, "evidence": [1, 2],
            "edits": [{"path": "docs/troubleshooting.md", "search": "## Debug logging\n",
                       "replace": "## Which cache a task hit\n\n`kestrel run --explain` prints "
                       "the cache key and whether it was a local or remote hit.\n\n"
                       "## Debug logging\n"}],
        })  # fmt: skip

    repo = sample_repo(tmp_path)
    config = yaml.safe_load((repo / ".github/pythia.yml").read_text(encoding="utf-8"))
    config["streams"] = [
        {"id": "slack-help", "kind": "slack", "channel": CHANNEL, "start": 1772445000000100,
         "thread_lookback_days": 0}
    ]  # fmt: skip
    parsed = parse_config(config)
    monkeypatch.setattr(slack, "utcnow", lambda: NOON)
    source = build_source(parsed.streams[0], secrets=Secrets.from_env(secrets_env), salt=SALT)
    space = harness.workspace(repo, parsed)
    embedder = HashEmbedder()
    harness.index_docs(space, tmp_path / "index.sqlite", embedder)
    out = tmp_path / "out"
    report = harness.run_pipeline(
        space,
        index_path=tmp_path / "index.sqlite",
        store=StateStore(tmp_path / "state"),
        llm=FunctionLLM(model),
        embedder=embedder,
        publisher=DryRunPublisher(out),
        sources=[source],
        dry_run=True,
        now=NOON,
    )
    assert report.streams[0].messages_read == 2 and len(report.proposals_previewed) == 1
    (body,) = [p.read_text() for p in out.glob("*/proposal.md")]
    assert "slack.com/archives/" in body and "user-" in body
    assert "--explain" in next(out.glob("*/change.patch")).read_text()
