"""Builds the real ports from config and environment, and carries out each CLI command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from . import actions, db, index
from .config import Config, ConfigError, Secrets, Stream, load_config
from .models import Hit, RunReport
from .ports import Embedder
from .state import StateStore

log = logging.getLogger("pythia")

LOCAL_DIR = Path(".pythia")


class UserError(Exception):
    """A problem the user can fix, told in one sentence."""


@dataclass
class Workspace:
    """The repository Pythia works in, its config and its secrets."""

    root: Path
    config: Config
    secrets: Secrets

    @property
    def docs_root(self) -> Path:
        return (self.root / self.config.docs.root).resolve()

    @property
    def docs_prefix(self) -> str:
        """The docs root relative to the repository, as a path prefix ('' or 'docs/')."""
        relative = os.path.relpath(self.docs_root, self.root.resolve()).replace(os.sep, "/")
        return "" if relative == "." else relative.rstrip("/") + "/"

    def salt(self) -> str:
        """Pseudonym salt: config, else the repository's id, else its name."""
        return (
            self.config.privacy.salt
            or os.environ.get("GITHUB_REPOSITORY_ID", "")
            or os.environ.get("GITHUB_REPOSITORY", "")
            or self.root.resolve().name
        )

    def read(self, path: str) -> str | None:
        """A repository file's text, or None when it is missing or outside the repository."""
        target = (self.root / path).resolve()
        if self.root.resolve() not in target.parents or not target.is_file():
            return None
        return target.read_text(encoding="utf-8", errors="replace")


def open_workspace(args: argparse.Namespace) -> Workspace:
    root = Path(args.repo).resolve()
    if not root.is_dir():
        raise UserError(f"{args.repo} is not a folder; pass the docs repository with --repo")
    config_path = Path(args.config) if args.config else root / ".github/pythia.yml"
    config = load_config(config_path)
    secrets = Secrets.from_env()
    return Workspace(root=root, config=config, secrets=secrets)


def setup_logging(args: argparse.Namespace, secrets: Secrets | None = None) -> None:
    values = secrets.values() if secrets else []
    in_ci = actions.in_actions()
    if in_ci:
        actions.mask(values)
    actions.configure_logging(level=getattr(args, "log_level", "info"), secrets=values,
                              actions=in_ci)


# ---------------------------------------------------------------- storage


@dataclass
class Storage:
    """Where the index and state live for this command: the data branch or a local folder."""

    index_path: Path
    store: StateStore
    save: Callable[[str], bool]
    on_data_branch: bool


def _uses_data_branch(workspace: Workspace, explicit_index: Path | None) -> bool:
    if explicit_index is not None or os.environ.get("PYTHIA_LOCAL") == "1":
        return False
    if not (workspace.root / ".git").exists():
        return False
    import git

    try:
        return "origin" in [remote.name for remote in git.Repo(workspace.root).remotes]
    except git.GitError:
        return False


@contextmanager
def open_storage(workspace: Workspace, explicit_index: Path | None) -> Iterator[Storage]:
    """The data branch when this is a checkout with an origin; `.pythia/` otherwise."""
    if _uses_data_branch(workspace, explicit_index):
        from .state import DataBranch

        token = workspace.secrets.github_token
        with DataBranch(
            workspace.root,
            branch=workspace.config.publish.data_branch,
            token=token.get_secret_value() if token else None,
        ) as data:
            yield Storage(data.index_path, data.store, data.save, on_data_branch=True)
        return
    local = workspace.root / LOCAL_DIR
    index_path = explicit_index or local / "index.sqlite"
    yield Storage(index_path, StateStore(local / "state"), lambda _message: False, False)


# ---------------------------------------------------------------- index and search


def _embedder(workspace: Workspace, *, required: bool) -> tuple[Embedder | None, Any]:
    """The Gemini embedder and its usage meter, or (None, meter) without a key."""
    from .usage import UsageMeter

    meter = UsageMeter.from_config(workspace.config)
    if workspace.secrets.gemini_api_key is None and not required:
        return None, meter
    from . import gemini

    return gemini.from_config(workspace.config, workspace.secrets, meter).embedder, meter


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def update_docs_index(
    workspace: Workspace, index_path: Path, embedder: Embedder | None, *, full: bool = False
) -> index.IndexStats:
    docs = workspace.config.docs
    return index.update_index(
        index_path,
        docs_root=workspace.docs_root,
        include=docs.include,
        exclude=docs.exclude,
        embedder=embedder,
        full=full,
        config_hash=workspace.config.digest(),
        progress=_progress,
    )


