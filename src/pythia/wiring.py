"""Carries out each CLI command with the real ports built from config and environment."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from . import actions, db, index
from .config import ConfigError
from .models import RunReport
from .state import StateStore
from .workspace import (
    UserError,
    Workspace,
    build_sources,
    chosen_streams,
    docs_paths,
    embedder_for,
    open_storage,
    open_workspace,
    resolve_export_paths,
    searcher,
    setup_logging,
    update_docs_index,
)

__all__ = ["Workspace", "dispatch", "explain", "searcher", "update_docs_index"]

log = logging.getLogger("pythia")


def cmd_index(args: argparse.Namespace) -> int:
    workspace = open_workspace(args)
    setup_logging(args, workspace.secrets)
    if args.docs is not None:
        relative = os.path.relpath(Path(args.docs).resolve(), workspace.root)
        docs = workspace.config.docs.model_copy(update={"root": relative})
        workspace.config = workspace.config.model_copy(update={"docs": docs})
    embedder, _ = embedder_for(workspace, required=False)
    if embedder is None:
        print("no GEMINI_API_KEY: indexing for keyword (BM25) search only", file=sys.stderr)
    with open_storage(workspace, args.index) as storage:
        stats = update_docs_index(workspace, storage.index_path, embedder, full=args.full)
        saved = storage.save("pythia: update the docs index")
    actions.add_summary(
        "## Pythia index\n\n"
        + actions.table(
            ["files changed", "chunks", "embedded", "reused", "deleted", "seconds", "search"],
            [
                [
                    stats.files_changed,
                    stats.chunks_total,
                    stats.chunks_embedded,
                    stats.chunks_reused,
                    stats.chunks_deleted,
                    f"{stats.seconds:.1f}",
                    "hybrid" if embedder is not None else "BM25 only (no GEMINI_API_KEY)",
                ]
            ],
        )
    )
    if args.json:
        print(json.dumps(asdict(stats), sort_keys=True))
    else:
        where = (
            f"{workspace.config.publish.data_branch} branch"
            if storage.on_data_branch
            else str(storage.index_path)
        )
        print(
            f"{stats.files_changed} files changed, {stats.chunks_total} chunks "
            f"({stats.chunks_embedded} embedded, {stats.chunks_reused} reused, "
            f"{stats.chunks_deleted} deleted) in {stats.seconds:.2f}s -> {where}"
            + (" (pushed)" if saved else "")
        )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    workspace = open_workspace(args)
    setup_logging(args, workspace.secrets)
    with open_storage(workspace, args.index) as storage:
        if not storage.index_path.exists():
            raise UserError("there is no index yet; run `pythia index` first")
        conn = db.connect(storage.index_path)
        try:
            embedder, _ = embedder_for(workspace, required=False)
            if embedder is None:
                print("no GEMINI_API_KEY: searching with BM25 only", file=sys.stderr)
            elif embedder is not None and not index.has_vectors(conn):
                print("the index has no vectors: searching with BM25 only", file=sys.stderr)
                embedder = None
            hits = searcher(workspace, conn, embedder)(args.query, args.k)
        finally:
            conn.close()
    if args.json:
        print(
            json.dumps(
                {
                    "hits": [
                        {
                            "path": h.path,
                            "heading": h.heading,
                            "anchor": h.anchor,
                            "score": round(h.score, 6),
                            "text": h.text,
                        }
                        for h in hits
                    ]
                },
                ensure_ascii=False,
            )
        )
        return 0
    if not hits:
        print("no matches")
    for number, hit in enumerate(hits, 1):
        anchor = f"#{hit.anchor}" if hit.anchor else ""
        print(f"{number}. {hit.path}{anchor}  {hit.heading}  (score {hit.score:.4f})")
        snippet = " ".join(hit.text.split())[:160]
        print(f"   {snippet}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from . import threads as threading_
    from .sources import read_stream

    workspace = open_workspace(args)
    setup_logging(args, workspace.secrets)
    now = datetime.now(timezone.utc)
    config = workspace.config
    streams = resolve_export_paths(workspace, chosen_streams(workspace, args.stream, None))
    results = []
    with open_storage(workspace, None) as storage:
        for source in build_sources(workspace, streams):
            state = storage.store.load_stream(source.stream)
            entry: dict[str, Any] = {"stream": source.stream, "watermark": state.watermark}
            try:
                batch = read_stream(source, state.watermark)
            except Exception as error:
                entry["error"] = " ".join(str(error).split())
                results.append(entry)
                continue
            finally:
                source.close()
            done = set(state.done_ids)
            grouped, settled = threading_.ready_threads(
                batch.messages, done=done, now=now, settings=config.threads
            )
            settled_ids = {m.id for t in settled for m in t.messages}
            entry.update(
                new_messages=sum(1 for m in batch.messages if m.id not in done),
                threads=len(grouped),
                settled_threads=len(settled),
                unsettled_threads=len(grouped) - len(settled),
                watermark_if_all_settled_recorded=threading_.next_watermark(
                    [m.id for m in batch.messages],
                    done=done | settled_ids,
                    watermark=batch.after,
                ),
                interrupted=batch.interrupted,
            )
            results.append(entry)
    if args.json:
        print(json.dumps({"streams": results}, indent=2, default=str))
    else:
        for entry in results:
            if "error" in entry:
                print(f"{entry['stream']}: error: {entry['error']}")
                continue
            print(
                f"{entry['stream']}: {entry['new_messages']} new messages in "
                f"{entry['threads']} threads ({entry['settled_threads']} settled); watermark "
                f"{entry['watermark']} -> {entry['watermark_if_all_settled_recorded']}"
            )
    return 0


def publisher_for(workspace: Workspace, args: argparse.Namespace, ledger: Any) -> Any:
    from . import prompts
    from .github import DryRunPublisher, GitHubPublisher, github_client

    if args.dry_run:
        return DryRunPublisher(
            Path(args.out),
            ledger=ledger,
            templates=prompts.environment(workspace.root),
            evidence_quotes=workspace.config.publish.evidence_quotes,
        )
    token = workspace.secrets.github_token
    repository = os.environ.get("GITHUB_REPOSITORY", "")
    if token is None or not repository:
        raise UserError(
            "publishing needs GITHUB_TOKEN and GITHUB_REPOSITORY (set by GitHub Actions); "
            "use --dry-run to write proposals to a folder instead"
        )
    return GitHubPublisher(
        repo_path=workspace.root,
        repository=repository,
        github=github_client(token.get_secret_value()),
        ledger=ledger,
        config=workspace.config.publish,
        token=token.get_secret_value(),
        templates=prompts.environment(workspace.root),
    )


def run_pipeline(workspace: Workspace, args: argparse.Namespace) -> RunReport:
    from . import gemini, pipeline, safety
    from .databranch import DataBranchError
    from .edits import PathPolicy
    from .propose import parked_proposals
    from .usage import UsageMeter

    started = time.monotonic()  # the time budget covers indexing too
    config = workspace.config
    streams = resolve_export_paths(workspace, chosen_streams(workspace, args.stream, args.since))
    if not streams:
        return _index_only(workspace, args)
    meter = UsageMeter.from_config(config)
    adapters = gemini.from_config(config, workspace.secrets, meter)
    now = datetime.now(timezone.utc)
    with open_storage(workspace, args.index) as storage:
        with actions.group("Index the docs", enabled=actions.in_actions()):
            update_docs_index(workspace, storage.index_path, adapters.embedder)
        if not args.dry_run:
            # Paid-for embeddings are kept even if the job is killed later.
            storage.save("pythia: update the docs index")
        ledger = storage.store.load_ledger()
        publisher = publisher_for(workspace, args, ledger)
        docs_texts = {
            path: text for path in docs_paths(workspace) if (text := workspace.read(path))
        }
        conn = db.connect(storage.index_path)
        try:
            deps = pipeline.Deps(
                sources=build_sources(workspace, streams),
                llm=adapters.llm,
                search=searcher(workspace, conn, adapters.embedder),
                read=workspace.read,
                publisher=publisher,
                store=storage.store,
                meter=meter,
                docs_domains=safety.link_domains(docs_texts.values()),
                repo_root=workspace.root,
                since=bool(args.since),
                parked=lambda: parked_proposals(
                    ledger, read=workspace.read, policy=PathPolicy.from_config(config.docs)
                ),
                started=started,
            )
            with actions.group("Read, classify, propose", enabled=actions.in_actions()):
                report = pipeline.run(config, deps, now=now, dry_run=args.dry_run)
        finally:
            conn.close()
        if not args.dry_run:
            storage.store.save_ledger(publisher.ledger)
            if config.publish.dashboard and hasattr(publisher, "repo"):
                _dashboard(workspace, report, storage.store, publisher)
            try:
                storage.save(f"pythia: run of {now:%Y-%m-%d %H:%M} UTC")
            except DataBranchError as error:
                # The PRs are open already: still write the summary, then fail the job.
                report.fatal = f"the run's state could not be saved: {error}"
    return report


def _index_only(workspace: Workspace, args: argparse.Namespace) -> RunReport:
    """No streams configured: keep the index fresh (BM25 only without a key) and say so."""
    print(
        "no streams are configured in .github/pythia.yml; only the index is updated",
        file=sys.stderr,
    )
    embedder, _ = embedder_for(workspace, required=False)
    with open_storage(workspace, args.index) as storage:
        update_docs_index(workspace, storage.index_path, embedder)
        if not args.dry_run:
            storage.save("pythia: update the docs index")
    return RunReport(dry_run=args.dry_run)


def _dashboard(workspace: Workspace, report: RunReport, store: StateStore, publisher: Any) -> None:
    from . import prompts
    from .dashboard import render_dashboard, update_dashboard

    try:
        body = render_dashboard(
            report=report,
            streams=store.streams(),
            ledger=publisher.ledger,
            templates=prompts.environment(workspace.root),
        )
        update_dashboard(publisher.repo, body)
    except Exception as error:  # the dashboard is a courtesy; the run's work is done
        log.warning("could not update the dashboard issue: %s", " ".join(str(error).split()))


def report_path() -> Path:
    folder = Path(os.environ.get("RUNNER_TEMP") or tempfile.gettempdir())
    return folder / "pythia-report.json"


def report_json(report: RunReport) -> str:
    """The run report as JSON, with the totals the outputs carry (properties, not fields)."""
    data = {
        **asdict(report),
        "messages_read": report.messages_read,
        "threads_classified": report.threads_classified,
    }
    return json.dumps(data, indent=2, default=str)


def write_report(report: RunReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_json(report), encoding="utf-8")


def cmd_run(args: argparse.Namespace) -> int:
    workspace = open_workspace(args)
    setup_logging(args, workspace.secrets)
    report = run_pipeline(workspace, args)
    return finish(report, json_output=getattr(args, "json", False))


def _dry_run_changes(report: RunReport) -> str:
    """In a dry run, the proposed diffs themselves, folded, so reviewers see them in the job."""
    if not report.dry_run:
        return ""
    parts = []
    for url in report.proposals_opened:
        if not url.startswith("file://"):
            continue
        patch = Path(unquote(urlparse(url).path)) / "change.patch"
        if patch.is_file():
            title = report.proposal_lines.get(url, patch.parent.name)
            diff = patch.read_text(encoding="utf-8").replace("```", "`​``")
            parts.append(
                f"<details><summary>{title}</summary>\n\n```diff\n{diff}```\n\n</details>\n"
            )
    return "\n### Proposed changes\n\n" + "\n".join(parts) if parts else ""


def finish(report: RunReport, *, json_output: bool) -> int:
    """Summary, outputs and the exit code: non-zero only when nothing could run."""
    path = report_path()
    write_report(report, path)
    actions.add_summary(actions.render_summary(report) + _dry_run_changes(report))
    actions.write_outputs(report, path)
    if json_output:
        print(report_json(report))
    else:
        for url in report.proposals_opened:
            print(f"proposed: {report.proposal_lines.get(url, '')} -> {url}")
        for url in report.proposals_updated:
            print(f"new evidence: {report.proposal_lines.get(url, '')} -> {url}")
        print(
            f"read {report.messages_read} messages, classified {report.threads_classified} "
            f"threads, opened {len(report.proposals_opened)}, updated "
            f"{len(report.proposals_updated)}, skipped {len(report.skipped)}, "
            f"failed {len(report.failed)}"
        )
        if report.stopped_early:
            print(f"stopped early: {report.stopped_early}")
    for stream in report.streams:
        if stream.error:
            log.warning("stream %s: %s", stream.stream, stream.error)
    if report.fatal:
        print(f"error: {report.fatal}", file=sys.stderr)
        return 1
    if report.streams and all(
        stream.error and not stream.messages_read for stream in report.streams
    ):
        print("error: no stream could be read", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    workspace = open_workspace(args)
    setup_logging(args, workspace.secrets)
    with open_storage(workspace, None) as storage:
        streams = storage.store.streams()
        ledger = storage.store.load_ledger()
    data: dict[str, list[dict[str, Any]]] = {
        "streams": [
            {
                "stream": s.stream,
                "watermark": s.watermark,
                "last_read_at": s.last_read_at,
                "failing_threads": len(s.failures),
            }
            for s in streams
        ],
        "proposals": [
            {"fingerprint": e.fingerprint, "status": e.status, "title": e.title, "url": e.url}
            for e in ledger.proposals.values()
        ],
    }
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    for stream in data["streams"]:
        print(
            f"{stream['stream']}: watermark {stream['watermark']}, last read "
            f"{stream['last_read_at'] or 'never'}, {stream['failing_threads']} failing threads"
        )
    for proposal in data["proposals"]:
        print(f"{proposal['status']:>8}  {proposal['title']}  {proposal['url'] or ''}")
    if not data["streams"] and not data["proposals"]:
        print("no state yet: Pythia has not run here")
    return 0


def cmd_telegram_login(args: argparse.Namespace) -> int:
    import getpass

    from .sources.telegram import login

    login(ask=input, ask_secret=getpass.getpass, say=print)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "index": cmd_index,
    "search": cmd_search,
    "ingest": cmd_ingest,
    "status": cmd_status,
    "telegram-login": cmd_telegram_login,
}


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "action":
        from .action_entry import cmd_action

        return cmd_action(args)
    return COMMANDS[args.command](args)


def explain(error: Exception) -> str | None:
    """One line for errors a user can fix; None for bugs, which keep their traceback."""
    from .databranch import DataBranchError
    from .edits import EditError
    from .gemini import GeminiError
    from .sources import SourceError
    from .sources.telegram import LoginError
    from .structured import MalformedReply

    known: tuple[type[Exception], ...] = (
        UserError,
        ConfigError,
        LoginError,
        GeminiError,
        SourceError,
        DataBranchError,
        EditError,
        MalformedReply,
        actions.UnknownEvent,
        db.DatabaseError,
        index.EmbeddingMismatch,
    )
    try:
        from .github import PublishError

        known = (*known, PublishError)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(error, known):
        return " ".join(str(error).split())
    return None
