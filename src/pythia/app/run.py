"""One scheduled run: sync the index, run the pipeline, save the ledger, dashboard and state."""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from .. import actions, db, pipeline, prompts
from ..databranch import DataBranchError
from ..models import RunReport
from ..ports import one_line
from ..state import Ledger, StateStore
from ..usage import UsageMeter
from . import compose
from .options import Options
from .workspace import Workspace, open_storage

if TYPE_CHECKING:
    from ..publish.github import GitHubPublisher

log = logging.getLogger("pythia")


def run(workspace: Workspace, options: Options, *, started: float | None = None) -> RunReport:
    """Read, classify, propose and publish (or, in a dry run, write the proposals to a folder)."""
    started = time.monotonic() if started is None else started  # the budget covers indexing
    config = workspace.config
    if not compose.chosen_streams(workspace, options):
        return _index_only(workspace, options)
    meter = UsageMeter.from_config(config)
    deadline = started + config.limits.time_budget_minutes * 60
    llm, embedder = compose.models(
        workspace, meter, deadline=deadline, cache=options.cache_path
    )
    backfill = compose.backfill(workspace, options, meter)
    now = datetime.now(timezone.utc)
    with open_storage(workspace, options) as storage:
        with actions.group("Index the docs", enabled=options.in_actions):
            compose.update_docs_index(workspace, storage.index_path, embedder)
        if not options.dry_run:
            # Paid-for embeddings are kept even if the job is killed later.
            storage.save("pythia: update the docs index")
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
            with actions.group("Read, classify, propose", enabled=options.in_actions):
                report = pipeline.run(config, deps, now=now, dry_run=options.dry_run)
        finally:
            conn.close()
        if options.dry_run:
            return report
        storage.store.save_ledger(ledger)
        if github is not None and config.publish.dashboard:
            _dashboard(workspace, report, storage.store, ledger, github)
        try:
            storage.save(f"pythia: run of {now:%Y-%m-%d %H:%M} UTC")
        except DataBranchError as error:
            # The PRs are open already: still write the summary, then fail the job.
            report.fatal = f"the run's state could not be saved: {error}"
    return report


def _index_only(workspace: Workspace, options: Options) -> RunReport:
    """No streams configured: keep the index fresh (BM25 only without a key) and say so."""
    print(
        "no streams are configured in .github/pythia.yml; only the index is updated",
        file=sys.stderr,
    )
    embedder = compose.optional_embedder(workspace)
    with open_storage(workspace, options) as storage:
        compose.update_docs_index(workspace, storage.index_path, embedder)
        if not options.dry_run:
            storage.save("pythia: update the docs index")
    return RunReport(dry_run=options.dry_run)


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
