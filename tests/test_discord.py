"""The Discord source: recorded HTTP in the REST v10 wire format, a fake API for the edges.

The cassettes under tests/cassettes/test_discord/ were written by hand from Discord's API
reference; a maintainer with a bot token re-records them with `--record-mode=once` against a
server laid out the same way (ids and texts then change, so do the expected values here).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from cassettes.record_sample import sample_repo
from pythia.app.cli import main
from pythia.app.sourcing import build_source
from pythia.config import DiscordStream, Secrets
from pythia.sources import SourceError, StreamInterrupted, discord, pseudonym, read_stream
from pythia.sources.discord import (
    DiscordAnswer,
    DiscordSource,
    make_http,
    snowflake_at,
    snowflake_time,
)

SALT = "test-salt"
GUILD = 1367289416908800002
HELP = 1378523440742400001  # a text channel
FORUM = 1378885828608000003
NOON = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
WATERMARK = 1477953611366399999  # 2026-03-02 09:00 UTC
# messages of #help and its threads, in id order
ASKED, JOINED, ANSWERED, BUILD, SAME, THANKS, PICTURE, LATE = (
    1477954869657604097,
    1477955121315848193,
    1477956127948812289,
    1477956631265296385,
    1477958644531220481,
    1477961161113624577,
    1477963677696028673,
    1477968710860832769,
)
OLD_THREAD = 1474405230182436865  # started 2026-02-20, answered again today
MIRA, DEVON, ASH, PAT = (
    712345678901234561,
    712345678901234563,
    712345678901234564,
    712345678901234565,
)


def stream(**settings: Any) -> DiscordStream:
    return DiscordStream.model_validate(
        {"kind": "discord", "id": "discord-help", "channel": HELP, **settings}
    )


def live_source(config: DiscordStream, sleeps: list[float]) -> DiscordSource:
    secrets = Secrets.from_env()
    return DiscordSource(
        config,
        http_factory=lambda: make_http(config, secrets=secrets),
        salt=SALT,
        sleep=sleeps.append,
        clock=lambda: NOON,
    )


def link(channel: int, message: int) -> str:
    return f"https://discord.com/channels/{GUILD}/{channel}/{message}"


@pytest.mark.vcr
def test_a_channel_and_its_threads_are_read_page_by_page(
    secrets_env: dict[str, str], vcr: Any
) -> None:
    sleeps: list[float] = []
    messages = list(live_source(stream(batch_size=2), sleeps).fetch(WATERMARK))
    # the join, the thread's starter notice and the picture without text are not read
    assert [m.id for m in messages] == [ASKED, ANSWERED, BUILD, SAME, THANKS, LATE]
    assert vcr.all_played  # channel, active and archived threads, 3 + 1 + 2 message pages
    asked, answered, build, same, thanks, late = messages

    assert asked.text.startswith("How do I point the remote cache at S3 behind a proxy?")
    assert asked.author == pseudonym(SALT, f"discord:{MIRA}")
    assert asked.sent_at == datetime(2026, 3, 2, 9, 5, tzinfo=timezone.utc)
    assert asked.permalink == link(HELP, ASKED)
    # a thread started from a message: the message and the thread share a key and a chain
    assert asked.thread_key == thanks.thread_key == f"thread:{ASKED}"
    assert thanks.reply_to == ASKED and thanks.permalink == link(ASKED, THANKS)
    # a reply, edited since: its current text, the person it mentions as their pseudonym
    assert answered.reply_to == ASKED
    assert answered.text == (
        f"@{asked.author} set `remote.proxy` in kestrel.toml; HTTPS_PROXY is only read by "
        "`kestrel fetch` :kestrel:"
    )
    assert build.is_bot and not answered.is_bot
    # a reply to a deleted message keeps the reference; grouping finds nothing to join
    assert same.reply_to == 1477950000000000000 and same.thread_key is None
    # an archived thread started last month, answered today
    assert late.thread_key == f"thread:{OLD_THREAD}" and late.reply_to == OLD_THREAD
    assert late.author == pseudonym(SALT, f"discord:{PAT}")
    # X-RateLimit-Remaining: 0 on the second page: the third waited X-RateLimit-Reset-After
    assert sleeps == [1.5]
    assert all("mira" not in m.author and "Mira" not in m.text for m in messages)


@pytest.mark.vcr
def test_a_forum_is_read_as_its_posts(secrets_env: dict[str, str], vcr: Any) -> None:
    post, answer = list(live_source(stream(channel=FORUM), []).fetch(WATERMARK))
    assert vcr.all_played  # no message list of the forum itself: it has none
    post_id = 1477972485734453249
    assert post.id == post_id and post.reply_to is None
    assert post.text == "Kestrel 3.1 fails on Windows with 'path too long' in the cache dir"
    assert answer.reply_to == post_id
    assert post.thread_key == answer.thread_key == f"thread:{post_id}"
    assert answer.permalink == link(post_id, answer.id)


@pytest.mark.vcr
def test_a_429_waits_its_retry_after(secrets_env: dict[str, str], vcr: Any) -> None:
    sleeps: list[float] = []
    messages = list(live_source(stream(threads=False), sleeps).fetch(WATERMARK))
    assert [m.id for m in messages] == [ASKED]
    assert sleeps == [0.8, 2.5]  # a global limit, then the route's
    assert vcr.all_played


@pytest.mark.vcr
def test_a_missing_permission_is_one_line(secrets_env: dict[str, str]) -> None:
    with pytest.raises(SourceError) as raised:
        read_stream(live_source(stream(), []), WATERMARK)
    assert str(raised.value) == (
        f"stream 'discord-help': the bot may not read channel {HELP} (Missing Access); "
        "give it View Channel and Read Message History there"
    )


@pytest.mark.vcr
def test_messages_without_content_mean_the_intent_is_off(secrets_env: dict[str, str]) -> None:
    with pytest.raises(SourceError) as raised:
        read_stream(live_source(stream(threads=False), []), WATERMARK)
    assert str(raised.value) == (
        "stream 'discord-help': Discord sent 3 of 3 messages without their text, so the bot "
        "lacks the Message Content intent; turn it on in the Developer Portal (Bot, Privileged "
        "Gateway Intents, Message Content Intent)"
    )


def test_snowflakes_are_times() -> None:
    assert snowflake_time(ASKED) == datetime(2026, 3, 2, 9, 5, tzinfo=timezone.utc)
    assert snowflake_at(datetime(2015, 1, 1, tzinfo=timezone.utc)) == 0
    assert snowflake_time(175928847299117063).year == 2016  # the example in Discord's docs
    assert snowflake_at(datetime(2084, 1, 1, tzinfo=timezone.utc)) < 2**63  # fits SQLite


def test_start_needs_no_request() -> None:
    fake = FakeDiscord()

    def start(value: str | int) -> int:
        return fake_source(fake, start=value).start_after()

    assert start("oldest") == 0
    assert start(ASKED) == ASKED - 1
    assert start("newest") == snowflake_at(NOON) - 1
    assert start("2026-03-02") == snowflake_at(datetime(2026, 3, 2, tzinfo=timezone.utc)) - 1
    assert fake.requests == []
    assert snowflake_at(datetime(2026, 3, 2, tzinfo=timezone.utc)) - 1 < ASKED
    assert date(2026, 3, 2) == snowflake_time(start("2026-03-02") + 1).date()


class FakeDiscord:
    """Answers GETs like Discord's API for one guild: channels, threads, messages."""

    def __init__(self) -> None:
        self.channels: dict[int, dict[str, Any]] = {
            HELP: {"id": str(HELP), "type": 0, "guild_id": str(GUILD), "name": "help"}
        }
        self.messages: dict[int, list[dict[str, Any]]] = {HELP: []}
        # answers (or errors) given before the real ones, by path or "path?after=id"
        self.failures: dict[str, list[DiscordAnswer | OSError]] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.archived: list[dict[str, Any]] = []  # newest archive first
        self.archive_page = 2  # threads per archived page (Discord may serve fewer than asked)

    def add(self, channel: int, message_id: int, **fields: Any) -> None:
        self.messages.setdefault(channel, []).append(
            {
                "id": str(message_id),
                "channel_id": str(channel),
                "type": 0,
                "content": f"message {message_id} with a question",
                "author": {"id": str(MIRA), "username": "mira_k"},
                "attachments": [],
                "embeds": [],
                **fields,
            }
        )

    def thread(self, thread_id: int, *, last: int) -> None:
        self.channels[thread_id] = {
            "id": str(thread_id),
            "type": 11,
            "guild_id": str(GUILD),
            "parent_id": str(HELP),
            "last_message_id": str(last),
            "thread_metadata": {"archived": False},
        }

    def get(self, path: str, params: Mapping[str, str | int]) -> DiscordAnswer:
        self.requests.append((path, dict(params)))
        for key in (f"{path}?after={params.get('after')}", path):
            if self.failures.get(key):
                failure = self.failures[key].pop(0)
                if isinstance(failure, OSError):
                    raise failure
                return failure
        parts = path.strip("/").split("/")
        if parts[0] == "guilds":
            threads = [c for c in self.channels.values() if c["type"] == 11]
            return DiscordAnswer(200, {}, {"threads": threads, "members": []})
        channel = int(parts[1])
        if parts[-1] == "public":
            before = str(params.get("before", "9999"))
            older = [t for t in self.archived if t["thread_metadata"]["archive_timestamp"] < before]
            page = older[: self.archive_page]
            body = {"threads": page, "members": [], "has_more": len(older) > len(page)}
            return DiscordAnswer(200, {}, body)
        if parts[-1] == "messages":
            after = int(params["after"])
            newer = [m for m in self.messages.get(channel, []) if int(m["id"]) > after]
            page = sorted(newer, key=lambda m: int(m["id"]))[: int(params["limit"])]
            return DiscordAnswer(200, {}, list(reversed(page)))  # newest first, like Discord
        return DiscordAnswer(200, {}, self.channels[channel])


