"""The GitHub Discussions source: recorded GraphQL for the wire format (hand-written in the
documented shapes; `--record-mode=once` with a real GITHUB_TOKEN re-records them against the
repository named here), an in-memory Discussions API for first runs and setup errors."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from forum_fakes import FakeGitHub
from pythia.app.sourcing import build_source
from pythia.config import GitHubDiscussionsStream, Secrets
from pythia.sources import SourceError, pseudonym, read_stream
from pythia.sources import github_discussions as gd
from pythia.sources.forum import forum_id
from pythia.sources.github_discussions import GitHubDiscussionsSource, graphql_url

REPOSITORY = "kestrel-dev/kestrel"
SALT = "test-salt"
MARCH_1 = forum_id(datetime(2026, 3, 1, tzinfo=timezone.utc), 0)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def stream(**settings: Any) -> GitHubDiscussionsStream:
    return GitHubDiscussionsStream.model_validate(
        {"kind": "github-discussions", "id": "qa", **settings}
    )


def live(
    config: GitHubDiscussionsStream, sleeps: list[float] | None = None
) -> GitHubDiscussionsSource:
    secrets = Secrets.from_env()
    assert secrets.github_token is not None
    return GitHubDiscussionsSource(
        config,
        token=secrets.github_token.get_secret_value(),
        salt=SALT,
        repository=REPOSITORY,
        sleep=(sleeps if sleeps is not None else []).append,
        page_size=2,
    )


@pytest.mark.vcr
def test_paging_reads_every_discussion_comment_and_reply(
    secrets_env: dict[str, str], vcr: Any
) -> None:
    config = stream(categories=["q&a"], trusted_authors=["Mira-K"])
    messages = list(live(config).fetch(MARCH_1))
    assert vcr.all_played  # categories, two list pages, #9 in two pages, #12, #12's replies
    by_text = {m.text.split()[0]: m for m in messages}
    assert [m.text[:24] for m in messages] == [
        "Remote cache times out b",  # #9 opened before the watermark: context
        "Same here on 2.9, for wh",
        "Where does the cache liv",
        "Thanks! Is the old folde",
        "Yes: `kestrel cache prun",
        "This discussion was link",
        "Confirmed on Linux and m",
        "Set `HTTPS_PROXY`, and i",
        "That did it, thanks! The",
        "If the cache host is int",
        "Since 3.0 it is `~/.cach",  # the answer, chosen on March 6
    ]
    opening, answer = messages[2], messages[-1]
    assert opening.id == forum_id(at("2026-03-03T11:05:00Z"), 7790412)
    assert opening.text.startswith("Where does the cache live in 3.0?\n\nAfter upgrading")
    assert opening.thread_key == answer.thread_key == "discussion:12"
    assert opening.permalink == f"https://github.com/{REPOSITORY}/discussions/12"
    assert answer.is_answer and answer.trusted and answer.reply_to == opening.id
    assert answer.id == forum_id(at("2026-03-06T09:00:00Z"), 10318444)
    assert answer.sent_at == at("2026-03-03T12:30:00Z")
    assert answer.permalink == (
        f"https://github.com/{REPOSITORY}/discussions/12#discussioncomment-10318444"
    )
    thanks, prune = by_text["Thanks!"], by_text["Yes:"]
    assert thanks.reply_to == prune.reply_to == answer.id  # replies answer their comment
    assert by_text["This"].is_bot and not answer.is_bot
    assert by_text["If"].reply_to == messages[0].id  # its comment was deleted: the opening
    assert "Cheap" not in " ".join(m.text for m in messages)  # minimized as spam
    assert opening.author == pseudonym(SALT, "github:8812004") and opening.handle == "carol-s"
    assert [m.id for m in messages] == sorted(m.id for m in messages)
    assert sum(m.id > MARCH_1 for m in messages) == 9


@pytest.mark.vcr
def test_rate_limits_are_waited_out(secrets_env: dict[str, str], vcr: Any) -> None:
    sleeps: list[float] = []
    batch = read_stream(live(stream(), sleeps), MARCH_1)
    assert sleeps == [45.0, 30.0]  # the primary limit until x-ratelimit-reset, then retry-after
    assert [m.text[:20] for m in batch.messages] == ["kestrel watch ignore", "Yes until 3.1; pass "]
    assert batch.interrupted is None and vcr.all_played


@pytest.mark.vcr
def test_a_token_without_discussions_read_says_which_permission(
    secrets_env: dict[str, str],
) -> None:
    with pytest.raises(SourceError, match=r"add `discussions: read` to the workflow's"):
        read_stream(live(stream(categories=["Q&A"])), MARCH_1)


@pytest.mark.vcr
def test_a_malformed_answer_marks_only_what_it_can_find(
    secrets_env: dict[str, str], vcr: Any
) -> None:
    messages = list(live(stream()).fetch(MARCH_1))
    assert vcr.all_played
    # the discussion's answer points at a deleted comment, a comment says it is the answer
    # without a time it was chosen, and a comment without a usable date is left out
    assert [(m.text[:20], m.is_answer) for m in messages] == [
        ("Is there a JSON outp", False),
        ("`kestrel list --form", True),
    ]
    assert messages[1].id == forum_id(at("2026-03-08T10:20:00Z"), 10420001)


# --- without the network ----------------------------------------------------------------------


def fake_source(fake: FakeGitHub, **settings: Any) -> GitHubDiscussionsSource:
    return GitHubDiscussionsSource(
        stream(**settings),
        token="t",
        salt=SALT,
        repository=REPOSITORY,
        session_factory=lambda: fake,  # type: ignore[arg-type,return-value]
        page_size=2,
    )


def test_newest_starts_after_the_latest_activity_and_dates_need_no_request() -> None:
    fake = FakeGitHub()
    when = datetime(2026, 3, 5, 8, 0, 30, tzinfo=timezone.utc)
    fake.discuss(3, title="t", body="b", login="ann", at=when)
    assert fake_source(fake).start_after() == forum_id(when, 999_999)
    batch = read_stream(fake_source(fake, start="newest"), None)
    assert batch.after == forum_id(when, 999_999)
    assert all(m.id <= batch.after for m in batch.messages)  # context at most, nothing new
    fake.queries.clear()
    assert (
        fake_source(fake, start="2026-03-05").start_after()
        == forum_id(datetime(2026, 3, 5, tzinfo=timezone.utc), 0) - 1
    )
    assert fake.queries == []


def test_a_discussion_deleted_after_it_was_listed_is_skipped() -> None:
    class Deleting(FakeGitHub):
        def request(self, method: str, url: str, **kwargs: Any) -> Any:
            if kwargs["json"]["query"] == gd.DISCUSSION:
                self.discussions.pop(1, None)
            return super().request(method, url, **kwargs)

    fake = Deleting()
    when = datetime(2026, 3, 5, tzinfo=timezone.utc)
    fake.discuss(1, title="Gone", body="soon deleted", login="ann", at=when)
    fake.discuss(2, title="Kept", body="still here", login="bob", at=when)
    assert [m.text for m in fake_source(fake).fetch(0)] == ["Kept\n\nstill here"]


def test_only_the_configured_categories_are_read() -> None:
    fake = FakeGitHub()
    when = datetime(2026, 3, 5, tzinfo=timezone.utc)
    fake.discuss(1, title="Q", body="in Q&A", login="ann", at=when)
    fake.discuss(2, title="G", body="in General", login="ann", at=when, category="General")
    texts = [m.text for m in fake_source(fake, categories=["Q&A"]).fetch(0)]
    assert texts == ["Q\n\nin Q&A"]
    with pytest.raises(SourceError, match=r"no discussion category 'Polls' .* General, Q&A"):
        list(fake_source(fake, categories=["Polls"]).fetch(0))


def test_setup_problems_are_one_sentence_each() -> None:
    config = stream()
    source = build_source(config, secrets=Secrets(), salt=SALT, repository=REPOSITORY)
    with pytest.raises(SourceError, match=r"needs GITHUB_TOKEN .* `discussions: read`"):
        read_stream(source, 0)
    nowhere = build_source(config, secrets=Secrets(github_token="t"), salt=SALT)  # type: ignore[arg-type]
    with pytest.raises(SourceError, match="does not know which repository to read"):
        read_stream(nowhere, 0)
    with pytest.raises(ValueError, match="is not owner/name"):
        stream(repository="kestrel")


def test_the_graphql_endpoint_follows_github_api_url() -> None:
    assert graphql_url("") == "https://api.github.com/graphql"
    assert graphql_url("https://api.github.com") == "https://api.github.com/graphql"
    assert graphql_url("https://ghe.example.com/api/v3/") == "https://ghe.example.com/api/graphql"
