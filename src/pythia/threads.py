"""Grouping a stream's messages into threads, the settle rule, and where the watermark may move.

Grouping, message by message in id order (deterministic for the same input):
1. a reply joins the thread of the message it answers, if that message was fetched;
2. otherwise a message joins the most recently active thread with the same thread key (forum
   topic, Zulip topic, or no key) if that thread's last message is at most `gap_minutes` older;
3. otherwise it starts a new thread.
Each thread then gets as context up to `context_messages` messages with the same key that come
just before its first message and belong to other threads (shown to the model, never judged).
A forum topic is one thread: its sources link every post to the opening (or to the post it
answers), so rule 1 holds it together across any gap. Each thread also records how it was
resolved (`models.resolution_of` its messages) before its recorded part moves to context.

Size rule: a model never sees more than `max_messages` messages of a thread (context included,
the context yielding first) nor a message longer than `max_message_chars`. The opening messages
(the question) and the latest ones (where it ended) are kept, the ones between are left out
with a note saying how many, and a long message keeps its start and its end around a note.
The left-out messages still belong to the thread (`Thread.omitted`), so its outcome covers them.

Watermark rule: the watermark only moves past messages whose thread outcome is recorded (no doc
value, proposed, failed too often). Messages above it are fetched again next run; those already
recorded are not judged again (`pending`), they only serve as context.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from .config import Prefilter, Threads
from .models import Message, Thread, resolution_of


@dataclass
class _Open:
    key: str | None
    messages: list[Message] = field(default_factory=list)
    active_at: datetime | None = None  # its last message that was not noise


def noise_rule(rules: Prefilter) -> Callable[[Message], bool]:
    """Whether a message is noise by the prefilter's rules (bots, greetings, thanks, +1)."""
    patterns = [re.compile(pattern, re.IGNORECASE) for pattern in rules.ignore_patterns]

    def noise(message: Message) -> bool:
        if rules.ignore_bots and message.is_bot:
            return True
        return any(pattern.search(message.text) for pattern in patterns)

    return noise


def group_threads(
    messages: Iterable[Message],
    *,
    gap_minutes: int,
    context_messages: int,
    noise: Callable[[Message], bool] | None = None,
) -> list[Thread]:
    """The threads of one stream's messages, ordered by their first message id.

    A `noise` message ("hi all 👋", "thanks!") joins the thread it replies to, but the time-gap
    rule neither puts it into a thread nor lets it keep one open: a greeting must not glue
    itself to the conversation that follows, nor glue two conversations together.
    """
    ordered = sorted(messages, key=lambda message: message.id)
    gap = timedelta(minutes=gap_minutes)
    groups: list[_Open] = []
    group_of: dict[int, _Open] = {}
    latest_by_key: dict[str | None, _Open] = {}
    for message in ordered:
        is_noise = noise is not None and noise(message)
        group = group_of.get(message.reply_to) if message.reply_to is not None else None
        if group is None and not is_noise:
            candidate = latest_by_key.get(message.thread_key)
            if (
                candidate is not None
                and candidate.active_at is not None
                and message.sent_at - candidate.active_at <= gap
            ):
                group = candidate
        if group is None:
            group = _Open(message.thread_key)
            groups.append(group)
        group.messages.append(message)
        group_of[message.id] = group
        if not is_noise:
            group.active_at = message.sent_at
            latest_by_key[message.thread_key] = group
    by_key: dict[str | None, list[Message]] = {}
    position: dict[int, int] = {}
    for message in ordered:
        same_key = by_key.setdefault(message.thread_key, [])
        position[message.id] = len(same_key)
        same_key.append(message)
    return [
        _with_context(group, by_key[group.key], position, group_of, context_messages)
        for group in groups
    ]


def _with_context(
    group: _Open,
    same_key: list[Message],
    position: dict[int, int],
    group_of: dict[int, _Open],
    limit: int,
) -> Thread:
    """The thread, with up to `limit` earlier messages of its key from other threads.

    Walks back from the thread's first message and stops at `limit`, so grouping stays linear
    in the number of messages.
    """
    first = group.messages[0]
    context: list[Message] = []
    index = position[first.id] - 1
    while index >= 0 and len(context) < limit:
        message = same_key[index]
        if group_of[message.id] is not group:
            context.append(message)
        index -= 1
    context.reverse()
    return Thread(
        stream=first.stream,
        messages=tuple(group.messages),
        context=tuple(context),
        answered=resolution_of(group.messages),
    )


def settled(thread: Thread, now: datetime, settle_minutes: int) -> bool:
    """A thread is judged once its last message is at least `settle_minutes` old."""
    return now - thread.last_at >= timedelta(minutes=settle_minutes)