def cmd_index(args: argparse.Namespace) -> int:
    workspace = open_workspace(args)
    setup_logging(args, workspace.secrets)
    if args.docs is not None:
        relative = os.path.relpath(Path(args.docs).resolve(), workspace.root)
        docs = workspace.config.docs.model_copy(update={"root": relative})
        workspace.config = workspace.config.model_copy(update={"docs": docs})
    embedder, _ = _embedder(workspace, required=False)
    if embedder is None:
        print("no GEMINI_API_KEY: indexing for keyword (BM25) search only", file=sys.stderr)
    with open_storage(workspace, args.index) as storage:
        stats = update_docs_index(workspace, storage.index_path, embedder, full=args.full)
        saved = storage.save("pythia: update the docs index")
    if args.json:
        print(json.dumps(asdict(stats), sort_keys=True))
    else:
        where = f"{workspace.config.publish.data_branch} branch" if storage.on_data_branch \
            else str(storage.index_path)
        print(
            f"{stats.files_changed} files changed, {stats.chunks_total} chunks "
            f"({stats.chunks_embedded} embedded, {stats.chunks_reused} reused, "
            f"{stats.chunks_deleted} deleted) in {stats.seconds:.2f}s -> {where}"
            + (" (pushed)" if saved else "")
        )
    return 0


def searcher(
    workspace: Workspace, conn: Any, embedder: Embedder | None
) -> Callable[[str, int], list[Hit]]:
    """Search returning repository-relative paths (the index stores docs-relative ones)."""
    prefix = workspace.docs_prefix

    def search(query: str, k: int) -> list[Hit]:
        return [
            replace(hit, path=prefix + hit.path)
            for hit in index.search(conn, query, k=k, embedder=embedder)
        ]

    return search


def cmd_search(args: argparse.Namespace) -> int:
    workspace = open_workspace(args)
    setup_logging(args, workspace.secrets)
    with open_storage(workspace, args.index) as storage:
        if not storage.index_path.exists():
            raise UserError("there is no index yet; run `pythia index` first")
        conn = db.connect(storage.index_path)
        try:
            embedder, _ = _embedder(workspace, required=False)
            if embedder is None:
                print("no GEMINI_API_KEY: searching with BM25 only", file=sys.stderr)
            elif embedder is not None and not index.has_vectors(conn):
                print("the index has no vectors: searching with BM25 only", file=sys.stderr)
                embedder = None
            hits = searcher(workspace, conn, embedder)(args.query, args.k)
        finally:
            conn.close()
    if args.json:
        print(json.dumps({"hits": [
            {"path": h.path, "heading": h.heading, "anchor": h.anchor,
             "score": round(h.score, 6), "text": h.text}
            for h in hits
        ]}, ensure_ascii=False))
        return 0
    if not hits:
        print("no matches")
    for number, hit in enumerate(hits, 1):
        anchor = f"#{hit.anchor}" if hit.anchor else ""
        print(f"{number}. {hit.path}{anchor}  {hit.heading}  (score {hit.score:.4f})")
        snippet = " ".join(hit.text.split())[:160]
        print(f"   {snippet}")
    return 0


# ---------------------------------------------------------------- streams


def _streams(workspace: Workspace, only: str | None, since: str | None) -> list[Stream]:
    config = workspace.config
    chosen = [config.stream(only)] if only else list(config.streams)
    if since:
        start: str | int | date
        try:
            start = int(since)
        except ValueError:
            try:
                start = date.fromisoformat(since)
            except ValueError:
                raise UserError(
                    f"--since '{since}' is neither a message id nor a YYYY-MM-DD date"
                ) from None
        chosen = [stream.model_copy(update={"start": start}) for stream in chosen]
    return chosen


def _sources(workspace: Workspace, streams: list[Stream]) -> list[Any]:
    from .sources import build_source

    salt = workspace.salt()
    return [build_source(stream, secrets=workspace.secrets, salt=salt) for stream in streams]


def _resolve_export_paths(workspace: Workspace, streams: list[Stream]) -> list[Stream]:
    from .config import ExportStream

    resolved: list[Stream] = []
    for stream in streams:
        if isinstance(stream, ExportStream) and not Path(stream.path).is_absolute():
            path = str((workspace.root / stream.path).resolve())
            resolved.append(stream.model_copy(update={"path": path}))
        else:
            resolved.append(stream)
    return resolved


