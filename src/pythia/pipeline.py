"""The one place where the stages are wired together: sources to published proposals."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import threads as threading_
from .classify import classify
from .config import Config
from .edits import PathPolicy
from .models import Message, Proposal, RunReport, StreamReport, Thread, Verdict
from .ports import (
    LLM,
    ChatSource,
    LLMUnavailable,
    MalformedReply,
    Published,
    Publisher,
    PublishError,
    PublisherUnavailable,
    PublishingBlocked,
    one_line,
)
from .propose import NoChange, ProposalFailed, Searcher, propose
from .safety import check_proposal, defang_proposal, sanitize_for_publishing
from .sources import read_stream
from .state import StateStore, StreamState
from .usage import BudgetExhausted, UsageMeter

log = logging.getLogger(__name__)


@dataclass
class Deps:
    """What a run talks to: `app.compose.build_deps` builds it, with real ports or doubles."""

    sources: Sequence[ChatSource]
    llm: LLM
    search: Searcher
    read: Callable[[str], str | None]
    publisher: Publisher
    store: StateStore
    meter: UsageMeter
    docs_domains: set[str] = field(default_factory=set)
    repo_root: Path | None = None
    clock: Callable[[], float] = time.monotonic
    since: bool = False
    parked: Callable[[], list[Proposal]] = list  # proposals that waited for room last time
    started: float | None = None  # on `clock`, when the job began (indexing included)


@dataclass
class Ingested:
    """One stream's new messages, its settled threads, and what will be recorded of them."""

    state: StreamState
    report: StreamReport
    after: int | None
    fetched: list[Message]
    settled: list[Thread]
    recorded: set[int] = field(default_factory=set)


class StopRun(Exception):
    """The run's budget (time, calls or tokens) is spent: start nothing new."""


def run(config: Config, deps: Deps, *, now: datetime, dry_run: bool = False) -> RunReport:
    """Read, classify, propose, publish; record every thread's outcome; save state."""
    report = RunReport(dry_run=dry_run)
    started = deps.started if deps.started is not None else deps.clock()
    deadline = started + config.limits.time_budget_minutes * 60

    def should_stop() -> bool:
        if deps.clock() >= deadline:
            report.stopped_early = report.stopped_early or "the time budget is spent"
            return True
        reason = deps.meter.exhausted_reason
        if reason is not None:
            report.stopped_early = report.stopped_early or reason
            return True
        return False

    with _stage(report, "ingest", deps.clock):
        streams = [
            ingest(source, config=config, store=deps.store, now=now, since=deps.since)
            for source in deps.sources
        ]
    report.streams = [stream.report for stream in streams]
    by_key = {thread.key: (stream, thread) for stream in streams for thread in stream.settled}

    with _stage(report, "classify", deps.clock):
        try:
            classification = classify(
                [thread for _, thread in by_key.values()],
                config=config,
                llm=deps.llm,
                repo_root=deps.repo_root,
                should_stop=should_stop,
            )
        except BudgetExhausted as error:
            report.stopped_early = one_line(error)
            classification = None
    if classification is not None and classification.stopped:
        report.stopped_early = classification.stopped
        log.info("classification stopped: %s", classification.stopped)
    if classification is not None:
        report.prefiltered = len(classification.dropped)
        for key in classification.dropped:
            _record(by_key[key], "prefiltered")
        for key, reason in classification.failed.items():
            _fail(by_key[key], reason, config, report)
        for key, verdict in classification.verdicts.items():
            report.classified[verdict.category] = report.classified.get(verdict.category, 0) + 1
            if not verdict.doc_value:
                _record(by_key[key], "no doc value")

        with _stage(report, "propose", deps.clock):
            _publish_parked(deps, report)
            valuable = [v for v in classification.verdicts.values() if v.doc_value]
            for verdict in valuable:
                if should_stop():
                    break
                stream, thread = by_key[verdict.thread_key]
                try:
                    _propose_and_publish(thread, verdict, config, deps, report)
                except PublishingBlocked as error:
                    # A setting to fix, not the thread's fault: its proposal is parked.
                    _record((stream, thread), "proposal parked: publishing is blocked")
                    report.fatal = one_line(error)
                    log.info("publishing blocked: %s", report.fatal)
                    break
                except (BudgetExhausted, LLMUnavailable, PublisherUnavailable) as error:
                    # An outage is not the thread's fault: no failure counted, tried next run.
                    if isinstance(error, PublisherUnavailable):
                        _publish_failed(report, thread.key, error)
                    report.stopped_early = one_line(error)
                    log.info("proposals stopped: %s", report.stopped_early)
                    break
                except PublishError as error:
                    _publish_failed(report, thread.key, error)
                    _fail((stream, thread), str(error), config, report)
                    continue
                except (ProposalFailed, MalformedReply) as error:
                    _fail((stream, thread), str(error), config, report)
                    continue
                _record((stream, thread), "proposal handled")

    with _stage(report, "save", deps.clock):
        for stream in streams:
            _advance(stream, now)
            if not dry_run:
                deps.store.save_stream(stream.state)
    report.usage = deps.meter.totals()
    return report


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
    done = set(state.done_ids)
    grouped, settled = threading_.ready_threads(
        batch.messages, done=done, now=now, settings=config.threads
    )
    report.messages_read = sum(1 for message in batch.messages if message.id not in done)
    report.threads = len(grouped)
    report.threads_settled = len(settled)
    state.last_read_at = now
    state.messages_read_total += report.messages_read
    return Ingested(
        state=state, report=report, after=batch.after, fetched=list(batch.messages),
        settled=settled,
    )


