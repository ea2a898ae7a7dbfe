"""A stream's part of a run: its new messages and settled threads, what is recorded of them,
the verdicts an earlier run paid for, and where the watermark moves."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from . import threads as threading_
from .config import Config
from .demand import Asked
from .models import Hit, Message, RunReport, StreamReport, Thread, Verdict
from .ports import ChatSource, one_line
from .safety import sanitize_for_publishing
from .sources import read_stream
from .state import SourceRef, StateStore, StreamState

log = logging.getLogger(__name__)


@dataclass
class Ingested:
    """One stream's new messages, its settled threads, and what will be recorded of them."""

    state: StreamState
    report: StreamReport
    after: int | None
    fetched: list[Message]
    settled: list[Thread]
    recorded: set[int] = field(default_factory=set)


def ingest(
    source: ChatSource, *, config: Config, store: StateStore, now: datetime, since: bool = False
) -> Ingested:
    """Read a stream past its watermark (or from its start with `since`) and group the threads;
    a stream that cannot be read reports why and leaves its stored state exactly as it was."""
    state = store.load_stream(source.stream)
    report = StreamReport(stream=source.stream, watermark_before=state.watermark)
    try:
        # --since reprocesses from where the source's (overridden) `start` says.
        batch = read_stream(source, None if since else state.watermark)
    except Exception as error:  # one broken stream must not stop the others
        report.error = one_line(error)  # the run's report annotates it as a warning
        log.info("stream %s: %s", source.stream, report.error)
        # The stored state stays exactly as it was: no reset, no move.
        return Ingested(state=state, report=report, after=None, fetched=[], settled=[])
    finally:
        source.close()
    if since:
        state.watermark = None
        state.done_ids = []
    if batch.interrupted:
        report.error = batch.interrupted
        log.info("stream %s: %s", source.stream, batch.interrupted)
    # Ids at or below where the fetch started are recorded by definition: a forum sends a topic
    # that gained posts whole, and its earlier posts are context (sources.forum).
    done = set(state.done_ids) | {m.id for m in batch.messages if m.id <= batch.after}
    grouped, settled = threading_.ready_threads(
        batch.messages,
        done=done,
        now=now,
        settings=config.threads,
        noise=threading_.noise_rule(config.prefilter),
    )
    report.messages_read = sum(1 for message in batch.messages if message.id not in done)
    report.threads = len(grouped)
    report.threads_settled = len(settled)
    state.last_read_at = now
    state.messages_read_total += report.messages_read
    return Ingested(
        state=state,
        report=report,
        after=batch.after,
        fetched=list(batch.messages),
        settled=settled,
    )


def known_verdicts(by_key: dict[str, tuple[Ingested, Thread]]) -> dict[str, Verdict]:
    """Verdicts an earlier run paid for on threads that have not changed since. Only the
    category was kept (no chat text on the data branch), so the thread's opening message
    stands in for the summary and the search query."""
    known = {}
    for key, (stream, thread) in by_key.items():
        judged = stream.state.judged.get(key)
        if judged is None or judged.digest != thread.digest:
            continue
        opening = " ".join(thread.messages[0].text.split())
        known[key] = Verdict(
            thread_key=key,
            category=judged.category,
            doc_value=True,
            summary=opening[:300],
            reason="judged worth documenting by an earlier run",
            queries=(opening[:300],),
            confidence=judged.confidence,
        )
    return known


def stored_hits(stream: Ingested, key: str) -> tuple[Hit, ...]:
    judged = stream.state.judged.get(key)
    if judged is None:
        return ()
    return tuple(Hit(ref.path, ref.heading, ref.anchor, ref.score, "") for ref in judged.hits)


def remember_hits(asked: Sequence[Asked], by_key: dict[str, tuple[Ingested, Thread]]) -> None:
    """The sections each paid-for verdict was matched to (docs paths and headings only)."""
    for item in asked:
        stream, _ = by_key[item.thread.key]
        judged = stream.state.judged.get(item.thread.key)
        if judged is None or judged.hits:
            continue
        refs = [SourceRef(path=h.path, heading=h.heading, anchor=h.anchor, score=h.score)
                for h in item.hits]  # fmt: skip
        stream.state.judged = {
            **stream.state.judged,
            item.thread.key: judged.model_copy(update={"hits": refs}),
        }


def record(entry: tuple[Ingested, Thread], outcome: str) -> None:
    stream, thread = entry
    stream.recorded.update(thread.message_ids)
    stream.state.failures.pop(thread.key, None)
    if thread.key in stream.state.judged:
        stream.state.judged = {k: v for k, v in stream.state.judged.items() if k != thread.key}
    log.debug("thread %s: %s", thread.key, outcome)


def fail(entry: tuple[Ingested, Thread], reason: str, config: Config, report: RunReport) -> None:
    """Count a failure; after `max_failures` the thread is given up and its outcome recorded."""
    stream, thread = entry
    # The reason lands in the data branch, the summary and the dashboard: publishable only.
    reason = sanitize_for_publishing(reason)
    count = stream.state.record_failure(thread.key, reason)
    report.failed.append((thread.key, reason))
    if count >= config.threads.max_failures:
        record(entry, f"gave up after {count} failures")


def advance(stream: Ingested, now: datetime) -> None:
    state = stream.state
    if stream.after is None:
        return  # the stream could not even say where to start; nothing moves
    done = set(state.done_ids) | stream.recorded
    watermark = threading_.next_watermark(
        [message.id for message in stream.fetched], done=done, watermark=stream.after
    )
    state.mark_done(sorted(stream.recorded))
    state.advance(watermark)
    stream.report.watermark_after = state.watermark