def fake_source(fake: FakeDiscord, sleeps: list[float] | None = None, **settings: Any) -> Any:
    sink = sleeps if sleeps is not None else []
    return DiscordSource(
        stream(**settings),
        http_factory=lambda: fake,
        salt=SALT,
        sleep=sink.append,
        clock=lambda: NOON,
    )


TOO_MANY = DiscordAnswer(429, {}, {"message": "You are being rate limited.", "retry_after": 40})


def test_rate_limits_past_the_budget_keep_only_what_is_complete() -> None:
    fake = FakeDiscord()
    fake.thread(THANKS, last=LATE)
    for message_id in (ASKED, ANSWERED, BUILD, SAME):
        fake.add(HELP, message_id)
    fake.add(THANKS, THANKS + 1)
    fake.add(THANKS, LATE)
    # the second page of #help waits once (40 s); a second wait would pass the 60 s budget
    fake.failures[f"/channels/{HELP}/messages?after={BUILD}"] = [TOO_MANY, TOO_MANY]
    sleeps: list[float] = []
    source = fake_source(fake, sleeps, batch_size=3, max_rate_limit_wait_seconds=60)
    read = []
    with pytest.raises(StreamInterrupted, match="past this run's max_rate_limit_wait_seconds"):
        read.extend(source.fetch(WATERMARK))
    assert sleeps == [40.0]
    # #help was read up to BUILD and the unread thread starts later: up to BUILD is complete,
    # and nothing past it (the thread's own messages) is passed on
    assert [m.id for m in read] == [ASKED, ANSWERED, BUILD]


