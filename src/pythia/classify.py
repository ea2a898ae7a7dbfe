"""Settled threads to verdicts: a cheap prefilter, then batched structured LLM calls.

No call is bigger than `limits.classify_batch_tokens`: a thread too big for one call is cut
down (threads.trim_thread) until it fits, and batches are packed by the size of the prompt
they render to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from . import prompts
from .config import Config
from .models import Message, Thread, Verdict
from .ports import LLM, GenerateRequest, LLMUnavailable, MalformedReply, one_line
from .structured import generate_model, request_for
from .threads import noise_rule, trim_thread
from .usage import BudgetExhausted, estimate_tokens

log = logging.getLogger(__name__)

_ANY_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)

# Room kept in every call for the schema errors structured.retry_prompt appends (at most
# MAX_ERRORS_SHOWN short lines), so a retried call stays within the cap as well.
RETRY_RESERVE_TOKENS = 300
# Cutting a thread down to fit one call stops at two messages of this many characters.
MIN_FIT_CHARS = 200
# Room for conversation ids longer than the "T1" a thread is measured with.
ID_RESERVE_CHARS = 8


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
    noise = noise_rule(rules)
    kept = tuple(message for message in thread.messages if not noise(message))
    if not kept or sum(len(message.text.strip()) for message in kept) < rules.min_chars:
        return None
    return thread if kept == thread.messages else replace(thread, messages=kept)


def batches(
    threads: Sequence[Thread],
    *,
    max_messages: int,
    max_tokens: int,
    cost: Callable[[Thread], int] | None = None,
) -> list[list[Thread]]:
    """First-fit packing of threads, oldest first, into calls within the caps.

    Oldest first: the first calls hold the oldest conversations, so a run that stops at a cap
    or its time budget has judged a prefix of the chat and its watermark can move past it (a
    packing by size would judge a scattering of threads across the whole backlog). The message
    cap counts the messages to judge; context messages count towards tokens only. `cost` is a
    thread's share of a prompt in tokens (by default, a rough count of its text).
    """
    measure = cost or _tokens
    sizes = {id(thread): (len(thread.messages), measure(thread)) for thread in threads}
    bins: list[tuple[list[Thread], int, int]] = []
    for thread in sorted(threads, key=lambda t: (t.messages[0].sent_at, t.stream, t.first_id)):
        count, tokens = sizes[id(thread)]
        for position, (members, used_messages, used_tokens) in enumerate(bins):
            if used_messages + count <= max_messages and used_tokens + tokens <= max_tokens:
                bins[position] = ([*members, thread], used_messages + count, used_tokens + tokens)
                break
        else:
            bins.append(([thread], count, tokens))
    # Keep conversations in chat order inside a call; it reads more naturally to the model.
    return [sorted(members, key=lambda t: (t.stream, t.first_id)) for members, _, _ in bins]


def _tokens(thread: Thread) -> int:
    return sum(estimate_tokens(m.text) + 12 for m in (*thread.context, *thread.messages))


@dataclass
class Plan:
    """Classification laid out before any call: what the prefilter dropped or could not fit
    (in `result`), the batches to ask about, and each shown thread's original key."""

    result: Classification
    batches: list[list[Thread]]
    original: dict[str, str]


def plan(threads: Sequence[Thread], *, config: Config, repo_root: Path | None = None) -> Plan:
    """Prefilter, fit and pack the threads into batches, as `classify` asks about them (and a
    backfill sends them to the Batch API)."""
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
    size = PromptSize(config, repo_root)
    cap = config.limits.classify_batch_tokens
    if size.room < size.smallest_thread:
        result.stopped = (
            f"The classify prompt alone takes about {size.fixed} of the "
            f"{cap} tokens of limits.classify_batch_tokens, so no conversation fits; raise it."
        )
        candidates = []
    shown = []
    for thread in candidates:
        fitted = fit_thread(thread, config=config, max_tokens=size.room, cost=size.of)
        if fitted is None:
            result.failed[original[thread.key]] = (
                f"even cut down to two short messages the conversation does not fit "
                f"limits.classify_batch_tokens ({cap}); raise it"
            )
        else:
            shown.append(fitted)
    packed = batches(
        shown,
        max_messages=config.limits.classify_batch_messages,
        max_tokens=size.room,
        cost=size.of,
    )
    return Plan(result=result, batches=packed, original=original)


