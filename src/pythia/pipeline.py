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
from .demand import Asked, Group, below_threshold, group_by_section
from .edits import PathPolicy
from .handles import member_handles
from .models import (
    Evidence,
    Hit,
    Message,
    Proposal,
    RunReport,
    StreamReport,
    Thread,
    Verdict,
)
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
from .propose import (
    NoChange,
    ProposalFailed,
    Searcher,
    propose_for,
    quote_of,
    retrieve,
    search_queries,
)
from .safety import check_proposal, defang_proposal, sanitize_for_publishing
from .sources import read_stream
from .state import (
    TERMINAL,
    Judged,
    Ledger,
    LedgerEntry,
    SourceRef,
    StateStore,
    StreamState,
)
from .usage import BudgetExhausted, UsageMeter

log = logging.getLogger(__name__)

EVIDENCE_PER_THREAD = 5  # messages of each new conversation shown on an open PR


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
    ledger: Ledger = field(default_factory=Ledger)  # the publisher records into the same one
    warm: Callable[[Sequence[str]], None] = lambda _queries: None  # embed a run's queries at once
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

    known = _known_verdicts(by_key)
    with _stage(report, "classify", deps.clock):
        try:
            classification = classify(
                [thread for key, (_, thread) in by_key.items() if key not in known],
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
        log.warning("classification stopped: %s", classification.stopped)
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
            else:  # paid for: if this run cannot finish it, the next one reuses the verdict
                stream, thread = by_key[key]
                stream.state.judged = {
                    **stream.state.judged,
                    key: Judged(
                        digest=thread.digest,
                        category=verdict.category,
                        confidence=verdict.confidence,
                    ),
                }
        verdicts = {**known, **classification.verdicts}

        _publish_parked(deps, report)
        valuable = sorted(
            (v for v in verdicts.values() if v.doc_value),
            key=lambda verdict: _chat_order(by_key[verdict.thread_key][1]),
        )
        valuable = _answered_only(valuable, by_key, config, report)
        with _stage(report, "retrieve", deps.clock):
            asked = _retrieve(valuable, by_key, config, deps, report)
            _remember_hits(asked, by_key)
        with _stage(report, "propose", deps.clock):
            for group in group_by_section(asked, ledger=deps.ledger):
                if report.fatal or should_stop():
                    break
                members = [by_key[item.thread.key] for item in group.asked]
                try:
                    _propose_group(group, config, deps, report)
                except PublishingBlocked as error:
                    # A setting to fix, not the threads' fault: the proposal is parked.
                    for member in members:
                        _record(member, "proposal parked: publishing is blocked")
                    report.fatal = one_line(error)
                    log.error("%s", report.fatal)
                    break
                except (BudgetExhausted, LLMUnavailable, PublisherUnavailable) as error:
                    # An outage is not the threads' fault: no failure counted, tried next run.
                    report.stopped_early = one_line(error)
                    log.warning("proposals stopped: %s", report.stopped_early)
                    break
                except (ProposalFailed, MalformedReply, PublishError) as error:
                    for member in members:
                        _fail(member, str(error), config, report)
                    continue
                for member in members:
                    _record(member, "proposal handled")

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
        report.error = one_line(error)
        log.warning("stream %s: %s", source.stream, report.error)
        # The stored state stays exactly as it was: no reset, no move.
        return Ingested(state=state, report=report, after=None, fetched=[], settled=[])
    finally:
        source.close()
    if since:
        state.watermark = None
        state.done_ids = []
    if batch.interrupted:
        report.error = batch.interrupted
        log.warning("stream %s: %s", source.stream, batch.interrupted)
    # Ids at or below where the fetch started are recorded by definition: a forum sends a topic
    # that gained posts whole, and its earlier posts are context (sources.forum).
    done = set(state.done_ids) | {m.id for m in batch.messages if m.id <= batch.after}
    grouped, settled = threading_.ready_threads(
        batch.messages, done=done, now=now, settings=config.threads
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


def _known_verdicts(by_key: dict[str, tuple[Ingested, Thread]]) -> dict[str, Verdict]:
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


def _answered_only(
    valuable: Sequence[Verdict],
    by_key: dict[str, tuple[Ingested, Thread]],
    config: Config,
    report: RunReport,
) -> list[Verdict]:
    """With `publish.require_answer`, a doc-worthy conversation nobody answered is skipped and
    its outcome recorded: an answer that comes later arrives as a new message (a forum's
    accepted answer takes the time it was chosen) and the conversation is judged again."""
    if not config.publish.require_answer:
        return list(valuable)
    kept = []
    for verdict in valuable:
        entry = by_key[verdict.thread_key]
        if entry[1].answered is None:
            _skip(report, verdict.thread_key, "not answered yet (publish.require_answer)")
            _record(entry, "not answered")
        else:
            kept.append(verdict)
    return kept


def _chat_order(thread: Thread) -> tuple[datetime, str]:
    return (thread.messages[0].sent_at, thread.key)


def _retrieve(
    valuable: Sequence[Verdict],
    by_key: dict[str, tuple[Ingested, Thread]],
    config: Config,
    deps: Deps,
    report: RunReport,
) -> list[Asked]:
    """Every doc-worthy conversation with its docs sections; the queries of all of them are
    embedded together first (a run's searches cost a request per hundred, not one each).
    A verdict an earlier run paid for keeps the sections it was matched to then."""
    stored = {
        key: hits for key, (stream, _) in by_key.items() if (hits := _stored_hits(stream, key))
    }
    fresh = [verdict for verdict in valuable if verdict.thread_key not in stored]
    try:
        deps.warm([query for verdict in fresh for query in search_queries(verdict)])
    except LLMUnavailable as error:
        report.stopped_early = one_line(error)
        log.warning("retrieval stopped: %s", report.stopped_early)
        return []
    return [
        Asked(
            thread=by_key[verdict.thread_key][1],
            verdict=verdict,
            hits=stored.get(verdict.thread_key)
            or tuple(retrieve(verdict, search=deps.search, k=config.limits.search_k)),
        )
        for verdict in valuable
    ]


def _stored_hits(stream: Ingested, key: str) -> tuple[Hit, ...]:
    judged = stream.state.judged.get(key)
    if judged is None:
        return ()
    return tuple(Hit(ref.path, ref.heading, ref.anchor, ref.score, "") for ref in judged.hits)


def _remember_hits(asked: Sequence[Asked], by_key: dict[str, tuple[Ingested, Thread]]) -> None:
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


def _propose_group(group: Group, config: Config, deps: Deps, report: RunReport) -> None:
    """A group meets the proposal standing for its section (evidence, demand, or a decision
    already made), waits for more demand, or becomes one new proposal."""
    entry = group.entry
    keys = [thread.key for thread in group.threads]
    if entry is not None and entry.status in TERMINAL:
        for key in keys:
            _skip(report, key, f"maintainers already {entry.status} a proposal for this section")
        return
    if entry is not None and entry.status == "open":
        if set(keys) <= set(entry.thread_keys):
            for key in keys:
                _skip(report, key, "already in the PR")
            return
        evidence = _evidence_only(group, entry, config, deps)
        _note(report, evidence, deps.publisher.publish(evidence))
        _remember(deps.ledger, entry.fingerprint, group)
        return
    if entry is not None and entry.status == "waiting" and entry.parked is not None:
        _remember(deps.ledger, entry.fingerprint, group)
        for key in keys:
            _skip(report, key, "its proposal waits for room under the PR limits; demand recorded")
        return
    demand = group.demand.merged(entry.demand() if entry is not None else None)
    waiting = below_threshold(
        demand,
        min_conversations=config.publish.min_conversations,
        min_people=config.publish.min_people,
    )
    if waiting:
        _remember(deps.ledger, group.key, group, reason=waiting)
        for key in keys:
            _skip(report, key, f"waiting for more demand: {waiting}")
        return
    outcome = propose_for(
        [(item.thread, item.verdict) for item in group.asked],
        hits=group.hits(config.limits.search_k),
        config=config,
        llm=deps.llm,
        read=deps.read,
        policy=PathPolicy.from_config(config.docs),
        repo_root=deps.repo_root,
        demand=demand,
    )
    if isinstance(outcome, NoChange):
        for key in keys:
            _skip(report, key, f"no change: {outcome.reason}")
        return
    if outcome.confidence < config.publish.min_confidence:
        for key in keys:
            _skip(report, key, f"confidence {outcome.confidence:.2f} is too low")
        return
    before = {path: deps.read(path) or "" for path, _ in outcome.files}
    problems = check_proposal(
        before=before,
        after=dict(outcome.files),
        docs_domains=deps.docs_domains,
        allowed_domains=config.docs.allowed_link_domains,
        max_changed_lines=config.limits.max_changed_lines,
        max_changed_chars=config.limits.max_changed_chars,
    )
    if problems:
        for key in keys:
            _skip(report, key, "refused: " + "; ".join(problems))
        return
    outcome = defang_proposal(
        outcome, docs_domains=deps.docs_domains, allowed_domains=config.docs.allowed_link_domains
    )
    _note(report, outcome, deps.publisher.publish(outcome))
    _remember(deps.ledger, outcome.fingerprint, group)
    if entry is not None and entry.fingerprint != outcome.fingerprint and entry.parked is None:
        # The demand recorded while waiting now belongs to the proposal it became.
        moved = deps.ledger.proposals.pop(entry.fingerprint)
        _remember(deps.ledger, outcome.fingerprint, group, earlier=moved)


def _evidence_only(group: Group, entry: LedgerEntry, config: Config, deps: Deps) -> Proposal:
    """New conversations for an open PR, as the evidence comment shows them; no model call."""
    first = group.threads[0]
    messages = [m for thread in group.threads for m in thread.messages[:EVIDENCE_PER_THREAD]]
    quotes = config.publish.evidence_quotes
    summaries = dict.fromkeys(" ".join(i.verdict.summary.split()) for i in group.asked)
    members = member_handles(m for thread in group.threads for m in thread.messages)
    return defang_proposal(
        Proposal(
            fingerprint=entry.fingerprint,
            stream=first.stream,
            thread_key=first.key,
            category=entry.category or group.asked[0].verdict.category,
            title=entry.title,
            summary=sanitize_for_publishing(" ".join(s for s in summaries if s), members=members),
            reasoning="",
            confidence=entry.confidence,
            edits=(),
            diff="",
            files=(),
            evidence=tuple(
                Evidence(
                    message_id=m.id,
                    author=m.author,
                    sent_at=m.sent_at,
                    quote=quote_of(m.text, members=members) if quotes else "",
                    permalink=m.permalink,
                )
                for m in messages
            ),
            demand=group.demand.merged(entry.demand()),
        ),
        docs_domains=deps.docs_domains,
        allowed_domains=config.docs.allowed_link_domains,
    )


def _remember(
    ledger: Ledger,
    fingerprint: str,
    group: Group,
    *,
    reason: str = "",
    earlier: LedgerEntry | None = None,
) -> None:
    """Add the group's demand (ids and counts only) and its section to a ledger entry; with
    `reason`, a gap still waiting for demand gets an entry of its own."""
    entry = ledger.get(fingerprint)
    if entry is None:
        if not reason:
            return  # a publisher that keeps no ledger (a dry run, a test double)
        top = group.hits(1)
        entry = LedgerEntry(
            fingerprint=fingerprint,
            status="waiting",
            category=group.asked[0].verdict.category,
            title=f"{top[0].path} › {top[0].heading}" if top and top[0].heading else "",
        )
    if reason:
        entry = entry.model_copy(update={"reason": reason})
    entry = entry.with_demand(group.demand)
    if earlier is not None:
        entry = entry.with_demand(earlier.demand())
    targets = {*entry.targets, group.key, *(earlier.targets if earlier else ())}
    ledger.put(entry.model_copy(update={"targets": sorted(targets)}))


def _publish_parked(deps: Deps, report: RunReport) -> None:
    """Proposals that waited under the PR limits go first: they were judged already."""
    for proposal in deps.ledger.parked():
        try:
            published = deps.publisher.publish(proposal)
        except PublishingBlocked as error:
            report.fatal = one_line(error)
            log.error("%s", report.fatal)
            return
        except PublisherUnavailable as error:
            report.stopped_early = one_line(error)
            return
        except PublishError as error:
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
    elif published.action == "updated":
        report.proposals_updated.append(published.url)
    else:
        _skip(report, proposal.thread_key, published.reason or published.action)


def _skip(report: RunReport, thread_key: str, reason: str) -> None:
    report.skipped.append((thread_key, sanitize_for_publishing(reason)))


def _record(entry: tuple[Ingested, Thread], outcome: str) -> None:
    stream, thread = entry
    stream.recorded.update(thread.message_ids)
    stream.state.failures.pop(thread.key, None)
    if thread.key in stream.state.judged:
        stream.state.judged = {k: v for k, v in stream.state.judged.items() if k != thread.key}
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