def test_an_unread_thread_bounds_what_is_complete() -> None:
    fake = FakeDiscord()
    fake.thread(ANSWERED, last=LATE)  # a thread started at ANSWERED, after ASKED
    fake.add(HELP, ASKED)
    fake.add(HELP, SAME)
    fake.add(ANSWERED, THANKS)
    fake.failures[f"/channels/{ANSWERED}/messages"] = [ConnectionResetError("reset by peer")]
    batch = read_stream(fake_source(fake), WATERMARK)
    # SAME comes after the thread's start, and the thread could not be read
    assert [m.id for m in batch.messages] == [ASKED]
    assert batch.interrupted and "cannot reach Discord (ConnectionResetError)" in batch.interrupted


def test_archived_threads_are_paged_back_to_the_watermark() -> None:
    fake = FakeDiscord()
    for day in (28, 27, 26, 25, 24):  # one thread a day, each archived that evening
        started = snowflake_at(datetime(2026, 2, day, 9, tzinfo=timezone.utc))
        fake.archived.append(
            {
                "id": str(started),
                "type": 11,
                "parent_id": str(HELP),
                "last_message_id": str(started + 1),
                "thread_metadata": {
                    "archived": True,
                    "archive_timestamp": f"2026-02-{day}T20:00:00.000000+00:00",
                },
            }
        )
        fake.add(started, started + 1)
    watermark = snowflake_at(datetime(2026, 2, 26, 12, tzinfo=timezone.utc))
    batch = read_stream(fake_source(fake), watermark)
    # the 27th's and 28th's threads have new messages; the 26th's was archived after the
    # watermark but has nothing new; no third page is asked for, as the second reached
    # a thread archived before the watermark
    assert [snowflake_time(m.id).day for m in batch.messages] == [27, 28]
    listed = [params for path, params in fake.requests if path.endswith("/archived/public")]
    assert [params.get("before") for params in listed] == [
        None,
        "2026-02-27T20:00:00.000000+00:00",
    ]