def classify(
    threads: Sequence[Thread],
    *,
    config: Config,
    llm: LLM,
    repo_root: Path | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Classification:
    """One verdict per thread; missing verdicts are asked for once more, then recorded failed."""
    laid_out = plan(threads, config=config, repo_root=repo_root)
    result, original = laid_out.result, laid_out.original
    failed_before = dict(result.failed)
    result.failed = {}
    for batch in laid_out.batches:
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
        except (LLMUnavailable, BudgetExhausted) as error:
            # Keep the verdicts already paid for; the rest wait for the next run.
            result.stopped = one_line(error)
            break
        for thread in missing:
            result.failed.setdefault(thread.key, "the model gave no usable verdict for it twice")
    result.verdicts = {
        original[key]: replace(verdict, thread_key=original[key])
        for key, verdict in result.verdicts.items()
    }
    result.failed = {
        **failed_before,
        **{original[key]: reason for key, reason in result.failed.items()},
    }
    return result


def request_tokens(request: GenerateRequest) -> int:
    """The estimated input tokens of a call, as the run's caps and rate limits count them."""
    return estimate_tokens(request.system) + estimate_tokens(request.prompt)


def _template_values(config: Config, batch: Sequence[Thread]) -> dict[str, Any]:
    threads = [
        {
            "id": f"T{number}",
            "messages": [
                *prompts.message_rows(thread.context, role="context"),
                *prompts.message_rows(
                    thread.messages, start=len(thread.context) + 1, role="message"
                ),
            ],
        }
        for number, thread in enumerate(batch, 1)
    ]
    signals = any(prompts.has_signals((*t.context, *t.messages)) for t in batch)
    return {
        "project": config.project,
        "categories": config.categories,
        "threads": threads,
        "signals": signals,
    }


class PromptSize:
    """Token estimates of classify calls, measured on the template that will be rendered.

    The prompt is a fixed part plus one block per conversation, so a batch's size is the fixed
    part and the sum of its threads' blocks (rounded up, with room for longer ids).
    """

    def __init__(self, config: Config, repo_root: Path | None) -> None:
        self._config = config
        self._template = prompts.environment(repo_root).get_template("classify.md.j2")
        system = prompts.render("system.md.j2", repo_root=repo_root, project=config.project)
        empty = self._render([])
        self._empty = len(empty)
        self.fixed = estimate_tokens(system) + estimate_tokens(empty)
        self.room = config.limits.classify_batch_tokens - RETRY_RESERVE_TOKENS - self.fixed
        line = Message(
            stream="", id=1, author="user-00000000", sent_at=_ANY_TIME, text="x" * MIN_FIT_CHARS
        )
        self.smallest_thread = self.of(Thread(stream="", messages=(line, line)))

    def _render(self, batch: Sequence[Thread]) -> str:
        return self._template.render(**_template_values(self._config, batch))

    def of(self, thread: Thread) -> int:
        """The tokens one thread adds to a prompt."""
        chars = len(self._render([thread])) - self._empty + ID_RESERVE_CHARS
        return -(-chars // 4)


def fit_thread(
    thread: Thread, *, config: Config, max_tokens: int, cost: Callable[[Thread], int]
) -> Thread | None:
    """The thread trimmed to `threads.*` sizes, cut further until `cost` fits `max_tokens`.

    Halves the messages shown down to two, then their length down to MIN_FIT_CHARS; None when
    even that does not fit.
    """
    settings = config.threads
    keep = min(settings.max_messages, len(thread.messages) + len(thread.context))
    chars = settings.max_message_chars
    while True:
        shown = trim_thread(thread, max_messages=keep, max_message_chars=chars)
        if cost(shown) <= max_tokens:
            return shown
        if keep > 2:
            keep = max(2, keep // 2)
        elif chars > MIN_FIT_CHARS:
            chars = max(MIN_FIT_CHARS, chars // 2)
        else:
            return None


def _classify_batch(
    batch: Sequence[Thread],
    *,
    config: Config,
    llm: LLM,
    repo_root: Path | None,
    into: Classification,
) -> list[Thread]:
    """Classify one batch into `into`; returns the threads still without a verdict."""
    request = classify_request(batch, config=config, repo_root=repo_root)
    tokens = request_tokens(request)
    if tokens + RETRY_RESERVE_TOKENS > config.limits.classify_batch_tokens:
        # Only a repository's own classify template can get here (it is not measured per
        # conversation the way Pythia's is); refuse rather than send an oversized call.
        for thread in batch:
            into.failed[thread.key] = (
                f"the classify prompt came to about {tokens} tokens, over "
                "limits.classify_batch_tokens; raise it or shorten the classify template"
            )
        return []
    try:
        reply, _ = generate_model(llm, request, ClassifyReply)
    except MalformedReply as error:
        for thread in batch:
            into.failed[thread.key] = str(error)
        return []
    read_reply(reply, batch, config=config, into=into)
    return [thread for thread in batch if thread.key not in into.verdicts]


def classify_request(
    batch: Sequence[Thread], *, config: Config, repo_root: Path | None
) -> GenerateRequest:
    """The one call that classifies `batch`; its conversations are T1, T2, ... in order."""
    return request_for(
        config,
        stage="classify",
        model=config.models.classify,
        template="classify.md.j2",
        schema=ClassifyReply,
        repo_root=repo_root,
        **_template_values(config, batch),
    )


def read_reply(
    reply: ClassifyReply, batch: Sequence[Thread], *, config: Config, into: Classification
) -> None:
    """Verdicts of a reply about `batch` into `into`; an unknown id or category is skipped
    (treated as missing)."""
    by_id = {f"T{number}": thread for number, thread in enumerate(batch, 1)}
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