def pending(thread: Thread, done: Collection[int]) -> Thread | None:
    """The part of a thread still to judge: recorded messages move to its context.

    None when every message of the thread already has a recorded outcome.
    """
    todo = tuple(message for message in thread.messages if message.id not in done)
    if not todo:
        return None
    if len(todo) == len(thread.messages):
        return thread
    judged = tuple(message for message in thread.messages if message.id in done)
    context = tuple(sorted({*thread.context, *judged}, key=lambda message: message.id))
    return Thread(
        stream=thread.stream, messages=todo, context=context, answered=thread.answered
    )


CUT_NOTE = " [… message cut …] "
_OMITTED_NOTE = re.compile(
    r"\A\[… [\d,]+ earlier messages? omitted …\]\n|\n\[… [\d,]+ later messages? omitted …\]\Z"
)


def cut_text(text: str, max_chars: int) -> str:
    """The text, or its start and end around CUT_NOTE in at most `max_chars` characters.

    The end is kept too because a pasted log or traceback ends with the error. Cutting a cut
    text shorter gives what cutting the original would.
    """
    if len(text) <= max_chars:
        return text
    room = max(0, max_chars - len(CUT_NOTE))
    head = room * 2 // 3
    return text[:head] + CUT_NOTE + text[len(text) - (room - head) :]


def _omitted_note(count: int, *, earlier: bool) -> str:
    plural = "" if count == 1 else "s"
    if earlier:
        return f"[… {count:,} earlier message{plural} omitted …]\n"
    return f"\n[… {count:,} later message{plural} omitted …]"


def _with_text(message: Message, text: str) -> Message:
    """The message with `text`; the message itself when that is its text already
    (`dataclasses.replace` is most of the cost of trimming a large export's threads)."""
    return message if text == message.text else replace(message, text=text)


def trim_thread(thread: Thread, *, max_messages: int, max_message_chars: int) -> Thread:
    """The thread as a model may see it (the size rule above); the thread itself when it fits.

    Trimming an already trimmed thread counts every left-out message once, in one note.
    """
    messages = list(thread.messages)
    if thread.omitted:  # notes from an earlier trim are recomputed below
        messages = [_with_text(m, _OMITTED_NOTE.sub("", m.text)) for m in messages]
    omitted = set(thread.omitted)
    keep = max(2, max_messages)
    if len(messages) > keep:
        head = max(1, keep // 5)
        tail = keep - head
        omitted.update(message.id for message in messages[head : len(messages) - tail])
        messages = messages[:head] + messages[len(messages) - tail :]
    messages = [_with_text(m, cut_text(m.text, max_message_chars)) for m in messages]
    if omitted:
        gap = min(omitted)
        after = next((n for n, m in enumerate(messages) if m.id > gap), None)
        if after is not None:
            note = _omitted_note(len(omitted), earlier=True) + messages[after].text
            messages[after] = replace(messages[after], text=note)
        else:  # the prefilter dropped every message after the gap
            note = messages[-1].text + _omitted_note(len(omitted), earlier=False)
            messages[-1] = replace(messages[-1], text=note)
    room = max(0, keep - len(messages))
    context = thread.context[max(0, len(thread.context) - room) :] if room else ()
    trimmed = Thread(
        stream=thread.stream,
        messages=tuple(messages),
        context=tuple(_with_text(m, cut_text(m.text, max_message_chars)) for m in context),
        omitted=tuple(sorted(omitted)),
        answered=thread.answered,
    )
    return thread if trimmed == thread else trimmed


def next_watermark(
    fetched_ids: Iterable[int], *, done: Collection[int], watermark: int | None
) -> int | None:
    """The highest id such that every fetched message at or below it has a recorded outcome.

    `watermark` is where this run's fetch started: the stored watermark, or on a first run
    the resolved start (`Batch.after` from `pythia.sources.read_stream`), so that a first run
    that reads nothing ('newest') still saves one. The watermark never moves back; it stays
    None only when there was none and nothing could be passed.
    """
    moved = watermark
    for message_id in sorted(set(fetched_ids)):
        if watermark is not None and message_id <= watermark:
            continue
        if message_id not in done:
            break
        moved = message_id
    return moved


def ready_threads(
    messages: Sequence[Message],
    *,
    done: Collection[int],
    now: datetime,
    settings: Threads,
    noise: Callable[[Message], bool] | None = None,
) -> tuple[list[Thread], list[Thread]]:
    """All threads of a batch, and the settled ones still to judge (recorded parts as context),
    trimmed to the size a model may see."""
    grouped = group_threads(
        list(messages),
        gap_minutes=settings.gap_minutes,
        context_messages=settings.context_messages,
        noise=noise,
    )
    ready = [
        trim_thread(
            todo,
            max_messages=settings.max_messages,
            max_message_chars=settings.max_message_chars,
        )
        for thread in grouped
        if settled(thread, now, settings.settle_minutes)
        and (todo := pending(thread, done)) is not None
    ]
    return grouped, ready
