"""The Discourse source: recorded HTTP for the wire format (hand-written in the documented
shapes; `--record-mode=once` re-records them against the forum named here, with
DISCOURSE_API_KEY and DISCOURSE_API_USERNAME for a private one), an in-memory forum for the
rest."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from forum_fakes import FakeDiscourse
from pythia.app.sourcing import build_source
from pythia.config import DiscourseStream, Secrets
from pythia.sources import SourceError, pseudonym, read_stream
from pythia.sources.discourse import DiscourseSource, plain_text
from pythia.sources.forum import forum_id

SITE = "https://discuss.kestrel.dev"
SALT = "test-salt"
MARCH_1 = forum_id(datetime(2026, 3, 1, tzinfo=timezone.utc), 0)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stream(**settings: Any) -> DiscourseStream:
    return DiscourseStream.model_validate(
        {"kind": "discourse", "id": "forum", "site": SITE, **settings}
    )


def live(config: DiscourseStream, sleeps: list[float] | None = None) -> DiscourseSource:
    secrets = Secrets.from_env()
    key, user = secrets.discourse_api_key, secrets.discourse_api_username
    return DiscourseSource(
        config,
        salt=SALT,
        api_key=key.get_secret_value() if key else None,
        api_username=user.get_secret_value() if user else None,
        sleep=(sleeps if sleeps is not None else []).append,
    )


@pytest.mark.vcr
def test_categories_pages_and_posts_in_chunks(vcr: Any) -> None:
    config = stream(categories=["Support"], trusted_authors=["mira"])
    messages = list(live(config).fetch(MARCH_1))
    assert vcr.all_played  # site, two list pages, topic 298 and the rest of its posts, 311
    assert [(m.thread_key, m.text[:18]) for m in messages] == [
        ("topic:298", "Remote cache behin"),  # before the watermark: context
        ("topic:298", "Same here, on Wind"),
        ("topic:298", "Set `HTTPS_PROXY`,"),
        ("topic:298", "Thanks for marking"),
        ("topic:311", "Where does the cac"),
        ("topic:311", "It moved to `~/.ca"),
    ]
    question, same, fix, bot, other, moved = messages
    assert question.text.startswith("Remote cache behind a proxy\n\nSince 3.0 `kestrel run`")
    assert fix.is_answer and fix.trusted and not same.is_answer and not question.is_answer
    assert fix.id == forum_id(at("2026-03-05T10:00:00Z"), 4388)
    assert fix.reply_to == question.id and bot.reply_to == fix.id and same.reply_to == question.id
    assert fix.permalink == f"{SITE}/t/remote-cache-behind-a-proxy/298/4"
    assert bot.is_bot and not fix.is_bot
    assert fix.author == pseudonym(SALT, "discourse:discuss.kestrel.dev:7")
    assert fix.handle == "mira" and moved.trusted and not other.trusted
    assert moved.id == forum_id(at("2026-03-08T09:30:12Z"), 4520)
    # hidden, deleted by its author, deleted, an automatic bump and a whisper are left out
    texts = " ".join(m.text for m in messages)
    assert "proxies.example" not in texts and "deleted by author" not in texts
    assert "off and on" not in texts and "Staff only" not in texts


@pytest.mark.vcr
def test_rate_limit_answers_are_waited_out(vcr: Any) -> None:
    sleeps: list[float] = []
    batch = read_stream(live(stream(), sleeps), MARCH_1)
    assert sleeps == [7.0, 3.0]  # the Retry-After header, then the body's extras.wait_seconds
    assert [m.text[:22] for m in batch.messages] == [
        "kestrel watch ignores ",
        "Expected until 3.1; pa",
    ]
    assert batch.interrupted is None and vcr.all_played


@pytest.mark.vcr
def test_a_private_forum_without_a_key_says_what_to_set() -> None:
    with pytest.raises(SourceError, match=r"refused access \(403\); for a private forum set"):
        read_stream(live(stream()), MARCH_1)


@pytest.mark.vcr
def test_tags_and_a_malformed_answer(vcr: Any) -> None:
    messages = list(live(stream(tags=["docs", "how-to"])).fetch(MARCH_1))
    assert vcr.all_played  # the topic is in both tags and read once
    # the topic's accepted_answer names post "2" (a string) and post 2 says "yes": no mark
    assert [(m.text[:20], m.is_answer) for m in messages] == [
        ("JSON output for kest", False),
        ("`kestrel list --form", False),
        ("And `--format yaml` ", False),
    ]
    assert messages[2].reply_to == messages[0].id  # it answers post 9, which is not there


# --- without the network ----------------------------------------------------------------------


def fake_source(fake: FakeDiscourse, **settings: Any) -> DiscourseSource:
    return DiscourseSource(
        stream(**settings),
        salt=SALT,
        session_factory=lambda: fake,  # type: ignore[arg-type,return-value]
    )


def test_a_topic_is_one_thread_however_long_its_silences() -> None:
    fake = FakeDiscourse()
    day = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
    fake.topic(1, title="Slow", raw="Why is `kestrel run` slow on NFS?", user=3, at=day)
    for n, days in enumerate((2, 9, 30), 2):
        fake.post(1, raw=f"reply {n}", user=4, at=day.replace(day=days), reply_to=None)
    messages = list(fake_source(fake).fetch(0))
    assert len(messages) == 4  # two came through /t/1/posts.json
    assert {m.reply_to for m in messages[1:]} == {messages[0].id}
    assert "/t/1/posts.json" in fake.paths


def test_newest_starts_after_the_latest_post() -> None:
    fake = FakeDiscourse()
    when = datetime(2026, 3, 5, 8, 0, 30, tzinfo=timezone.utc)
    fake.topic(1, title="t", raw="b", user=3, at=when)
    assert fake_source(fake).start_after() == forum_id(when, 999_999)


def test_credentials_go_in_headers_and_come_in_pairs() -> None:
    sent: list[dict[str, str]] = []

    class Recording(FakeDiscourse):
        def request(self, method: str, url: str, **kwargs: Any) -> Any:
            sent.append(kwargs["headers"])
            return super().request(method, url, **kwargs)

    source = DiscourseSource(
        stream(),
        salt=SALT,
        api_key="k",
        api_username="pythia-bot",
        session_factory=Recording,  # type: ignore[arg-type]
    )
    list(source.fetch(0))
    assert sent[0]["Api-Key"] == "k" and sent[0]["Api-Username"] == "pythia-bot"
    half = build_source(
        stream(),
        secrets=Secrets(discourse_api_key="k"),
        salt=SALT,  # type: ignore[arg-type]
    )
    with pytest.raises(SourceError, match="set both DISCOURSE_API_KEY and DISCOURSE_API_USERNAME"):
        read_stream(half, 0)


def test_an_unknown_category_names_the_known_ones() -> None:
    class Site(FakeDiscourse):
        def request(self, method: str, url: str, **kwargs: Any) -> Any:
            from forum_fakes import response

            return response({"categories": [{"id": 5, "name": "Support", "slug": "support"}]})

    source = DiscourseSource(stream(categories=["help"]), salt=SALT, session_factory=Site)  # type: ignore[arg-type]
    with pytest.raises(SourceError, match=r"no category 'help' on .* \(there are: support\)"):
        source.start_after()


def test_cooked_html_becomes_text_when_raw_is_missing() -> None:
    assert plain_text("<p>Use <code>--poll</code> &amp; wait</p><p>Next</p>") == (
        "Use --poll & wait\nNext"
    )
