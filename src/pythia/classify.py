"""Settled threads to verdicts: a cheap prefilter, then batched structured LLM calls."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel, Field

from . import prompts
from .config import Config
from .models import Message, Thread, Verdict
from .ports import LLM, LLMUnavailable, MalformedReply, one_line
from .structured import generate_model, request_for
from .usage import estimate_tokens

log = logging.getLogger(__name__)


class ThreadVerdict(BaseModel):
    thread: str = Field(description="The conversation id, like T1.")
    category: str
    doc_value: bool
    summary: str
    reason: str
    queries: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    confidence: float = 0.0


class ClassifyReply(BaseModel):
    verdicts: list[ThreadVerdict]


@dataclass
class Classification:
    """Verdicts by thread key, threads the prefilter dropped, and threads that failed."""

    verdicts: dict[str, Verdict] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    stopped: str | None = None  # why classification stopped before every batch was done


def prefilter(thread: Thread, config: Config) -> Thread | None:
    """The thread without noise messages, or None when nothing worth a model call is left."""
    rules = config.prefilter
    patterns = [re.compile(pattern, re.IGNORECASE) for pattern in rules.ignore_patterns]

    def noise(message: Message) -> bool:
        if rules.ignore_bots and message.is_bot:
            return True
        return any(pattern.search(message.text) for pattern in patterns)

    kept = tuple(message for message in thread.messages if not noise(message))
    if not kept or sum(len(message.text.strip()) for message in kept) < rules.min_chars:
        return None
    return Thread(stream=thread.stream, messages=kept, context=thread.context)


def batches(threads: Sequence[Thread], *, max_messages: int, max_tokens: int) -> list[list[Thread]]:
    """First-fit-decreasing packing of threads into as few calls as the caps allow.

    The message cap counts the messages to judge; context messages count towards tokens only.
    """
    bins: list[tuple[list[Thread], int, int]] = []
    for thread in sorted(threads, key=_size, reverse=True):
        count = len(thread.messages)
        tokens = _tokens(thread)
        for position, (members, used_messages, used_tokens) in enumerate(bins):
            if used_messages + count <= max_messages and used_tokens + tokens <= max_tokens:
                bins[position] = ([*members, thread], used_messages + count, used_tokens + tokens)
                break
        else:
            bins.append(([thread], count, tokens))
    # Keep conversations in chat order inside a call; it reads more naturally to the model.
    return [sorted(members, key=lambda t: (t.stream, t.first_id)) for members, _, _ in bins]


def _size(thread: Thread) -> tuple[int, int]:
    return (len(thread.messages), _tokens(thread))


def _tokens(thread: Thread) -> int:
    return sum(estimate_tokens(m.text) + 12 for m in (*thread.context, *thread.messages))


def classify(
    threads: Sequence[Thread],
    *,
    config: Config,
    llm: LLM,
    repo_root: Path | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Classification:
    """One verdict per thread; missing verdicts are asked for once more, then recorded failed."""
    result = Classification()
    candidates = []
    original: dict[str, str] = {}  # the prefilter may drop a thread's first message
    for thread in threads:
        kept = prefilter(thread, config)
        if kept is None:
            result.dropped.append(thread.key)
        else:
            candidates.append(kept)
            original[kept.key] = thread.key
    limits = config.limits
    for batch in batches(
        candidates,
        max_messages=limits.classify_batch_messages,
        max_tokens=limits.classify_batch_tokens,
    ):
        if should_stop():
            break
        try:
            missing = _classify_batch(
                batch, config=config, llm=llm, repo_root=repo_root, into=result
            )
            if missing and not should_stop():
                log.info("asking again for %d conversation(s) without a verdict", len(missing))
                missing = _classify_batch(
                    missing, config=config, llm=llm, repo_root=repo_root, into=result
                )
        except LLMUnavailable as error:
            # Keep the verdicts already paid for; the rest wait for the next run.
            result.stopped = one_line(error)
            break
        for thread in missing:
            result.failed.setdefault(thread.key, "the model gave no usable verdict for it twice")
    result.verdicts = {
        original[key]: replace(verdict, thread_key=original[key])
        for key, verdict in result.verdicts.items()
    }
    result.failed = {original[key]: reason for key, reason in result.failed.items()}
    return result


def _classify_batch(
    batch: Sequence[Thread],
    *,
    config: Config,
    llm: LLM,
    repo_root: Path | None,
    into: Classification,
) -> list[Thread]:
    """Classify one batch into `into`; returns the threads still without a verdict."""
    by_id = {f"T{number}": thread for number, thread in enumerate(batch, 1)}
    rendered = [
        {
            "id": thread_id,
            "messages": [
                *prompts.message_rows(thread.context, role="context"),
                *prompts.message_rows(
                    thread.messages, start=len(thread.context) + 1, role="message"
                ),
            ],
        }
        for thread_id, thread in by_id.items()
    ]
    request = request_for(
        config,
        stage="classify",
        model=config.models.classify,
        template="classify.md.j2",
        schema=ClassifyReply,
        repo_root=repo_root,
        project=config.project,
        categories=config.categories,
        threads=rendered,
    )
    try:
        reply, _ = generate_model(llm, request, ClassifyReply)
    except MalformedReply as error:
        for thread in batch:
            into.failed[thread.key] = str(error)
        return []
    for item in reply.verdicts:
        found = by_id.get(item.thread.strip())
        if found is None or found.key in into.verdicts:
            continue
        thread = found
        category = item.category.strip().lower()
        if category not in config.categories:
            continue  # treated as missing: asked again once
        doc_value = item.doc_value and category != "no-doc-value"
        into.verdicts[thread.key] = Verdict(
            thread_key=thread.key,
            category=category,
            doc_value=doc_value,
            summary=item.summary.strip(),
            reason=item.reason.strip(),
            queries=tuple(q.strip() for q in item.queries if q.strip())[:3],
            keywords=tuple(k.strip() for k in item.keywords if k.strip())[:6],
            confidence=min(max(item.confidence, 0.0), 1.0),
        )
        into.failed.pop(thread.key, None)
    return [thread for thread in batch if thread.key not in into.verdicts]
