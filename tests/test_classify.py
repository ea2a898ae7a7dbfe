"""Prefilter, batching and verdicts, with a scripted model."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from doubles import ScriptedLLM
from pythia.classify import batches, classify, prefilter
from pythia.config import parse_config
from pythia.models import Message, Thread, Usage
from pythia.ports import Generation
from pythia.threads import next_watermark, ready_threads, trim_thread

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
CONFIG = parse_config({"project": {"name": "Kestrel"}})


def thread(first_id: int, *texts: str, bot: bool = False, stream: str = "s") -> Thread:
    messages = tuple(
        Message(
            stream=stream,
            id=first_id + n,
            author=f"user-{n}",
            text=text,
            sent_at=T0 + timedelta(minutes=first_id + n),
            is_bot=bot,
        )
        for n, text in enumerate(texts)
    )
    return Thread(stream=stream, messages=messages)


def verdict(
    thread_id: str, category: str = "question", doc_value: bool = True
) -> dict[str, object]:
    return {
        "thread": thread_id,
        "category": category,
        "doc_value": doc_value,
        "summary": "s",
        "reason": "r",
        "queries": ["q1", "q2", "q3", "q4"],
        "keywords": ["k"],
        "confidence": 1.4,
    }


def test_prefilter_drops_greetings_bots_and_one_word_threads() -> None:
    assert prefilter(thread(1, "hi", "thanks!"), CONFIG) is None
    assert prefilter(thread(1, "The build fails with exit code 3 on CI", bot=True), CONFIG) is None
    kept = prefilter(thread(1, "hello", "How do I set the cache folder in CI?"), CONFIG)
    assert kept is not None and [m.text for m in kept.messages] == [
        "How do I set the cache folder in CI?"
    ]


def test_batches_respect_both_caps_and_pack_tightly() -> None:
    threads = [
        thread(i * 100, *["a message of some length"] * size)
        for i, size in enumerate([60, 30, 30, 20, 40, 10, 5, 5])
    ]
    packed = batches(threads, max_messages=100, max_tokens=100_000)
    assert all(sum(len(t.messages) for t in b) <= 100 for b in packed)
    assert len(packed) == 2  # 200 messages: first-fit decreasing fills both calls
    assert sorted(t.key for b in packed for t in b) == sorted(t.key for t in threads)
    by_tokens = batches(threads, max_messages=1000, max_tokens=1000)
    assert len(by_tokens) > 2


def test_every_thread_gets_one_verdict_and_missing_ones_are_asked_again() -> None:
    first, second = (
        thread(1, "How do I pin a task to one CPU core?"),
        thread(50, "Is there a way to see why a task was rerun?"),
    )
    llm = ScriptedLLM()
    llm.enqueue(json.dumps({"verdicts": [verdict("T1"), verdict("T9")]}))  # T2 missing
    llm.enqueue(json.dumps({"verdicts": [verdict("T1", "information")]}))  # asked for T2 alone
    result = classify([first, second], config=CONFIG, llm=llm)
    assert len(llm.requests) == 2
    assert '<conversation id="T2">' not in llm.requests[1].prompt
    assert "see why a task was rerun" in llm.requests[1].prompt
    assert result.verdicts[first.key].category == "question"
    assert result.verdicts[second.key].category == "information"
    assert result.verdicts[first.key].queries == ("q1", "q2", "q3")
    assert result.verdicts[first.key].confidence == 1.0
    assert result.failed == {}


def test_an_unknown_category_counts_as_missing_then_fails() -> None:
    only = thread(1, "Why does kestrel graph hang on large repos?")
    llm = ScriptedLLM()
    llm.enqueue(json.dumps({"verdicts": [verdict("T1", "rant")]}))
    llm.enqueue(json.dumps({"verdicts": []}))
    result = classify([only], config=CONFIG, llm=llm)
    assert result.verdicts == {}
    assert "no usable verdict" in result.failed[only.key]


def test_no_doc_value_category_never_has_doc_value() -> None:
    only = thread(1, "Anyone watching the football tonight at all?")
    llm = ScriptedLLM().enqueue(json.dumps({"verdicts": [verdict("T1", "no-doc-value", True)]}))
    result = classify([only], config=CONFIG, llm=llm)
    assert result.verdicts[only.key].doc_value is False


def test_a_reply_that_never_parses_fails_the_batch_and_drops_are_counted() -> None:
    threads = [thread(1, "ok"), thread(10, "How can I share a cache between two machines?")]
    llm = ScriptedLLM().enqueue("{not json").enqueue('{"verdicts": "nope"}')
    result = classify(threads, config=CONFIG, llm=llm)
    assert result.dropped == [threads[0].key]
    assert threads[1].key in result.failed
    assert len(llm.requests) == 2


def test_context_messages_are_marked_as_context() -> None:
    context = thread(1, "Earlier: we use kestrel 3.1 on Windows").messages
    main = thread(10, "Builds fail with 'filename too long' on Windows")
    with_context = Thread(stream="s", messages=main.messages, context=context)
    llm = ScriptedLLM().enqueue(json.dumps({"verdicts": [verdict("T1")]}))
    classify([with_context], config=CONFIG, llm=llm)
    prompt = llm.requests[0].prompt
    assert 'index="1" author="user-0"' in prompt
    assert 'role="context"' in prompt.split("Earlier: we use")[0].rsplit("<message", 1)[1]


def test_verdicts_keep_the_key_of_the_thread_even_when_its_first_message_was_noise() -> None:
    noisy_start = thread(1, "hi all", "How do I keep the cache on another disk in CI?")
    llm = ScriptedLLM().enqueue(json.dumps({"verdicts": [verdict("T1")]}))
    result = classify([noisy_start], config=CONFIG, llm=llm)
    assert list(result.verdicts) == [noisy_start.key]
    assert result.verdicts[noisy_start.key].thread_key == noisy_start.key


def test_an_outage_keeps_the_verdicts_of_batches_already_done() -> None:
    from pythia.ports import LLMUnavailable

    small = parse_config({"limits": {"classify_batch_messages": 1}})
    first, second = (
        thread(1, "How do I pin a task to one CPU core?"),
        thread(50, "Is there a way to see why a task was rerun?"),
    )
    replies = iter([json.dumps({"verdicts": [verdict("T1")]})])

    class Flaky(ScriptedLLM):
        def generate(self, request: Any) -> Any:
            self.requests.append(request)
            try:
                return Generation(text=next(replies), usage=Usage())
            except StopIteration:
                raise LLMUnavailable("Gemini kept answering 503") from None

    result = classify([first, second], config=small, llm=Flaky())
    assert len(result.verdicts) == 1
    assert result.stopped == "Gemini kept answering 503"
    assert result.failed == {}


# --- prompt size ------------------------------------------------------------------------------


def long_thread(count: int, *, first_id: int = 1) -> Thread:
    texts = [
        f"Step {n} of the remote cache setup still fails with error E{n}" for n in range(count)
    ]
    return thread(first_id, *texts)


def test_ready_threads_cut_long_threads_but_still_cover_every_message() -> None:
    settings = parse_config({"threads": {"max_messages": 10, "max_message_chars": 300}}).threads
    messages = list(long_thread(120).messages)
    messages[-1] = replace(messages[-1], text="z" * 5000)
    later = T0 + timedelta(days=1)
    _, [ready] = ready_threads(messages, done=set(), now=later, settings=settings)
    shown = ready.messages
    assert [m.id for m in shown] == [1, 2, *range(113, 121)]  # the opening and the latest
    assert shown[2].text.startswith("[… 110 earlier messages omitted …]\n")
    assert set(ready.message_ids) == {m.id for m in messages}  # recorded as one thread
    assert next_watermark([m.id for m in messages], done=set(ready.message_ids), watermark=0) == 120
    assert ready.key == f"s:{messages[0].id}"
    assert all(len(m.text) <= 300 for m in shown if m is not shown[2])
    assert "[… message cut …]" in shown[-1].text


def test_trimming_a_trimmed_thread_again_counts_every_omission_once() -> None:
    once = trim_thread(long_thread(120), max_messages=20, max_message_chars=2000)
    twice = trim_thread(once, max_messages=5, max_message_chars=2000)
    assert set(twice.message_ids) == set(range(1, 121))
    assert [m.id for m in twice.messages] == [1, 117, 118, 119, 120]
    assert twice.messages[1].text.startswith("[… 115 earlier messages omitted …]\n")
    assert sum("omitted" in m.text for m in twice.messages) == 1
    assert trim_thread(twice, max_messages=5, max_message_chars=2000) == twice


def test_context_yields_first_when_a_thread_is_at_its_size() -> None:
    earlier = long_thread(5).messages
    main = long_thread(8, first_id=10)
    with_context = Thread(stream="s", messages=main.messages, context=earlier)
    trimmed = trim_thread(with_context, max_messages=10, max_message_chars=2000)
    assert trimmed.messages == main.messages
    assert [m.id for m in trimmed.context] == [4, 5]  # the two nearest the thread
    assert trim_thread(with_context, max_messages=13, max_message_chars=2000) is with_context