def test_a_server_error_is_retried_with_backoff() -> None:
    fake = FakeDiscord()
    fake.add(HELP, ASKED)
    fake.failures[f"/channels/{HELP}/messages"] = [
        DiscordAnswer(502, {}, None),
        DiscordAnswer(503, {}, None),
    ]
    sleeps: list[float] = []
    batch = read_stream(fake_source(fake, sleeps, threads=False), WATERMARK)
    assert [m.id for m in batch.messages] == [ASKED] and sleeps == [1.0, 2.0]


def test_the_last_minute_is_left_for_the_next_run() -> None:
    fake = FakeDiscord()
    fake.add(HELP, ASKED)
    fake.add(HELP, snowflake_at(NOON) - 5)  # sent a moment ago
    batch = read_stream(fake_source(fake, threads=False), WATERMARK)
    assert [m.id for m in batch.messages] == [ASKED]


def test_a_few_messages_without_text_are_skipped_not_an_error() -> None:
    fake = FakeDiscord()
    fake.add(HELP, ASKED)
    fake.add(HELP, ANSWERED)
    fake.add(HELP, SAME, content="")  # a mention of the bot, or a picture with the intent off
    fake.add(HELP, BUILD, content="", sticker_items=[{"id": "1", "name": "wave"}])
    batch = read_stream(fake_source(fake, threads=False), WATERMARK)
    assert [m.id for m in batch.messages] == [ASKED, ANSWERED]


def test_a_forwarded_message_reads_what_was_forwarded() -> None:
    fake = FakeDiscord()
    fake.add(
        HELP,
        ASKED,
        message_reference={"type": 1, "channel_id": "1", "message_id": "2"},
        message_snapshots=[{"message": {"content": "Forwarded: the cache moved in 3.0"}}],
        flags=1 << 14,
        content="",
    )
    (message,) = read_stream(fake_source(fake, threads=False), WATERMARK).messages
    assert message.text == "Forwarded: the cache moved in 3.0" and message.reply_to is None


def test_a_bad_token_and_an_unknown_channel_are_one_line_each() -> None:
    fake = FakeDiscord()
    channel = f"/channels/{HELP}"
    fake.failures[channel] = [DiscordAnswer(401, {}, {"message": "401: Unauthorized", "code": 0})]
    with pytest.raises(SourceError, match=r"refused DISCORD_BOT_TOKEN \(401: Unauthorized\)"):
        read_stream(fake_source(fake), WATERMARK)
    fake.failures[channel] = [DiscordAnswer(404, {}, {"message": "Unknown Channel", "code": 10003})]
    with pytest.raises(SourceError, match="check the id and that the bot was added"):
        read_stream(fake_source(fake), WATERMARK)


