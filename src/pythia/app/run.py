"""One scheduled run: sync the index, run the pipeline, save the ledger, dashboard and state."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .. import actions, db, pipeline, prompts
from ..databranch import DataBranchError
from ..embedcache import CachedEmbedder
from ..index import IndexStats
from ..models import RunReport
from ..ports import one_line
from ..state import Ledger, StateStore
from ..usage import UsageMeter
from . import compose, sourcing
from .options import Options
from .workspace import Workspace, open_storage

if TYPE_CHECKING:
    from ..publish.github import GitHubPublisher

log = logging.getLogger("pythia")


class Stopwatch:
    """Seconds per stage, in the order the stages ran, from one start on a monotonic clock."""

    def __init__(self, started: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last = started
        self.seconds: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        """Everything since the previous lap (or the start) was `stage`."""
        now = self.clock()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.last
        self.last = now

    def skip(self) -> None:
        """What ran since the previous lap timed itself (the pipeline's stages)."""
        self.last = self.clock()

    def into(self, report: RunReport, *, after: str | None = None) -> None:
        """The laps around the report's own stages: up to the lap `after` before them."""
        laps = list(self.seconds.items())
        names = [name for name, _ in laps]
        cut = names.index(after) + 1 if after in names else len(laps)
        report.stage_seconds = {**dict(laps[:cut]), **report.stage_seconds, **dict(laps[cut:])}


def run(workspace: Workspace, options: Options, *, started: float | None = None) -> RunReport:
    """Read, classify, propose and publish (or, in a dry run, write the proposals to a folder)."""
    started = time.monotonic() if started is None else started  # the budget covers indexing
    config = workspace.config
    if not sourcing.chosen_streams(workspace, options):
        return index_only(workspace, options, started=started).report
    if not options.dry_run:
        compose.check_publishing(workspace, options)  # before anything is paid for or pushed
    meter = UsageMeter.from_config(config)
    deadline = started + config.limits.time_budget_minutes * 60
    llm, embedder = compose.models(
        workspace, meter, deadline=deadline, cache=options.cache_path,
        sealed_only=options.via_action,
    )  # fmt: skip
    backfill = compose.backfill(workspace, options, meter)
    cache = compose.embedding_cache(embedder, options)
    now = datetime.now(timezone.utc)
    watch = Stopwatch(started)
    with open_storage(workspace, options) as storage:
        watch.lap("start")  # the process, the config and the data branch
        with actions.group("Index the docs", enabled=options.in_actions):
            stats = compose.update_docs_index(workspace, storage.index_path, cache or embedder)
        if not options.dry_run:
            # Paid-for embeddings are kept even if the job is killed later.
            storage.save("pythia: update the docs index")
        watch.lap("index")
        ledger = storage.store.load_ledger()
        github = (
            None if options.dry_run else compose.github_publisher(workspace, options, ledger)
        )
        publisher = github or compose.dry_run_publisher(workspace, options, ledger)
        conn = db.connect(storage.index_path)
        try:
            deps = compose.build_deps(
                workspace,
                options,
                store=storage.store,
                ledger=ledger,
                conn=conn,
                llm=llm,
                embedder=embedder,
                publisher=publisher,
                meter=meter,
                started=started,
                backfill=backfill,
            )
            watch.lap("prepare")  # the ledger, the publisher, the sources
            with actions.group("Read, classify, propose", enabled=options.in_actions):
                report = pipeline.run(config, deps, now=now, dry_run=options.dry_run)
            watch.skip()
        finally:
            conn.close()
        _embedding_figures(report, cache, stats)
        from ..responsecache import CachedLLM

        if isinstance(llm, CachedLLM):
            report.answers_stored = llm.cache.misses
        if not options.dry_run:
            storage.store.save_ledger(ledger)
            if github is not None and config.publish.dashboard:
                _dashboard(workspace, report, storage.store, ledger, github)
                watch.lap("dashboard")
            try:
                storage.save(f"pythia: run of {now:%Y-%m-%d %H:%M} UTC")
            except DataBranchError as error:
                # The PRs are open already: still write the summary, then fail the job.
                report.fatal = f"the run's state could not be saved: {error}"
            watch.lap("save to the data branch")
    watch.into(report, after="prepare")
    return report


@dataclass(frozen=True)
class Indexed:
    """What an index-only run did: its report, the index figures, and whether it was pushed."""

    report: RunReport
    stats: IndexStats
    saved: bool
    on_data_branch: bool
    index_path: Path


def index_only(workspace: Workspace, options: Options, *, started: float | None = None) -> Indexed:
    """Keep the index fresh (BM25 only without a key): `mode: index`, or a run with no streams."""
    if options.command == "run":
        print(
            "no streams are configured in .github/pythia.yml; only the index is updated",
            file=sys.stderr,
        )
    watch = Stopwatch(time.monotonic() if started is None else started)
    embedder = compose.optional_embedder(workspace)
    cache = compose.embedding_cache(embedder, options)
    with open_storage(workspace, options) as storage:
        watch.lap("start")
        stats = compose.update_docs_index(
            workspace, storage.index_path, cache or embedder, full=options.full
        )
        saved = False if options.dry_run else storage.save("pythia: update the docs index")
        watch.lap("index")
    report = RunReport(dry_run=options.dry_run, mode="index")
    watch.into(report)
    _embedding_figures(report, cache, stats)
    report.outcome = (
        f"{stats.files_changed} files changed, {stats.chunks_total} chunks "
        f"({stats.chunks_embedded} embedded, {stats.chunks_reused} reused, "
        f"{stats.chunks_deleted} deleted)"
    )
    return Indexed(report, stats, saved, storage.on_data_branch, storage.index_path)


def _embedding_figures(
    report: RunReport, cache: CachedEmbedder | None, stats: IndexStats | None = None
) -> None:
    if cache is not None:
        report.embeddings_computed, report.embeddings_cached = cache.computed, cache.cached
        cache.prune()
    elif stats is not None:
        report.embeddings_computed = stats.chunks_embedded


def _dashboard(
    workspace: Workspace,
    report: RunReport,
    store: StateStore,
    ledger: Ledger,
    github: GitHubPublisher,
) -> None:
    from ..publish.dashboard import render_dashboard, update_dashboard

    try:
        body = render_dashboard(
            report=report,
            streams=store.streams(),
            ledger=ledger,
            templates=prompts.environment(workspace.root),
        )
        update_dashboard(github.repo, body)
    except Exception as error:  # the dashboard is a courtesy; the run's work is done
        log.warning("could not update the dashboard issue: %s", one_line(error))
