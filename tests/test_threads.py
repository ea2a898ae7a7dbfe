"""Thread grouping, the settle rule, and the watermark across failing and repeated runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pythia.config import ExportStream
from pythia.models import Message, Thread
from pythia.sources import read_stream
from pythia.sources.export import ExportSource
from pythia.threads import group_threads, next_watermark, pending, settled

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
SAMPLE_CHAT = Path(__file__).parent / "fixtures" / "sample-chat" / "result.json"


def msg(
    message_id: int,
    minute: float,
    *,
    reply_to: int | None = None,
    key: str | None = None,
    text: str = "",
) -> Message:
    return Message(
        stream="s",
        id=message_id,
        author=f"user-{message_id:08x}",
        sent_at=T0 + timedelta(minutes=minute),
        text=text or f"message {message_id}",
        thread_key=key,
        reply_to=reply_to,
    )


def ids(threads: list[Thread]) -> list[tuple[int, ...]]:
    return [thread.message_ids for thread in threads]


def group(messages: list[Message], *, gap: int = 30, context: int = 0) -> list[Thread]:
    return group_threads(messages, gap_minutes=gap, context_messages=context)


def test_interleaved_reply_chains_become_separate_threads() -> None:
    messages = [
        msg(1, 0),
        msg(2, 1),
        msg(3, 2, reply_to=1),
        msg(4, 3, reply_to=2),
        msg(5, 4, reply_to=3),
        msg(6, 5, reply_to=4),
    ]
    assert ids(group(messages, gap=0)) == [(1, 3, 5), (2, 4, 6)]


def test_a_message_without_reply_joins_the_most_recently_active_thread_within_the_gap() -> None:
    messages = [msg(1, 0), msg(2, 1), msg(3, 2, reply_to=1), msg(4, 10)]
    assert ids(group(messages, gap=30)) == [(1, 2, 3, 4)]
    split = [msg(1, 0), msg(2, 1, reply_to=1), msg(3, 45), msg(4, 50)]
    assert ids(group(split, gap=30)) == [(1, 2), (3, 4)]


def test_a_reply_joins_its_parent_thread_even_after_a_long_gap() -> None:
    messages = [msg(1, 0), msg(2, 5, reply_to=1), msg(3, 100), msg(4, 300, reply_to=2)]
    assert ids(group(messages)) == [(1, 2, 4), (3,)]


def test_a_reply_to_a_message_not_fetched_falls_back_to_key_and_gap() -> None:
    messages = [msg(10, 0), msg(11, 1, reply_to=3), msg(12, 200, reply_to=4)]
    assert ids(group(messages)) == [(10, 11), (12,)]


def test_topics_keep_interleaved_conversations_apart() -> None:
    messages = [
        msg(1, 0, key="topic:install"),
        msg(2, 1, key="topic:cache"),
        msg(3, 2, key="topic:install"),
        msg(4, 3, key="topic:cache"),
        msg(5, 4),
        msg(6, 90, key="topic:install"),
    ]
    threads = group(messages)
    assert ids(threads) == [(1, 3), (2, 4), (5,), (6,)]
    assert [thread.messages[0].thread_key for thread in threads] == [
        "topic:install",
        "topic:cache",
        None,
        "topic:install",
    ]


def test_grouping_is_deterministic_whatever_the_input_order() -> None:
    messages = [msg(i, i * 3, reply_to=i - 2 if i > 2 else None) for i in range(1, 12)]
    assert ids(group(messages)) == ids(group(list(reversed(messages))))


def test_context_is_the_preceding_messages_with_the_same_key_from_other_threads() -> None:
    messages = [
        msg(1, 0),
        msg(2, 1),
        msg(3, 2, key="topic:other"),
        msg(4, 3),
        msg(5, 60),
        msg(6, 61, reply_to=5),
        msg(7, 62, reply_to=2),
    ]
    threads = group(messages, context=2)
    later = next(thread for thread in threads if thread.first_id == 5)
    assert later.message_ids == (5, 6)
    assert [m.id for m in later.context] == [2, 4]  # not 3 (other topic), not its own
    assert threads[0].context == ()
    assert all(thread.context == () for thread in group(messages, context=0))


def test_settled_after_the_quiet_period() -> None:
    thread = Thread(stream="s", messages=(msg(1, 0), msg(2, 10)))
    assert not settled(thread, T0 + timedelta(minutes=69), 60)
    assert settled(thread, T0 + timedelta(minutes=70), 60)
    assert settled(thread, T0 + timedelta(minutes=10), 0)


def test_pending_moves_recorded_messages_to_context() -> None:
    thread = Thread(stream="s", messages=(msg(2, 0), msg(3, 1), msg(5, 2)), context=(msg(1, -5),))
    assert pending(thread, set()) is thread
    assert pending(thread, {2, 3, 5}) is None
    rest = pending(thread, {2, 3})
    assert rest is not None
    assert rest.message_ids == (5,)
    assert [m.id for m in rest.context] == [1, 2, 3]


def test_next_watermark_stops_below_the_first_message_without_an_outcome() -> None:
    assert next_watermark([11, 12, 13, 14], done={11, 12, 14}, watermark=10) == 12
    assert next_watermark([11, 12], done={11, 12}, watermark=10) == 12
    assert next_watermark([11, 12], done={12}, watermark=10) == 10
    assert next_watermark([], done=set(), watermark=42) == 42  # a first run with 'newest'
    assert next_watermark([3, 1, 2], done={1, 2, 3}, watermark=None) == 3
    assert next_watermark([1, 2], done={2}, watermark=None) is None
    assert next_watermark([5, 6], done={5, 6}, watermark=9) == 9  # never moves back


class ChatSoFar:
    """The sample chat as it looked at some moment: a `ChatSource` over the visible messages."""

    stream = "kestrel"

    def __init__(self, messages: list[Message], now: datetime) -> None:
        self.visible = [m for m in messages if m.sent_at <= now]

    def start_after(self) -> int:
        return 0

    def fetch(self, after: int | None) -> Iterator[Message]:
        start = 0 if after is None else after
        return iter([m for m in self.visible if m.id > start])

    def close(self) -> None:
        pass


class Pipeline:
    """The watermark bookkeeping of a real run: judge settled pending threads, record, advance."""

    def __init__(self) -> None:
        self.watermark: int | None = None
        self.done: set[int] = set()
        self.outcomes: Counter[int] = Counter()
        self.judged: list[Thread] = []
        self.runs = 0

    def run(self, source: ChatSoFar, now: datetime, *, failing: set[int] = frozenset()) -> None:
        self.runs += 1
        batch = read_stream(source, self.watermark)
        threads = group_threads(batch.messages, gap_minutes=30, context_messages=3)
        for thread in threads:
            todo = pending(thread, self.done)
            if todo is None or not settled(thread, now, 60):
                continue
            if todo.first_id in failing:
                continue  # the classifier failed on this thread; nothing is recorded
            self.judged.append(todo)
            self.outcomes.update(todo.message_ids)
            self.done.update(todo.message_ids)
        fetched = [m.id for m in batch.messages]
        self.watermark = next_watermark(fetched, done=self.done, watermark=batch.after)
        self.done = {i for i in self.done if i > self.watermark}


@pytest.fixture
def chat() -> list[Message]:
    config = ExportStream(kind="export", id="kestrel", path=str(SAMPLE_CHAT), start="oldest")
    return ExportSource(config, salt="salt").messages()


def test_failures_and_reruns_give_every_message_exactly_one_outcome(chat: list[Message]) -> None:
    pipeline = Pipeline()
    day = timedelta(days=1)
    # Run 1, mid-morning of day one: the proxy thread (4-9) is still active, the greeting is not.
    first = datetime(2026, 3, 2, 10, 56, tzinfo=timezone.utc)
    pipeline.run(ChatSoFar(chat, first), first)
    assert set(pipeline.outcomes) == {2, 3}
    assert pipeline.watermark == 3
    # Run 2, that evening: the classifier fails on the proxy thread; later threads succeed.
    evening = datetime(2026, 3, 2, 20, 0, tzinfo=timezone.utc)
    pipeline.run(ChatSoFar(chat, evening), evening, failing={4})
    assert 4 not in pipeline.outcomes and 10 in pipeline.outcomes
    assert pipeline.watermark == 3  # held below the failed thread
    assert pipeline.done >= {10, 11, 12, 13}
    # Runs 3 and later: the rerun picks up the failed thread, then the chat goes on.
    for moment in (evening + timedelta(minutes=30), first + day, first + 2 * day, first + 4 * day):
        pipeline.run(ChatSoFar(chat, moment), moment)
    assert set(pipeline.outcomes) == {m.id for m in chat}
    assert set(pipeline.outcomes.values()) == {1}
    assert pipeline.watermark == 42 and pipeline.done == set()


def test_a_late_reply_to_a_judged_thread_is_judged_alone_with_the_thread_as_context() -> None:
    messages = [msg(1, 0), msg(2, 45), msg(3, 50, reply_to=2)]
    pipeline = Pipeline()
    at = T0 + timedelta(minutes=200)
    pipeline.run(ChatSoFar(messages, at), at, failing={1})
    assert pipeline.outcomes == Counter({2: 1, 3: 1})
    assert pipeline.watermark == 0  # held below the failed thread (1)
    late = [*messages, msg(4, 300, reply_to=3)]
    later = T0 + timedelta(minutes=400)
    pipeline.run(ChatSoFar(late, later), later)
    assert sorted(pipeline.outcomes) == [1, 2, 3, 4]
    assert set(pipeline.outcomes.values()) == {1}
    reply = next(thread for thread in pipeline.judged if thread.first_id == 4)
    assert reply.message_ids == (4,)
    assert [m.id for m in reply.context] == [1, 2, 3]
    assert pipeline.watermark == 4


def test_a_greeting_neither_joins_nor_glues_conversations() -> None:
    from pythia.config import Prefilter
    from pythia.threads import noise_rule

    at = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)

    def say(number: int, minutes: int, text: str, reply_to: int | None = None) -> Message:
        return Message("s", number, f"user-{number}", at + timedelta(minutes=minutes), text,
                       reply_to=reply_to)  # fmt: skip

    messages = [
        say(1, 0, "the build cache is never hit on CI, any idea?"),
        say(2, 20, "hi all 👋"),  # within the gap of 1 and of 3
        say(3, 40, "how do I pin the python version for a workspace?"),
        say(4, 45, "thanks!", reply_to=1),
    ]
    noise = noise_rule(Prefilter())
    grouped = group_threads(messages, gap_minutes=30, context_messages=0, noise=noise)
    assert [[m.id for m in t.messages] for t in grouped] == [[1, 4], [2], [3]]
    # Without the rule the greeting bridges both questions into one conversation.
    glued = group_threads(messages, gap_minutes=30, context_messages=0)
    assert [[m.id for m in t.messages] for t in glued] == [[1, 2, 3, 4]]