def test_a_voice_channel_is_refused() -> None:
    fake = FakeDiscord()
    fake.channels[HELP]["type"] = 2
    with pytest.raises(SourceError, match="is not a text, announcement or forum channel"):
        read_stream(fake_source(fake), WATERMARK)


def test_build_source_is_lazy_and_needs_the_token() -> None:
    secrets = Secrets.from_env({"DISCORD_BOT_TOKEN": "MTA5.discord-token"})
    assert secrets.values() == ["MTA5.discord-token"]  # masked in Actions, scrubbed from logs
    assert "MTA5" not in repr(secrets)
    source = build_source(stream(), secrets=Secrets(), salt=SALT)
    assert isinstance(source, DiscordSource)  # nothing was requested yet
    with pytest.raises(SourceError, match="needs the DISCORD_BOT_TOKEN secret"):
        list(source.fetch(WATERMARK))


@pytest.mark.vcr
def test_pythia_ingest_json_reads_a_discord_channel(
    secrets_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = sample_repo(tmp_path)
    config_path = repo / ".github/pythia.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["streams"].append(
        {"id": "discord-help", "kind": "discord", "channel": HELP, "threads": False, "start": ASKED}
    )
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    monkeypatch.setattr(discord, "utcnow", lambda: NOON)
    args = ["ingest", "--repo", str(repo), "--json", "--stream", "discord-help"]
    assert main(args) == 0
    (read,) = json.loads(capsys.readouterr().out)["streams"]
    assert read == {
        "stream": "discord-help",
        "watermark": None,
        "new_messages": 2,
        "threads": 1,
        "settled_threads": 1,
        "unsettled_threads": 0,
        "watermark_if_all_settled_recorded": ANSWERED,
        "interrupted": None,
    }


@pytest.mark.vcr("test_pythia_ingest_json_reads_a_discord_channel.yaml")
def test_a_dry_run_proposes_from_a_discord_channel_like_from_telegram(
    secrets_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same pipeline as for Telegram: the channel's question and answer become a grounded,
    previewed proposal that quotes pseudonyms and links the Discord messages."""
    import harness
    from doubles import FunctionLLM, HashEmbedder
    from pythia.ports import GenerateRequest
    from pythia.publish.dryrun import DryRunPublisher
    from pythia.state import StateStore

    def model(request: GenerateRequest) -> str:
        if request.stage == "classify":
            thread = request.prompt.split('<conversation id="', 1)[1].split('"', 1)[0]
            return json.dumps({"verdicts": [{
                "thread": thread, "category": "troubleshooting", "doc_value": True,
                "summary": "The remote cache ignores HTTPS_PROXY; remote.proxy sets it.",
                "reason": "a maintainer answered", "queries": ["remote cache proxy"],
                "keywords": [], "confidence": 0.9,
            }]})  # fmt: skip
        return json.dumps({
            "change": True, "title": "Remote cache behind a proxy", "summary": "s",
            "reasoning": "r", "confidence": 0.9, "evidence": [1, 2],
            "edits": [{"path": "docs/troubleshooting.md", "search": "## Debug logging\n",
                       "replace": "## Behind a proxy\n\nSet `remote.proxy` in `kestrel.toml`: "
                       "`HTTPS_PROXY` is only read by `kestrel fetch`.\n\n## Debug logging\n"}],
        })  # fmt: skip

    repo = sample_repo(tmp_path)
    config = yaml.safe_load((repo / ".github/pythia.yml").read_text(encoding="utf-8"))
    config["streams"] = [
        {"id": "discord-help", "kind": "discord", "channel": HELP, "threads": False, "start": ASKED}
    ]
    from pythia.config import parse_config

    parsed = parse_config(config)
    monkeypatch.setattr(discord, "utcnow", lambda: NOON)
    source = build_source(
        parsed.streams[0], secrets=Secrets.from_env(secrets_env), salt=SALT
    )
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
    assert "https://discord.com/channels/" in body and "user-" in body
    assert "remote.proxy" in next(out.glob("*/change.patch")).read_text()
