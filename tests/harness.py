"""The one place tests build a run: the real composition root (`app.compose`), with doubles
handed in for the ports a test replaces and everything else real."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pythia import db, pipeline
from pythia.app import compose
from pythia.app.options import Options
from pythia.app.workspace import Workspace
from pythia.config import Config, Secrets
from pythia.models import RunReport
from pythia.ports import LLM, ChatSource, Embedder, Publisher
from pythia.propose import Searcher
from pythia.state import Ledger, StateStore
from pythia.usage import UsageMeter

NOW = datetime(2026, 3, 6, 12, 0, tzinfo=timezone.utc)


def workspace(root: Path, config: Config, *, repository: str = "") -> Workspace:
    """A workspace over `root` with no secrets set."""
    return Workspace(root=root, config=config, secrets=Secrets(), repository=repository)


def index_docs(space: Workspace, index_path: Path, embedder: Embedder | None) -> None:
    compose.update_docs_index(space, index_path, embedder)


def run_pipeline(
    space: Workspace,
    *,
    index_path: Path,
    store: StateStore,
    llm: LLM,
    embedder: Embedder | None,
    publisher: Publisher,
    ledger: Ledger | None = None,
    meter: UsageMeter | None = None,
    sources: Sequence[ChatSource] | None = None,
    search: Searcher | None = None,
    dry_run: bool = False,
    since: str | None = None,
    clock: Callable[[], float] = time.monotonic,
    started: float | None = None,
    now: datetime = NOW,
    backfill: Any = None,
) -> RunReport:
    """One `pipeline.run` wired by `compose.build_deps`, as `pythia run` wires it."""
    options = Options(command="run", repo=space.root, dry_run=dry_run, since=since)
    conn = db.connect(index_path)
    try:
        deps = compose.build_deps(
            space,
            options,
            store=store,
            ledger=ledger if ledger is not None else Ledger(),
            conn=conn,
            llm=llm,
            embedder=embedder,
            publisher=publisher,
            meter=meter or UsageMeter.from_config(space.config),
            sources=sources,
            search=search,
            clock=clock,
            started=started,
            backfill=backfill,
        )
        return pipeline.run(space.config, deps, now=now, dry_run=dry_run)
    finally:
        conn.close()
