"""Backfills through the Gemini Batch API: a large pile of waiting threads is classified, and
the new groups of doc-worthy ones are proposed, by batch jobs at the batch price instead of
synchronous calls. The stream state records each job's name, stage and thread ids with their
digests (never chat text, never docs text); a later run collects the answers within its time
budget, and a job that failed or expired sends its threads down the normal path.

A run is a backfill run with `pythia run --backfill`, or when more than
`limits.backfill_threads` threads wait to be classified. Its classification goes to one job;
the proposals of groups that would cost a call go to another, sent after the run's proposals,
each request under its group's thread keys. The run that collects a proposal job re-reads those
threads from the source (the watermark did not pass them), rebuilds their group, and hands the
answer to `propose.propose_for`, which validates it as it would a call's; a changed thread, an
answer that does not parse, or one that would need the model again is proposed the normal way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal, Protocol

from pydantic import ValidationError

from .classify import Classification, ClassifyReply, classify_request, plan, read_reply
from .config import Config
from .models import Message, Thread, Verdict
from .ports import GenerateRequest, Generation, one_line
from .proposecall import BatchAnswer, ProposePrompt
from .state import PendingBatch, StreamState
from .structured import parse_reply
from .usage import UsageMeter

log = logging.getLogger(__name__)

# The Gemini Batch API bills half the interactive price
# (https://ai.google.dev/gemini-api/docs/batch-mode).
BATCH_PRICE_FACTOR = 0.5
# Jobs expire after 48 hours on Google's side; a record older than this is given up.
MAX_JOB_AGE = timedelta(hours=72)

JobState = Literal["pending", "succeeded", "failed"]


@dataclass(frozen=True)
class JobResult:
    """A job's state and, once it succeeded, each request's answer (or why it has none)."""

    state: JobState
    answers: Mapping[str, Generation | str] = field(default_factory=dict)
    detail: str = ""


class BatchClient(Protocol):
    """A batch API: send requests under keys as one job; look a job up by its name."""

    def submit(self, requests: Mapping[str, GenerateRequest], *, model: str, label: str) -> str:
        """Create the job; returns its name."""
        ...

    def poll(self, name: str) -> JobResult: ...


@dataclass
class Collected:
    """What a run took from finished jobs, and the threads still waiting on running ones."""

    verdicts: dict[str, Verdict] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)
    fell_back: list[str] = field(default_factory=list)  # job names sent to the normal path
    # Proposal answers by their group's thread keys (sorted), each thread unchanged since.
    answers: dict[tuple[str, ...], BatchAnswer] = field(default_factory=dict)
    redo: set[str] = field(default_factory=set)  # threads of proposal jobs finished this run
    backfilling: bool = False  # this run sends new groups' proposals to a batch job

    def answer_for(self, thread_keys: Sequence[str]) -> BatchAnswer | None:
        """The collected answer for a group of exactly these threads (taken once)."""
        return self.answers.pop(tuple(sorted(thread_keys)), None)

    def defers(self, thread_keys: Sequence[str]) -> bool:
        """Whether a new group's proposal goes to a batch job: in a backfill run, unless one of
        its threads came back from a proposal job this run (those go the normal way, so no
        conversation waits for a second job)."""
        return self.backfilling and not self.redo & set(thread_keys)


class Backfill:
    """The pipeline's hook for batch jobs: `collect` first, then `submit` what waits to be
    classified; after the run's proposals, `submit_proposals` sends a backfill's new groups."""

    def __init__(
        self,
        client: BatchClient,
        *,
        config: Config,
        meter: UsageMeter,
        always: bool = False,
        repo_root: Path | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.meter = meter
        self.always = always
        self.repo_root = repo_root

    def wanted(self, waiting: int) -> bool:
        """Whether `waiting` threads to classify go to a batch job (`--backfill`, or more than
        `limits.backfill_threads`)."""
        return waiting > 0 and (self.always or waiting > self.config.limits.backfill_threads)

    def collect(
        self,
        threads: Mapping[str, tuple[StreamState, Thread]],
        *,
        now: datetime,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Collected:
        """Look up every recorded job (once each, while the run has time): a finished one
        becomes verdicts, or proposal answers, for its threads that have not changed since,
        and is forgotten; a failed, expired or too old one is forgotten, so its threads are
        classified or proposed as usual; a running one keeps its threads waiting."""
        collected = Collected()
        jobs: dict[str, PendingBatch] = {}
        for state in {id(s): s for s, _ in threads.values()}.values():
            for job in state.pending_batches:
                jobs.setdefault(job.name, job)
        states = list({id(s): s for s, _ in threads.values()}.values())
        for name, job in jobs.items():
            if should_stop():
                collected.waiting |= set(job.digests)
                continue
            try:
                result = self.client.poll(name)
            except Exception as error:  # a lookup that fails waits for the next run
                log.warning("batch job %s could not be looked up: %s", name, one_line(error))
                collected.waiting |= set(job.digests)
                continue
            if result.state == "pending" and now - job.submitted_at < MAX_JOB_AGE:
                collected.waiting |= set(job.digests)
                continue
            if result.state == "succeeded":
                read = self._read_proposals if job.stage == "propose" else self._read
                read(job, result, threads, into=collected)
            else:
                why = result.detail or ("too old" if result.state == "pending" else "failed")
                log.warning("batch job %s %s; its threads go the normal way", name, why)
                collected.fell_back.append(name)
            if job.stage == "propose":
                collected.redo |= set(job.digests)
            for state in states:
                kept = [j for j in state.pending_batches if j.name != name]
                if len(kept) != len(state.pending_batches):
                    state.pending_batches = kept
        return collected

    def _read(
        self,
        job: PendingBatch,
        result: JobResult,
        threads: Mapping[str, tuple[StreamState, Thread]],
        *,
        into: Collected,
    ) -> None:
        for key, thread_keys, answer in self._paid_answers(job, result):
            try:
                reply = parse_reply(answer.text, ClassifyReply)
            except ValidationError:
                log.warning("batch job %s: request %s did not match the schema", job.name, key)
                continue
            # The threads as they were sent, by position; one that changed since is left out
            # (its verdict judged other messages) and classified again as usual.
            current = [threads.get(thread_key) for thread_key in thread_keys]
            shown = [
                entry[1] if entry and entry[1].digest == job.digests.get(thread_key) else None
                for thread_key, entry in zip(thread_keys, current, strict=True)
            ]
            placeholders = [
                thread or _absent(position) for position, thread in enumerate(shown, 1)
            ]
            found = Classification()
            read_reply(reply, placeholders, config=self.config, into=found)
            for thread_key, verdict in found.verdicts.items():
                if not thread_key.startswith(_ABSENT):
                    into.verdicts[thread_key] = verdict

    def _paid_answers(
        self, job: PendingBatch, result: JobResult
    ) -> Iterator[tuple[str, list[str], Generation]]:
        """Each request's key, thread keys and answer, its usage recorded at the batch price;
        a request without an answer is logged and its conversations take the normal path."""
        for key, thread_keys in job.requests.items():
            answer = result.answers.get(key)
            if not isinstance(answer, Generation):
                log.warning("batch job %s: request %s has no answer (%s); its conversations "
                            "take the normal path", job.name, key, answer)  # fmt: skip
                continue
            self.meter.record(
                job.stage, job.model, answer.usage, price_factor=BATCH_PRICE_FACTOR
            )
            yield key, list(thread_keys), answer

    def _read_proposals(
        self,
        job: PendingBatch,
        result: JobResult,
        threads: Mapping[str, tuple[StreamState, Thread]],
        *,
        into: Collected,
    ) -> None:
        """Each answer under its group's thread keys, when every thread is here as it was sent;
        the pipeline validates it when it meets that group (`propose.propose_for`)."""
        for key, thread_keys, answer in self._paid_answers(job, result):
            changed = [
                thread_key
                for thread_key in thread_keys
                if (entry := threads.get(thread_key)) is None
                or entry[1].digest != job.digests.get(thread_key)
            ]
            if changed:
                log.info("batch job %s: %s changed since it was sent; its group is proposed "
                         "the normal way", job.name, ", ".join(changed))  # fmt: skip
                continue
            numbered = tuple(job.numbered.get(key, ()))
            into.answers[tuple(sorted(thread_keys))] = BatchAnswer(answer, numbered)

    def hook(
        self,
        threads: Mapping[str, tuple[StreamState, Thread]],
        pending: Sequence[Thread],
        *,
        now: datetime,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> tuple[Collected, list[Thread]]:
        """What the pipeline calls before classifying `pending`: collect finished jobs, leave
        out the threads that wait for running ones, and send a batch job when the rest are
        many (or `--backfill` asked). Returns what was collected and what is left to classify
        now. The run is a backfill, whose new groups' proposals go to a batch job as well,
        with `--backfill` or when the threads to classify, those collected included, are many."""
        collected = self.collect(threads, now=now, should_stop=should_stop)
        collected.backfilling = self.always or self.wanted(len(pending))
        left = [
            thread
            for thread in pending
            if thread.key not in collected.verdicts and thread.key not in collected.waiting
        ]
        if self.wanted(len(left)) and not should_stop():
            sent = self.submit([threads[thread.key] for thread in left], now=now)
            collected.waiting |= sent
            left = [thread for thread in left if thread.key not in sent]
        return collected, left

    def submit(
        self,
        threads: Sequence[tuple[StreamState, Thread]],
        *,
        now: datetime,
    ) -> set[str]:
        """Send the threads' classification as one batch job and record it in each stream's
        state; returns the keys of the threads now waiting for it (none if sending failed)."""
        laid_out = plan([thread for _, thread in threads], config=self.config,
                        repo_root=self.repo_root)  # fmt: skip
        requests: dict[str, GenerateRequest] = {}
        members: dict[str, list[str]] = {}
        for number, batch in enumerate(laid_out.batches, 1):
            key = f"classify-{number}"
            requests[key] = classify_request(batch, config=self.config, repo_root=self.repo_root)
            members[key] = [laid_out.original[thread.key] for thread in batch]
        return self._send("classify", self.config.models.classify, requests, members,
                          threads, now=now)  # fmt: skip

    def submit_proposals(
        self,
        groups: Sequence[tuple[ProposePrompt, Sequence[tuple[StreamState, Thread]]]],
        *,
        now: datetime,
    ) -> set[str]:
        """Send each group's first propose request as one batch job, under its threads' keys
        and with its prompt's numbering of their messages; returns the keys of the threads
        now waiting for it (none if sending failed)."""
        requests: dict[str, GenerateRequest] = {}
        members: dict[str, list[str]] = {}
        numbered: dict[str, list[str]] = {}
        for number, (prompt, group) in enumerate(groups, 1):
            requests[f"propose-{number}"] = prompt.request()
            members[f"propose-{number}"] = [thread.key for _, thread in group]
            numbered[f"propose-{number}"] = list(prompt.numbered())
        threads = [member for _, group in groups for member in group]
        return self._send("propose", self.config.models.propose, requests, members, threads,
                          now=now, numbered=numbered)  # fmt: skip

    def _send(
        self,
        stage: str,
        model: str,
        requests: Mapping[str, GenerateRequest],
        members: Mapping[str, list[str]],
        threads: Sequence[tuple[StreamState, Thread]],
        *,
        now: datetime,
        numbered: Mapping[str, list[str]] | None = None,
    ) -> set[str]:
        """Create the job and record it in the state of every stream it holds threads of."""
        if not requests:
            return set()
        try:
            name = self.client.submit(
                requests, model=model, label=f"pythia {stage} {now:%Y-%m-%d %H:%M}"
            )
        except Exception as error:  # the threads take the normal path this run
            log.warning("the backfill %s batch job could not be created: %s", stage,
                        one_line(error))  # fmt: skip
            return set()
        by_key = {thread.key: (state, thread) for state, thread in threads}
        sent = {key for keys in members.values() for key in keys}
        job = PendingBatch(
            name=name,
            stage=stage,
            model=model,
            submitted_at=now,
            requests=dict(members),
            digests={key: by_key[key][1].digest for key in sorted(sent)},
            numbered=dict(numbered or {}),
        )
        for state in {id(s): s for s, _ in threads}.values():
            if any(by_key[key][0] is state for key in sent):
                state.pending_batches = [*state.pending_batches, job]
        log.info("sent %d conversations in %d %s requests as batch job %s", len(sent),
                 len(requests), stage, name)  # fmt: skip
        return sent


_ABSENT = "\0absent:"


def _absent(position: int) -> Thread:
    """A stand-in for a thread that changed since it was sent, so positions still line up."""
    stand_in = Message(stream=_ABSENT, id=position, author="", sent_at=_EPOCH, text="")
    return Thread(stream=_ABSENT, messages=(stand_in,))


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
