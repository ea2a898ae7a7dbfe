"""What the forum sources share: ids made from times, first-run starts, and reading touched
topics so that a stop leaves a prefix the watermark may pass."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from pythia.models import Message
from pythia.sources import StreamInterrupted
from pythia.sources.forum import (
    ID_SCALE,
    Topic,
    answer_id,
    first_id_at,
    forum_id,
    link_replies,
    parse_time,
    read_topics,
    start_after,
    time_of,
)

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


def test_ids_grow_with_time_and_tell_one_seconds_messages_apart() -> None:
    first = forum_id(T0, 4_000_001)
    assert first == int(T0.timestamp()) * ID_SCALE + 1
    assert forum_id(T0, 4_000_002) == first + 1
    assert forum_id(T0 + timedelta(seconds=1), 3) > forum_id(T0, 999_999)
    assert time_of(first) == T0
    assert forum_id(datetime(2255, 1, 1, tzinfo=timezone.utc), 999_999) < 2**53


def test_an_answer_takes_the_time_it_was_chosen_when_that_is_later() -> None:
    later = T0 + timedelta(days=3)
    assert answer_id(T0, later, 77) == forum_id(later, 77)
    assert answer_id(T0, None, 77) == forum_id(T0, 77)
    assert answer_id(T0, T0 - timedelta(days=1), 77) == forum_id(T0, 77)  # a clock quirk


@pytest.mark.parametrize(
    ("start", "after"),
    [
        ("oldest", 0),
        (1772445600000123, 1772445600000122),
        (date(2026, 3, 2), first_id_at(datetime(2026, 3, 2, tzinfo=timezone.utc)) - 1),
        ("newest", first_id_at(T0 + timedelta(seconds=1)) - 1),
    ],
)
def test_a_first_run_starts_without_reading_history(start: object, after: int) -> None:
    assert start_after(start, newest=lambda: T0) == after  # type: ignore[arg-type]


def test_newest_on_an_empty_forum_is_the_beginning() -> None:
    assert start_after("newest", newest=lambda: None) == 0


def test_api_timestamps_parse_with_or_without_fractions() -> None:
    assert parse_time("2026-03-02T10:00:00Z") == T0
    assert parse_time("2026-03-02T10:00:00.123Z") == T0 + timedelta(milliseconds=123)
    assert parse_time("2026-03-02T10:00:00") == T0
    assert parse_time("yesterday") is None and parse_time(None) is None


def post(at: datetime, platform_id: int, topic: int) -> Message:
    return Message(
        stream="f",
        id=forum_id(at, platform_id),
        author="user-1",
        sent_at=at,
        text="x",
        thread_key=f"topic:{topic}",
    )


def forum(after: int) -> tuple[list[Topic], dict[int, list[Message]]]:
    """Three topics: an old one with a new reply, and two begun after the watermark."""
    old, new, newer = T0 - timedelta(days=9), T0 + timedelta(hours=1), T0 + timedelta(hours=2)
    posts = {
        1: [post(old, 1, 1), post(T0 + timedelta(hours=3), 9, 1)],
        2: [post(new, 2, 2), post(new + timedelta(minutes=5), 3, 2)],
        3: [post(newer, 4, 3)],
    }
    topics = [Topic(3, newer), Topic(1, old), Topic(2, new)]
    assert all(m.id > after for m in posts[2] + posts[3])
    return topics, posts


def test_touched_topics_are_read_whole_and_yielded_in_id_order() -> None:
    after = forum_id(T0, 0)
    topics, posts = forum(after)
    read: list[int] = []

    def reader(topic: Topic) -> list[Message]:
        read.append(topic.key)
        return posts[topic.key]

    messages = list(read_topics(topics, after, read=reader, max_topics=10, stream="f"))
    assert read == [1, 2, 3]  # by floor: the old topic's new posts may be the oldest
    assert [m.id for m in messages] == sorted(m.id for p in posts.values() for m in p)


def test_the_cap_stops_at_a_prefix_the_watermark_may_pass() -> None:
    after = forum_id(T0, 0)
    topics, posts = forum(after)
    messages = list(
        read_topics(topics, after, read=lambda t: posts[t.key], max_topics=2, stream="f")
    )
    # topic 3 is left for next run; topic 1's reply (after topic 3 began) waits with it
    assert [m.thread_key for m in messages] == ["topic:1", "topic:2", "topic:2"]
    assert max(m.id for m in messages) < forum_id(T0 + timedelta(hours=2), 0)


def test_topics_older_than_the_watermark_are_all_read_whatever_the_cap() -> None:
    after = forum_id(T0, 0)
    old = [Topic(n, T0 - timedelta(days=n)) for n in range(1, 5)]
    reply = {
        n: [post(T0 - timedelta(days=n), n, n), post(T0 + timedelta(minutes=n), 10 + n, n)]
        for n in range(1, 5)
    }
    messages = list(read_topics(old, after, read=lambda t: reply[t.key], max_topics=1, stream="f"))
    assert len(messages) == 8


def test_an_interruption_keeps_the_prefix_and_names_its_last_message() -> None:
    after = forum_id(T0, 0)
    topics, posts = forum(after)

    def reader(topic: Topic) -> list[Message]:
        if topic.key == 3:
            raise StreamInterrupted("f", last_id=None, reason="rate limited")
        return posts[topic.key]

    got: list[Message] = []
    with pytest.raises(StreamInterrupted) as stopped:
        got.extend(read_topics(topics, after, read=reader, max_topics=10, stream="f"))
    assert [m.thread_key for m in got] == ["topic:1", "topic:2", "topic:2"]
    assert stopped.value.last_id == got[-1].id and stopped.value.reason == "rate limited"


def test_replies_to_missing_posts_reply_to_the_opening() -> None:
    opening, kept, orphan = post(T0, 1, 1), post(T0, 2, 1), post(T0, 3, 1)
    linked = link_replies([opening, kept, orphan], [None, opening.id, 999])
    assert [m.reply_to for m in linked] == [None, opening.id, opening.id]
    assert link_replies([], []) == []