def _propose_and_publish(
    thread: Thread, verdict: Verdict, config: Config, deps: Deps, report: RunReport
) -> None:
    policy = PathPolicy.from_config(config.docs)
    outcome = propose(
        thread,
        verdict,
        config=config,
        llm=deps.llm,
        search=deps.search,
        read=deps.read,
        policy=policy,
        repo_root=deps.repo_root,
    )
    if isinstance(outcome, NoChange):
        _skip(report, thread.key, f"no change: {outcome.reason}")
        return
    if outcome.confidence < config.publish.min_confidence:
        _skip(report, thread.key, f"confidence {outcome.confidence:.2f} is too low")
        return
    before = {path: deps.read(path) or "" for path, _ in outcome.files}
    problems = check_proposal(
        before=before,
        after=dict(outcome.files),
        docs_domains=deps.docs_domains,
        allowed_domains=config.docs.allowed_link_domains,
        max_changed_lines=config.limits.max_changed_lines,
    )
    if problems:
        _skip(report, thread.key, "refused: " + "; ".join(problems))
        return
    outcome = defang_proposal(
        outcome, docs_domains=deps.docs_domains, allowed_domains=config.docs.allowed_link_domains
    )
    report.publish_attempts += 1
    _note(report, outcome, deps.publisher.publish(outcome))


def _publish_parked(deps: Deps, report: RunReport) -> None:
    """Proposals that waited under the PR limits go first: they were judged already."""
    for proposal in deps.parked():
        report.publish_attempts += 1
        try:
            published = deps.publisher.publish(proposal)
        except PublishingBlocked as error:
            report.fatal = one_line(error)
            log.info("publishing blocked: %s", report.fatal)
            return
        except PublisherUnavailable as error:
            _publish_failed(report, proposal.thread_key, error)
            report.stopped_early = one_line(error)
            return
        except PublishError as error:
            _publish_failed(report, proposal.thread_key, error)
            report.failed.append((proposal.thread_key, sanitize_for_publishing(str(error))))
            continue
        _note(report, proposal, published)


def _note(report: RunReport, proposal: Proposal, published: Published) -> None:
    report.proposal_lines[published.url] = (
        f"[{proposal.category}, confidence {proposal.confidence:.2f}] {proposal.title} "
        f"({', '.join(proposal.paths)})"
    )
    if published.action == "opened":
        report.proposals_opened.append(published.url)
    elif published.action == "previewed":
        report.proposals_previewed.append(published.url)
    elif published.action == "updated":
        report.proposals_updated.append(published.url)
    else:
        _skip(report, proposal.thread_key, published.reason or published.action)


def _publish_failed(report: RunReport, thread_key: str, error: PublishError) -> None:
    """Remember why a proposal did not get through, by cause, for the run's annotations."""
    report.publish_failed.append((thread_key, sanitize_for_publishing(one_line(error.cause))))


def _skip(report: RunReport, thread_key: str, reason: str) -> None:
    report.skipped.append((thread_key, sanitize_for_publishing(reason)))


def _record(entry: tuple[Ingested, Thread], outcome: str) -> None:
    stream, thread = entry
    stream.recorded.update(thread.message_ids)
    stream.state.failures.pop(thread.key, None)
    log.debug("thread %s: %s", thread.key, outcome)


def _fail(entry: tuple[Ingested, Thread], reason: str, config: Config, report: RunReport) -> None:
    """Count a failure; after `max_failures` the thread is given up and its outcome recorded."""
    stream, thread = entry
    # The reason lands in the data branch, the summary and the dashboard: publishable only.
    reason = sanitize_for_publishing(reason)
    count = stream.state.record_failure(thread.key, reason)
    report.failed.append((thread.key, reason))
    if count >= config.threads.max_failures:
        _record(entry, f"gave up after {count} failures")


def _advance(stream: Ingested, now: datetime) -> None:
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


@contextmanager
def _stage(report: RunReport, name: str, clock: Callable[[], float]) -> Iterator[None]:
    started = clock()
    try:
        yield
    finally:
        report.stage_seconds[name] = report.stage_seconds.get(name, 0.0) + clock() - started
