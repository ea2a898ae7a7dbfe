"""Prefilter, batching and verdicts, with a scripted model."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from doubles import FunctionLLM, ScriptedLLM
from pythia.classify import batches, classify, estimate_tokens, prefilter
from pythia.config import parse_config
from pythia.models import Message, Thread, Usage
from pythia.ports import GenerateRequest, Generation
from pythia.threads import next_watermark, ready_threads, trim_thread
from pythia.usage import UsageMeter

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


def prompt_tokens(request: GenerateRequest) -> int:
    return estimate_tokens(request.system) + estimate_tokens(request.prompt)


def long_thread(count: int, *, first_id: int = 1) -> Thread:
    texts = [
        f"Step {n} of the remote cache setup still fails with error E{n}" for n in range(count)
    ]
    return thread(first_id, *texts)


def answer_every_conversation(request: GenerateRequest) -> str:
    ids = re.findall(r'<conversation id="(T\d+)">', request.prompt)
    return json.dumps({"verdicts": [verdict(thread_id) for thread_id in ids]})


def test_a_thread_of_100k_messages_is_one_bounded_call_keeping_its_start_and_end() -> None:
    huge = long_thread(100_000)
    llm = FunctionLLM(answer_every_conversation)
    result = classify([huge], config=CONFIG, llm=llm)
    assert list(result.verdicts) == [huge.key]
    [request] = llm.requests
    assert prompt_tokens(request) <= CONFIG.limits.classify_batch_tokens
    prompt = request.prompt
    assert "fails with error E0\n" in prompt  # the opening question
    assert "fails with error E99999\n" in prompt  # the latest message
    assert "[… 99,950 earlier messages omitted …]" in prompt
    assert prompt.count("<message ") == CONFIG.threads.max_messages


def test_a_1mb_message_is_cut_before_any_call() -> None:
    big = thread(1, "My build log:\n" + "x" * 1_000_000 + "\nerror: cache key mismatch")
    llm = FunctionLLM(answer_every_conversation)
    result = classify([big], config=CONFIG, llm=llm)
    assert list(result.verdicts) == [big.key]
    [request] = llm.requests
    assert prompt_tokens(request) <= 2_000
    assert "My build log:" in request.prompt and "error: cache key mismatch" in request.prompt
    assert "[… message cut …]" in request.prompt


def test_no_batch_passes_the_token_cap_even_when_threads_must_be_cut_to_fit() -> None:
    tight = parse_config({"limits": {"classify_batch_tokens": 2000}})
    threads = [long_thread(size, first_id=1000 * n) for n, size in enumerate([1, 3, 40, 7, 60])]
    threads.append(thread(9000, "A long one: " + "y" * 50_000))

    def answer_once_short(request: GenerateRequest) -> str:
        # Leave one verdict out of every batch's answer, so the ask-again calls happen too.
        ids = re.findall(r'<conversation id="(T\d+)">', request.prompt)
        if len(ids) > 1:
            ids = ids[1:]
        return json.dumps({"verdicts": [verdict(thread_id) for thread_id in ids]})

    llm = FunctionLLM(answer_once_short)
    result = classify(threads, config=tight, llm=llm)
    assert sorted(result.verdicts) == sorted(t.key for t in threads)
    assert llm.calls("classify") > 2
    for request in llm.requests:
        assert prompt_tokens(request) <= 2000


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


def test_a_call_that_would_pass_the_run_token_cap_stops_classification_keeping_verdicts() -> None:
    small = parse_config({"limits": {"classify_batch_messages": 1, "max_tokens": 3000}})
    meter = UsageMeter.from_config(small)

    class MeteredLLM(FunctionLLM):
        """Checks the caps before a call with the prompt's size and bills it, as Gemini does."""

        def generate(self, request: GenerateRequest) -> Generation:
            meter.check(prompt_tokens(request))
            meter.record(request.stage, request.model, Usage(input_tokens=prompt_tokens(request)))
            self.requests.append(request)
            return Generation(text=self.answer(request), usage=Usage())

    forty, thirty = long_thread(40), long_thread(30, first_id=100)
    llm = MeteredLLM(answer_every_conversation)
    result = classify([thirty, forty], config=small, llm=llm)
    assert list(result.verdicts) == [forty.key]  # about 2,100 tokens; 1,700 more would not fit
    assert meter.tokens <= 3000
    assert result.stopped is not None and "limits.max_tokens" in result.stopped
    assert result.failed == {}


def test_a_prompt_too_big_for_any_conversation_stops_without_a_call_or_a_failure() -> None:
    wordy = parse_config(
        {"project": {"description": "word " * 1000}, "limits": {"classify_batch_tokens": 1000}}
    )
    llm = FunctionLLM(answer_every_conversation)
    only = thread(1, "How do I pin a task to one CPU core?")
    result = classify([only], config=wordy, llm=llm)
    assert llm.requests == []
    assert result.verdicts == {} and result.failed == {}
    assert result.stopped is not None
    assert result.stopped.startswith("The classify prompt alone takes about ")
    assert result.stopped.endswith(
        "of the 1000 tokens of limits.classify_batch_tokens, so no conversation fits; raise it."
    )


def test_batches_hold_the_oldest_conversations_first() -> None:
    from datetime import datetime, timedelta, timezone

    start = datetime(2026, 3, 1, tzinfo=timezone.utc)

    def talk(number: int, size: int) -> Thread:
        messages = tuple(
            Message("s", number * 100 + n, "user-a", start + timedelta(hours=number), "x " * 50)
            for n in range(size)
        )
        return Thread("s", messages)

    # Sizes that a packing by size would put first: the two big, later threads.
    threads = [talk(1, 2), talk(2, 2), talk(3, 7), talk(4, 7)]
    packed = batches(threads, max_messages=8, max_tokens=10**6)
    firsts = [min(t.messages[0].sent_at for t in batch) for batch in packed]
    assert firsts == sorted(firsts)
    assert [t.first_id for t in packed[0]] == [100, 200]  # the two oldest, whatever their size
