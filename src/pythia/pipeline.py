"""The one place where the stages are wired together: sources to published proposals."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .backfill import Backfill, Collected
from .checks import SAFETY, EditChecks
from .classify import Classification, classify
from .config import Config
from .demand import (
    Asked,
    Group,
    below_threshold,
    evidence_for,
    group_by_section,
    join_made,
    made_entry,
    remember,
)
from .edits import PathPolicy
from .ingest import (
    Ingested,
    advance,
    fail,
    ingest,
    known_verdicts,
    record,
    remember_hits,
    stored_hits,
)
from .models import (
    Proposal,
    RunReport,
    Thread,
    Verdict,
)
from .outcomes import note, publish_failed, publish_parked, refuse, skip
from .ports import (
    LLM,
    ChatSource,
    LLMUnavailable,
    MalformedReply,
    Publisher,
    PublishError,
    PublisherUnavailable,
    PublishingBlocked,
    one_line,
)
from .propose import (
    NoChange,
    ProposalFailed,
    Refused,
    Searcher,
    propose_for,
    retrieve,
    search_queries,
)
from .proposecall import ProposePrompt, propose_prompt
from .questions import Known, Questions
from .safety import check_proposal, defang_proposal
from .state import (
    TERMINAL,
    Judged,
    Ledger,
    LedgerEntry,
    StateStore,
)
from .usage import BudgetExhausted, UsageMeter

log = logging.getLogger(__name__)

WAITING = "waiting for its batch job; a later run collects it"


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
    checks: EditChecks | None = None  # grounding, docs and build checks of every proposal
    started: float | None = None  # on `clock`, when the job began (indexing included)
    backfill: Backfill | None = None  # batch jobs for large piles of threads (backfill.py)
    known_queries: Known | None = None  # vectors of queries `warm` embedded (questions.py)


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

    def classify_should_stop() -> bool:
        """Classification also stops at its share of the caps, leaving the rest for proposals
        (chat order: what it judged is the oldest part of the chat)."""
        share = config.limits.classify_share
        cap = deps.meter.cap_reached(share)
        if cap is not None and deps.meter.exhausted_reason is None:
            report.stopped_early = report.stopped_early or (
                f"Classification used its share of the run's budget (limits.classify_share "
                f"{share:g} of {cap}), so the rest of the chat waits for the next run and what "
                "was classified got its proposals."
            )
            return True
        return should_stop()

    with _stage(report, "ingest", deps.clock):
        streams = [
            ingest(source, config=config, store=deps.store, now=now, since=deps.since)
            for source in deps.sources
        ]
    report.streams = [stream.report for stream in streams]
    by_key = {thread.key: (stream, thread) for stream in streams for thread in stream.settled}

    known = known_verdicts(by_key)
    pending = [thread for key, (_, thread) in by_key.items() if key not in known]
    collected = Collected()
    if deps.backfill is not None:
        with _stage(report, "backfill", deps.clock):
            states = {key: (stream.state, thread) for key, (stream, thread) in by_key.items()}
            collected, pending = deps.backfill.hook(
                states, pending, now=now, should_stop=should_stop
            )
        for key in sorted(collected.waiting & set(by_key)):
            skip(report, key, WAITING)
    batched = collected.verdicts
    classification: Classification | None
    with _stage(report, "classify", deps.clock):
        try:
            classification = classify(
                pending,
                config=config,
                llm=deps.llm,
                repo_root=deps.repo_root,
                should_stop=classify_should_stop,
            )
        except BudgetExhausted as error:
            report.stopped_early = one_line(error)
            classification = Classification() if batched else None
    if classification is not None:
        classification.verdicts = {**batched, **classification.verdicts}
    if classification is not None and classification.stopped:
        report.stopped_early = classification.stopped
        log.info("classification stopped: %s", classification.stopped)
    if classification is not None:
        report.prefiltered = len(classification.dropped)
        for key in classification.dropped:
            record(by_key[key], "prefiltered")
        for key, reason in classification.failed.items():
            fail(by_key[key], reason, config, report)
        for key, verdict in classification.verdicts.items():
            report.classified[verdict.category] = report.classified.get(verdict.category, 0) + 1
            if not verdict.doc_value:
                record(by_key[key], "no doc value")
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
        verdicts = {
            key: verdict
            for key, verdict in {**known, **classification.verdicts}.items()
            if key not in collected.waiting  # a proposal job has them
        }

        publish_parked(deps.ledger, deps.publisher, report)
        valuable = sorted(
            (v for v in verdicts.values() if v.doc_value),
            key=lambda verdict: _chat_order(by_key[verdict.thread_key][1]),
        )
        valuable = _answered_only(valuable, by_key, config, report)
        with _stage(report, "retrieve", deps.clock):
            asked = _retrieve(valuable, by_key, config, deps, report)
            remember_hits(asked, by_key)
        with _stage(report, "propose", deps.clock):
            groups = group_by_section(asked, ledger=deps.ledger)
            deferred: list[tuple[Group, ProposePrompt]] = []
            made: dict[str, LedgerEntry] = {}  # sections this run's proposals stand for
            questions = Questions(deps.known_queries) if deps.known_queries else None
            _propose_groups(
                groups, config, deps, report, by_key=by_key, should_stop=should_stop,
                batch=collected, deferred=deferred, made=made, questions=questions,
            )  # fmt: skip
            unsent = _send_deferred(deferred, deps, report, by_key=by_key, now=now)
            _propose_groups(
                unsent, config, deps, report, by_key=by_key, should_stop=should_stop,
                batch=Collected(), made=made, questions=questions,
            )  # fmt: skip
        for keys in collected.answers:  # a standing proposal took them, or the run stopped
            log.info("the batch answer for %s went unused; those conversations take the "
                     "normal path", ", ".join(keys))  # fmt: skip

    with _stage(report, "save", deps.clock):
        for stream in streams:
            advance(stream, now)
            if not dry_run:
                deps.store.save_stream(stream.state)
    report.usage = deps.meter.totals()
    return report


def _propose_groups(
    groups: Sequence[Group],
    config: Config,
    deps: Deps,
    report: RunReport,
    *,
    by_key: dict[str, tuple[Ingested, Thread]],
    should_stop: Callable[[], bool],
    batch: Collected,
    made: dict[str, LedgerEntry],
    questions: Questions | None,
    deferred: list[tuple[Group, ProposePrompt]] | None = None,
) -> None:
    """Each group's proposal, in order, until the run must stop; every member's outcome is
    recorded, except of a group deferred to a batch job (its threads wait for it). A group
    is first split by the proposals made before it (`made`, filled as they are made)."""
    for group in (p for whole in groups for p in join_made(whole, made, questions=questions)):
        if report.fatal or should_stop():
            return
        members = [by_key[item.thread.key] for item in group.asked]
        try:
            proposal = _propose_group(group, config, deps, report, batch=batch, deferred=deferred)
            if proposal is not None:
                new = made_entry(proposal, group, deps.ledger)
                made.update(new)
                if questions is not None:
                    for fingerprint in {entry.fingerprint for entry in new.values()}:
                        questions.remember(fingerprint, [item.verdict for item in group.asked])
        except PublishingBlocked as error:
            # A setting to fix, not the threads' fault: the proposal is parked.
            for member in members:
                record(member, "proposal parked: publishing is blocked")
            report.fatal = one_line(error)
            log.info("publishing blocked: %s", report.fatal)
            return
        except (BudgetExhausted, LLMUnavailable, PublisherUnavailable) as error:
            # An outage is not the threads' fault: no failure counted, tried next run.
            if isinstance(error, PublisherUnavailable):
                publish_failed(report, group.threads[0].key, error)
            report.stopped_early = one_line(error)
            log.info("proposals stopped: %s", report.stopped_early)
            return
        except PublishError as error:
            publish_failed(report, group.threads[0].key, error)
            for member in members:
                fail(member, str(error), config, report)
            continue
        except (ProposalFailed, MalformedReply) as error:
            for member in members:
                fail(member, str(error), config, report)
            continue
        if deferred and deferred[-1][0] is group:
            continue  # waits for its batch job
        for member in members:
            record(member, "proposal handled")


def _send_deferred(
    deferred: Sequence[tuple[Group, ProposePrompt]],
    deps: Deps,
    report: RunReport,
    *,
    by_key: dict[str, tuple[Ingested, Thread]],
    now: datetime,
) -> list[Group]:
    """The deferred groups' requests as one batch job; returns the groups it could not take
    (the job could not be created), which are proposed the normal way in this run."""
    if not deferred or deps.backfill is None:
        return [group for group, _ in deferred]
    sent = deps.backfill.submit_proposals(
        [
            (prompt, [(by_key[thread.key][0].state, thread) for thread in group.threads])
            for group, prompt in deferred
        ],
        now=now,
    )
    for key in sorted(sent):
        skip(report, key, WAITING)
    return [group for group, _ in deferred if group.threads[0].key not in sent]


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
            skip(report, verdict.thread_key, "not answered yet (publish.require_answer)")
            record(entry, "not answered")
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
        key: hits for key, (stream, _) in by_key.items() if (hits := stored_hits(stream, key))
    }
    fresh = [verdict for verdict in valuable if verdict.thread_key not in stored]
    try:
        deps.warm([query for verdict in fresh for query in search_queries(verdict)])
    except LLMUnavailable as error:
        report.stopped_early = one_line(error)
        log.info("retrieval stopped: %s", report.stopped_early)
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


def _propose_group(
    group: Group,
    config: Config,
    deps: Deps,
    report: RunReport,
    *,
    batch: Collected,
    deferred: list[tuple[Group, ProposePrompt]] | None = None,
) -> Proposal | None:
    """A group meets the proposal standing for its section (evidence, demand, or a decision
    already made), waits for more demand, or becomes one new proposal: from the answer a
    batch job gave for exactly its threads, else by a call, or, in a backfill run, by a
    request appended to `deferred` for the run's proposal job. Returns the new proposal once
    it went to the publisher."""
    entry = group.entry
    keys = [thread.key for thread in group.threads]
    if entry is not None and entry.status in TERMINAL:
        for key in keys:
            skip(report, key, f"maintainers already {entry.status} a proposal for this section")
        return None
    if entry is not None and entry.status == "open":
        if set(keys) <= set(entry.thread_keys):
            for key in keys:
                skip(report, key, "already in the PR")
            return None
        evidence = evidence_for(
            group,
            entry,
            quotes=config.publish.evidence_quotes,
            docs_domains=deps.docs_domains,
            allowed_domains=config.docs.allowed_link_domains,
        )
        report.publish_attempts += 1
        note(report, evidence, deps.publisher.publish(evidence))
        remember(deps.ledger, entry.fingerprint, group)
        return None
    if entry is not None and entry.status == "waiting" and entry.parked is not None:
        remember(deps.ledger, entry.fingerprint, group)
        for key in keys:
            skip(report, key, "its proposal waits for room under the PR limits; demand recorded")
        return None
    demand = group.demand.merged(entry.demand() if entry is not None else None)
    waiting = below_threshold(
        demand,
        min_conversations=config.publish.min_conversations,
        min_people=config.publish.min_people,
    )
    if waiting:
        remember(deps.ledger, group.key, group, reason=waiting)
        for key in keys:
            skip(report, key, f"waiting for more demand: {waiting}")
        return None
    conversations = [(item.thread, item.verdict) for item in group.asked]
    hits = group.hits(config.limits.search_k)
    answer = batch.answer_for(keys)
    if answer is None and deferred is not None and batch.defers(keys):
        prompt = propose_prompt(conversations, hits=hits, config=config, read=deps.read,
                                repo_root=deps.repo_root)  # fmt: skip
        if prompt is not None:  # without one, no call is made either
            deferred.append((group, prompt))
            return None
    outcome = propose_for(
        conversations,
        hits=hits,
        answer=answer,
        config=config,
        llm=deps.llm,
        read=deps.read,
        policy=PathPolicy.from_config(config.docs),
        repo_root=deps.repo_root,
        demand=demand,
        checks=deps.checks,
    )
    if isinstance(outcome, NoChange):
        for key in keys:
            skip(report, key, f"no change: {outcome.reason}")
        return None
    if isinstance(outcome, Refused):
        refuse(report, keys, outcome.kind, outcome.reason)
        return None
    if outcome.confidence < config.publish.min_confidence:
        for key in keys:
            skip(report, key, f"confidence {outcome.confidence:.2f} is too low")
        return None
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
        refuse(report, keys, SAFETY, "; ".join(problems))
        return None
    outcome = defang_proposal(
        outcome, docs_domains=deps.docs_domains, allowed_domains=config.docs.allowed_link_domains
    )
    report.publish_attempts += 1
    note(report, outcome, deps.publisher.publish(outcome))
    remember(deps.ledger, outcome.fingerprint, group, edited=outcome.paths)
    if entry is not None and entry.fingerprint != outcome.fingerprint and entry.parked is None:
        # The demand recorded while waiting now belongs to the proposal it became.
        moved = deps.ledger.proposals.pop(entry.fingerprint)
        remember(deps.ledger, outcome.fingerprint, group, earlier=moved, edited=outcome.paths)
    return outcome


@contextmanager
def _stage(report: RunReport, name: str, clock: Callable[[], float]) -> Iterator[None]:
    started = clock()
    try:
        yield
    finally:
        report.stage_seconds[name] = report.stage_seconds.get(name, 0.0) + clock() - started