def cmd_ingest(args: argparse.Namespace) -> int:
    from . import threads as threading_
    from .sources import read_stream

    workspace = open_workspace(args)
    setup_logging(args, workspace.secrets)
    now = datetime.now(timezone.utc)
    config = workspace.config
    streams = _resolve_export_paths(workspace, _streams(workspace, args.stream, None))
    results = []
    with open_storage(workspace, None) as storage:
        for source in _sources(workspace, streams):
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
            grouped = threading_.group_threads(
                list(batch.messages),
                gap_minutes=config.threads.gap_minutes,
                context_messages=config.threads.context_messages,
            )
            settled = [
                t for t in grouped
                if threading_.settled(t, now, config.threads.settle_minutes)
                and threading_.pending(t, done) is not None
            ]
            settled_ids = {m.id for t in settled for m in t.messages}
            entry.update(
                new_messages=sum(1 for m in batch.messages if m.id not in done),
                threads=len(grouped),
                settled_threads=len(settled),
                unsettled_threads=len(grouped) - len(settled),
                watermark_if_all_settled_recorded=threading_.next_watermark(
                    [m.id for m in batch.messages], done=done | settled_ids,
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


# ---------------------------------------------------------------- run


def _publisher(workspace: Workspace, args: argparse.Namespace, ledger: Any) -> Any:
    from . import prompts
    from .github import DryRunPublisher, GitHubPublisher, github_client

    if args.dry_run:
        return DryRunPublisher(
            Path(args.out), ledger=ledger, templates=prompts.environment(workspace.root),
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
    from .usage import UsageMeter

    config = workspace.config
    meter = UsageMeter.from_config(config)
    adapters = gemini.from_config(config, workspace.secrets, meter)
    streams = _resolve_export_paths(workspace, _streams(workspace, args.stream, args.since))
    now = datetime.now(timezone.utc)
    with open_storage(workspace, args.index) as storage:
        with actions.group("Index the docs", enabled=actions.in_actions()):
            update_docs_index(workspace, storage.index_path, adapters.embedder)
        ledger = storage.store.load_ledger()
        publisher = _publisher(workspace, args, ledger)
        docs_texts = {
            path: text for path in _docs_paths(workspace) if (text := workspace.read(path))
        }
        conn = db.connect(storage.index_path)
        try:
            deps = pipeline.Deps(
                sources=_sources(workspace, streams),
                llm=adapters.llm,
                search=searcher(workspace, conn, adapters.embedder),
                read=workspace.read,
                publisher=publisher,
                store=storage.store,
                meter=meter,
                docs_domains=safety.link_domains(docs_texts.values()),
                repo_root=workspace.root,
                since=bool(args.since),
            )
            with actions.group("Read, classify, propose", enabled=actions.in_actions()):
                report = pipeline.run(config, deps, now=now, dry_run=args.dry_run)
        finally:
            conn.close()
        if not args.dry_run:
            storage.store.save_ledger(publisher.ledger)
            if config.publish.dashboard and hasattr(publisher, "repo"):
                _dashboard(workspace, report, storage.store, publisher)
            storage.save(f"pythia: run of {now:%Y-%m-%d %H:%M} UTC")
    return report


def _docs_paths(workspace: Workspace) -> list[str]:
    from .edits import PathPolicy

    policy = PathPolicy.from_config(workspace.config.docs)
    found = []
    for path in workspace.docs_root.rglob("*"):
        if path.is_file():
            relative = path.relative_to(workspace.root.resolve()).as_posix()
            if policy.allows(relative):
                found.append(relative)
    return sorted(found)


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
    if not workspace.config.streams:
        print("no streams are configured in .github/pythia.yml; nothing to read",
              file=sys.stderr)
    report = run_pipeline(workspace, args)
    return finish(report, json_output=getattr(args, "json", False))


def finish(report: RunReport, *, json_output: bool) -> int:
    """Summary, outputs and the exit code: non-zero only when nothing could run."""
    path = report_path()
    write_report(report, path)
    actions.add_summary(actions.render_summary(report))
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
    if report.streams and all(stream.error and not stream.messages_read
                              for stream in report.streams):
        print("error: no stream could be read", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------- status and login


def cmd_status(args: argparse.Namespace) -> int:
    workspace = open_workspace(args)
    setup_logging(args, workspace.secrets)
    with open_storage(workspace, None) as storage:
        streams = storage.store.streams()
        ledger = storage.store.load_ledger()
    data: dict[str, list[dict[str, Any]]] = {
        "streams": [
            {"stream": s.stream, "watermark": s.watermark, "last_read_at": s.last_read_at,
             "failing_threads": len(s.failures)}
            for s in streams
        ],
        "proposals": [
            {"fingerprint": e.fingerprint, "status": e.status, "title": e.title,
             "url": e.url}
            for e in ledger.proposals.values()
        ],
    }
    if args.json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    for stream in data["streams"]:
        print(f"{stream['stream']}: watermark {stream['watermark']}, last read "
              f"{stream['last_read_at'] or 'never'}, {stream['failing_threads']} failing threads")
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


# ---------------------------------------------------------------- the action


def _event() -> dict[str, Any]:
    path = os.environ.get("GITHUB_EVENT_PATH", "")
    if not path or not Path(path).is_file():
        return {}
    loaded: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return loaded


def cmd_action(args: argparse.Namespace) -> int:
    mode = actions.mode_for(args.mode, os.environ.get("GITHUB_EVENT_NAME", ""))
    args.dry_run = str(args.dry_run).strip().lower() == "true"
    args.since = args.since or None
    args.stream = args.stream or None
    args.index = None
    args.out = Path(os.environ.get("RUNNER_TEMP") or ".") / "pythia-out"
    args.json = False
    args.full = False
    args.docs = None
    if mode == "run":
        return cmd_run(args)
    if mode == "index":
        return cmd_index(args)
    workspace = open_workspace(args)
    setup_logging(args, workspace.secrets)
    event = _event()
    if mode == "feedback":
        from .commands import record_closed_pr

        with open_storage(workspace, None) as storage:
            ledger = storage.store.load_ledger()
            entry = record_closed_pr(event, ledger)
            if entry is None:
                print("not a Pythia pull request; nothing to record")
                return 0
            storage.store.save_ledger(ledger)
            storage.save(f"pythia: record {entry.status} proposal {entry.fingerprint[:8]}")
        print(f"recorded proposal {entry.fingerprint[:8]} as {entry.status}")
        return 0
    from .commands import handle_comment

    args.dry_run = False
    with open_storage(workspace, None) as storage:
        ledger = storage.store.load_ledger()
        publisher = _publisher(workspace, args, ledger)
        outcome = handle_comment(
            event, publisher=publisher, revise=_reviser(workspace, publisher)
        )
        storage.store.save_ledger(publisher.ledger)
        storage.save(f"pythia: /pythia {outcome.command or 'comment'}")
    print(f"/pythia {outcome.command or '(none)'}: {outcome.status}")
    return 0


def _reviser(workspace: Workspace, publisher: Any) -> Callable[[str, str], Any]:
    """The `/pythia revise` callback: the branch's files, the instruction, one LLM call."""

    def revise(fingerprint: str, instruction: str) -> Any:
        import git

        from . import gemini, safety
        from .revise import Revision, revise_proposal
        from .usage import UsageMeter

        entry = publisher.ledger.get(fingerprint)
        if entry is None or not entry.branch:
            return "this proposal is not in Pythia's ledger"
        sha = publisher.branches.fetch(entry.branch)
        repo = git.Repo(workspace.root)
        current = {
            path: repo.git.show(f"{sha}:{path}", strip_newline_in_stdout=False)
            for path in entry.paths
        }
        base = {path: text for path in entry.paths if (text := workspace.read(path)) is not None}
        docs = [text for path in _docs_paths(workspace) if (text := workspace.read(path))]
        meter = UsageMeter.from_config(workspace.config)
        adapters = gemini.from_config(workspace.config, workspace.secrets, meter)
        return revise_proposal(
            entry,
            instruction,
            revision=Revision(current=current, base=base),
            config=workspace.config,
            llm=adapters.llm,
            docs_domains=safety.link_domains(docs),
            repo_root=workspace.root,
        )

    return revise


# ---------------------------------------------------------------- dispatch


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "index": cmd_index,
    "search": cmd_search,
    "ingest": cmd_ingest,
    "status": cmd_status,
    "telegram-login": cmd_telegram_login,
    "action": cmd_action,
}


def dispatch(args: argparse.Namespace) -> int:
    return COMMANDS[args.command](args)


def explain(error: Exception) -> str | None:
    """One line for errors a user can fix; None for bugs, which keep their traceback."""
    from .edits import EditError
    from .gemini import GeminiError
    from .sources import SourceError
    from .state import DataBranchError
    from .structured import MalformedReply

    known: tuple[type[Exception], ...] = (
        UserError, ConfigError, GeminiError, SourceError, DataBranchError, EditError,
        MalformedReply, actions.UnknownEvent, db.DatabaseError, index.EmbeddingMismatch,
    )
    try:
        from .github import PublishError

        known = (*known, PublishError)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(error, known):
        return " ".join(str(error).split())
    return None
