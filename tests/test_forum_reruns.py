"""Forums across runs: the real forum sources over in-memory forums that change between runs,
through the whole pipeline. A topic is judged once, judged again when it gains a post (or, on
GitHub, when an answer is chosen), with what was recorded as context, and never proposed twice.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import harness
from doubles import FunctionLLM, HashEmbedder, MemoryPublisher
from forum_fakes import FakeDiscourse, FakeGitHub
from kestrel_model import answer
from pythia.config import Config, parse_config
from pythia.models import RunReport
from pythia.sources.discourse import DiscourseSource
from pythia.sources.forum import forum_id, time_of
from pythia.sources.github_discussions import GitHubDiscussionsSource
from pythia.state import StateStore

FIXTURES = Path(__file__).parent / "fixtures"
DAY = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
QUESTION = "The remote cache hangs behind our corporate proxy. Any idea?"
GUESS = "Did you try restarting the machine? That fixes most things here."
FIX = (
    "Since 2.3 it honours HTTPS_PROXY and NO_PROXY; on certificate verify failed point "
    "KESTREL_CA_BUNDLE at the corporate CA; the proxy then works."
)


class Forum:
    """A docs repository whose one stream is a forum, run again and again with doubles."""

    def __init__(self, root: Path, stream: dict[str, Any], **publish: Any) -> None:
        shutil.copytree(FIXTURES / "sample-docs/docs", root / "docs")
        self.root = root
        self.config: Config = parse_config(
            {
                "project": {"name": "Kestrel"},
                "docs": {"root": "docs"},
                "streams": [{"id": "qa", "start": "oldest", **stream}],
                "privacy": {"salt": "test-salt"},
                "publish": publish,
            }
        )
        self.embedder = HashEmbedder()
        self.index = root / ".pythia/index.sqlite"
        harness.index_docs(harness.workspace(root, self.config), self.index, self.embedder)
        self.store = StateStore(root / ".pythia/state")
        self.publisher = MemoryPublisher()
        self.llm = FunctionLLM(answer)

    def run(self, source: Any, *, now: datetime) -> RunReport:
        return harness.run_pipeline(
            harness.workspace(self.root, self.config),
            index_path=self.index,
            store=self.store,
            llm=self.llm,
            embedder=self.embedder,
            publisher=self.publisher,
            sources=[source],
            now=now,
        )

    @property
    def watermark(self) -> int | None:
        return self.store.load_stream("qa").watermark


# --- GitHub Discussions -----------------------------------------------------------------------


def github(fake: FakeGitHub, forum: Forum) -> GitHubDiscussionsSource:
    stream = forum.config.streams[0]
    assert stream.kind == "github-discussions"
    return GitHubDiscussionsSource(
        stream,
        token="test-github-token",
        salt="test-salt",
        repository="kestrel/docs",
        session_factory=lambda: fake,  # type: ignore[arg-type,return-value]
        page_size=2,
    )


@pytest.fixture
def discussions(tmp_path: Path) -> tuple[FakeGitHub, Forum]:
    fake = FakeGitHub()
    fake.discuss(1, title="Cache behind a proxy", body=QUESTION, login="ann", at=DAY)
    fake.comment(1, body=GUESS, login="bob", at=DAY + timedelta(minutes=20))
    stream = {"kind": "github-discussions", "categories": ["Q&A"], "trusted_authors": ["mira"]}
    return fake, Forum(tmp_path / "repo", stream, require_answer=True)


def test_an_answer_chosen_after_settling_makes_the_discussion_judged_again(
    discussions: tuple[FakeGitHub, Forum],
) -> None:
    fake, forum = discussions
    first = forum.run(github(fake, forum), now=DAY + timedelta(days=1))
    assert first.classified == {"troubleshooting": 1}
    opening = forum_id(DAY, fake.discussions[1]["databaseId"])
    assert first.skipped == [(f"qa:{opening}", "not answered yet (publish.require_answer)")]
    assert forum.publisher.prs == {}
    assert time_of(forum.watermark or 0) == DAY + timedelta(minutes=20)

    # A day later Mira answers and the asker marks it; the rest is days old.
    fix = fake.comment(1, body=FIX, login="mira", at=DAY + timedelta(days=1, hours=2))
    fake.choose_answer(1, fix, DAY + timedelta(days=2))
    second = forum.run(github(fake, forum), now=DAY + timedelta(days=3))
    assert second.streams[0].messages_read == 1  # the question and the guess are context
    assert len(second.proposals_opened) == 1
    [proposal] = forum.publisher.prs.values()
    assert proposal.answered == "accepted"
    classify = [r for r in forum.llm.requests if r.stage == "classify"][-1]
    assert (
        'role="context"' in classify.prompt
        and 'answer="accepted" maintainer="true"' in classify.prompt
    )

    # Nothing new: nothing judged, nothing proposed again.
    calls = len(forum.llm.requests)
    third = forum.run(github(fake, forum), now=DAY + timedelta(days=4))
    assert third.streams[0].messages_read == 0 and len(forum.llm.requests) == calls

    # An edit moves the discussion's activity but adds no message: it is read, not judged.
    fake.edit(1, fix, FIX + " (edited: also NO_PROXY)", DAY + timedelta(days=4, hours=1))
    fourth = forum.run(github(fake, forum), now=DAY + timedelta(days=5))
    assert fourth.streams[0].messages_read == 0 and len(forum.llm.requests) == calls
    assert forum.publisher.calls == 1


def test_a_new_comment_is_judged_with_the_discussion_as_context_and_adds_evidence(
    discussions: tuple[FakeGitHub, Forum],
) -> None:
    fake, forum = discussions
    fix = fake.comment(1, body=FIX, login="mira", at=DAY + timedelta(minutes=40))
    forum.run(github(fake, forum), now=DAY + timedelta(days=1))
    assert len(forum.publisher.prs) == 1  # answered by a maintainer
    [proposal] = forum.publisher.prs.values()
    assert proposal.answered == "maintainer"

    fake.comment(
        1,
        body="Same proxy trouble on our CI; the KESTREL_CA_BUNDLE tip fixed it.",
        login="cy",
        at=DAY + timedelta(days=2),
        reply_to=fix,
    )
    later = forum.run(github(fake, forum), now=DAY + timedelta(days=3))
    assert later.streams[0].messages_read == 1
    assert later.proposals_updated and not later.proposals_opened  # evidence on the open PR
    assert len(forum.publisher.prs) == 1


# --- Discourse --------------------------------------------------------------------------------


def discourse(fake: FakeDiscourse, forum: Forum) -> DiscourseSource:
    stream = forum.config.streams[0]
    assert stream.kind == "discourse"
    return DiscourseSource(
        stream,
        salt="test-salt",
        session_factory=lambda: fake,  # type: ignore[arg-type,return-value]
    )


def test_discourse_topics_are_judged_once_and_again_only_with_a_new_post(tmp_path: Path) -> None:
    fake = FakeDiscourse()
    fake.topic(40, title="Cache behind a proxy", raw=QUESTION, user=3, at=DAY)
    fake.post(40, raw=GUESS, user=4, at=DAY + timedelta(minutes=10), reply_to=1)
    for n in range(41, 44):  # other topics, so listing takes pages
        fake.topic(
            n,
            title=f"Topic {n}",
            raw="How do I pick a colour scheme for the TUI?",
            user=5,
            at=DAY + timedelta(minutes=n),
        )
    forum = Forum(
        tmp_path / "repo",
        {"kind": "discourse", "site": fake.site, "trusted_authors": ["user9"]},
        require_answer=True,
    )
    first = forum.run(discourse(fake, forum), now=DAY + timedelta(days=1))
    assert first.streams[0].threads == 4 and forum.publisher.prs == {}

    # Accepting an answer is no post and no bump: Discourse does not say when it happened, so
    # the topic is not judged again for it (it will be, with the mark, at its next post).
    fake.accept(40, fake.topics[40]["posts"][1])
    calls = len(forum.llm.requests)
    second = forum.run(discourse(fake, forum), now=DAY + timedelta(days=2))
    assert second.streams[0].messages_read == 0 and len(forum.llm.requests) == calls

    fake.post(40, raw=FIX, user=9, at=DAY + timedelta(days=2, hours=1), reply_to=1)
    third = forum.run(discourse(fake, forum), now=DAY + timedelta(days=3))
    assert third.streams[0].messages_read == 1
    assert len(third.proposals_opened) == 1
    [proposal] = forum.publisher.prs.values()
    assert proposal.answered == "accepted"  # the earlier mark, seen now
    assert {e.permalink for e in proposal.evidence} <= {
        f"{fake.site}/t/cache-behind-a-proxy/40/{n}" for n in (1, 2, 3)
    }
