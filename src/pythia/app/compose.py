"""The composition root: real ports built from config, secrets and options, wired into a run.

The CLI, the Action entry and the tests all build a run here; tests hand `build_deps` doubles
for the ports they replace (an LLM, an embedder, a publisher, sources) and get the rest real.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path

from pydantic import SecretStr

from .. import db, gemini, index, pipeline, prompts, safety
from .. import search as hybrid
from ..config import ExportStream, Secrets, Stream, TelegramStream, ZulipStream
from ..embedcache import CachedEmbedder
from ..models import Hit
from ..ports import LLM, ChatSource, Embedder, Publisher
from ..propose import Searcher
from ..publish.dryrun import DryRunPublisher
from ..publish.github import GitHubPublisher, github_client
from ..sources import SourceError
from ..sources.export import ExportSource
from ..sources.telegram import TelegramSource, connect_client
from ..sources.zulip import ZulipSource, make_client
from ..state import Ledger, StateStore
from ..usage import UsageMeter
from .options import Options
from .workspace import UserError, Workspace

# GitHub's owner/name: letters, digits and hyphens, then letters, digits, '.', '-', '_'.
REPOSITORY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?/[A-Za-z0-9._-]+")


def models(workspace: Workspace, meter: UsageMeter) -> tuple[LLM, Embedder]:
    """Gemini's LLM and embedder, sharing one client, meter and rate limiter (needs the key)."""
    adapters = gemini.from_config(workspace.config, workspace.secrets, meter)
    return adapters.llm, adapters.embedder


def optional_embedder(workspace: Workspace) -> Embedder | None:
    """The embedder when a key is set; without one the index serves keyword search only."""
    if workspace.secrets.gemini_api_key is None:
        return None
    return models(workspace, UsageMeter.from_config(workspace.config))[1]


def embedding_cache(embedder: Embedder | None, options: Options) -> CachedEmbedder | None:
    """The embedder behind the docs-embedding cache file, when the options name one."""
    if embedder is None or options.embedding_cache is None:
        return None
    return CachedEmbedder(embedder, options.embedding_cache)


# --- the docs index --------------------------------------------------------------------------


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


def searcher(workspace: Workspace, conn: db.Connection, embedder: Embedder | None) -> Searcher:
    """Search returning repository-relative paths (the index stores docs-relative ones)."""
    prefix = workspace.docs_prefix

    def search(query: str, k: int) -> list[Hit]:
        return [
            replace(hit, path=prefix + hit.path)
            for hit in hybrid.search(conn, query, k=k, embedder=embedder)
        ]

    return search


# --- sources ---------------------------------------------------------------------------------


def build_source(stream: Stream, *, secrets: Secrets, salt: str) -> ChatSource:
    """The real source for one configured stream (network clients are created lazily)."""
    if not salt:
        raise SourceError(
            "the pseudonym salt is empty; set privacy.salt or run inside a repository"
        )
    if isinstance(stream, TelegramStream):
        return TelegramSource(stream, client=connect_client(stream, secrets=secrets), salt=salt)
    if isinstance(stream, ZulipStream):
        zulip_stream = stream
        return ZulipSource(
            zulip_stream,
            client_factory=lambda: make_client(zulip_stream, secrets=secrets),
            salt=salt,
        )
    if isinstance(stream, ExportStream):
        return ExportSource(stream, salt=salt)
    raise SourceError(f"stream kind of '{stream.id}' is not supported")


def chosen_streams(workspace: Workspace, options: Options) -> list[Stream]:
    """The configured streams (or only `--stream`), started at `--since` when given, with
    export paths resolved against the repository."""
    config = workspace.config
    chosen = [config.stream(options.stream)] if options.stream else list(config.streams)
    if options.since:
        start = _since(options.since, options)
        chosen = [stream.model_copy(update={"start": start}) for stream in chosen]
    return [_resolved(workspace, stream) for stream in chosen]


def _since(value: str, options: Options) -> int | date:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UserError(
            f"{options.setting('since')} '{value}' is neither a message id nor a YYYY-MM-DD date"
        ) from None


def _resolved(workspace: Workspace, stream: Stream) -> Stream:
    if isinstance(stream, ExportStream) and not Path(stream.path).is_absolute():
        return stream.model_copy(update={"path": str((workspace.root / stream.path).resolve())})
    return stream


def build_sources(workspace: Workspace, streams: Sequence[Stream]) -> list[ChatSource]:
    return [
        build_source(stream, secrets=workspace.secrets, salt=workspace.salt) for stream in streams
    ]


# --- publishers ------------------------------------------------------------------------------


def dry_run_publisher(workspace: Workspace, options: Options, ledger: Ledger) -> DryRunPublisher:
    return DryRunPublisher(
        Path(options.out),
        ledger=ledger,
        templates=prompts.environment(workspace.root),
        evidence_quotes=workspace.config.publish.evidence_quotes,
        read=workspace.read,
    )


def github_publisher(
    workspace: Workspace,
    options: Options,
    ledger: Ledger,
    *,
    throttle: bool = True,
) -> GitHubPublisher:
    """The real publisher; needs GITHUB_TOKEN and GITHUB_REPOSITORY (GitHub Actions sets both).
    `throttle=False` drops PyGithub's pauses between calls (for tests against a local fake)."""
    token = check_publishing(workspace, options)
    pauses = {} if throttle else {"seconds_between_requests": None, "seconds_between_writes": None}
    return GitHubPublisher(
        repo_path=workspace.root,
        repository=options.repository,
        github=github_client(
            token.get_secret_value(), base_url=options.api_url or None, **pauses
        ),
        ledger=ledger,
        config=workspace.config.publish,
        token=token.get_secret_value(),
        templates=prompts.environment(workspace.root),
    )


def check_publishing(workspace: Workspace, options: Options) -> SecretStr:
    """The token, once the token and the repository to publish to are known to be usable;
    a run checks this before it does anything else."""
    token = workspace.secrets.github_token
    if token is None or not options.repository:
        raise UserError(
            "publishing needs GITHUB_TOKEN and GITHUB_REPOSITORY (set by GitHub Actions; under "
            f"act, pass -s GITHUB_TOKEN=...); set {options.setting('dry-run')} to write "
            "proposals to a folder instead"
        )
    if not REPOSITORY.fullmatch(options.repository):
        # act derives it from the origin remote, which for a local clone is a path.
        raise UserError(
            f"GITHUB_REPOSITORY is '{options.repository}', not owner/name; set it to the "
            "repository to publish to (under act: --env GITHUB_REPOSITORY=owner/name)"
        )
    return token


# --- a run's dependencies --------------------------------------------------------------------


def build_deps(
    workspace: Workspace,
    options: Options,
    *,
    store: StateStore,
    ledger: Ledger,
    conn: db.Connection,
    llm: LLM,
    embedder: Embedder | None,
    publisher: Publisher,
    meter: UsageMeter,
    sources: Sequence[ChatSource] | None = None,
    clock: Callable[[], float] = time.monotonic,
    started: float | None = None,
) -> pipeline.Deps:
    """Everything `pipeline.run` talks to; `sources` default to the configured streams."""
    if sources is None:
        sources = build_sources(workspace, chosen_streams(workspace, options))
    return pipeline.Deps(
        sources=sources,
        llm=llm,
        search=searcher(workspace, conn, embedder),
        read=workspace.read,
        publisher=publisher,
        store=store,
        meter=meter,
        docs_domains=safety.link_domains(workspace.docs_texts()),
        repo_root=workspace.root,
        clock=clock,
        since=bool(options.since),
        parked=ledger.parked,
        started=started,
    )
