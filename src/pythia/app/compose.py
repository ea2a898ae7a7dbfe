"""The composition root: real ports built from config, secrets and options, wired into a run.

The CLI, the Action entry and the tests all build a run here; tests hand `build_deps` doubles
for the ports they replace (an LLM, an embedder, a publisher, sources) and get the rest real.
Adapters are imported where they are built, so a command that needs neither GitHub nor Gemini
(`pythia status`, `pythia --help`) never loads their clients.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from .. import db, index, pipeline, prompts, safety
from .. import search as hybrid
from ..checks import EditChecks
from ..embedcache import CachedEmbedder
from ..models import Hit
from ..ports import LLM, ChatSource, Embedder, Publisher
from ..propose import Searcher
from ..querycache import QueryCache
from ..state import Ledger, StateStore
from ..usage import UsageMeter
from .options import Options
from .sourcing import build_sources, chosen_streams
from .workspace import UserError, Workspace

if TYPE_CHECKING:
    from ..backfill import Backfill
    from ..checkcommand import CommandResult
    from ..publish.dryrun import DryRunPublisher
    from ..publish.github import GitHubPublisher

# GitHub's owner/name: letters, digits and hyphens, then letters, digits, '.', '-', '_'.
REPOSITORY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?/[A-Za-z0-9._-]+")


def models(
    workspace: Workspace,
    meter: UsageMeter,
    *,
    deadline: float | None = None,
    cache: Path | None = None,
    sealed_only: bool = False,
) -> tuple[LLM, Embedder]:
    """The configured provider's LLM and embedder (`models.provider`), sharing one client and
    meter; with `cache`, answers already paid for come from that response cache file, sealed
    with `Secrets.cache_secret` when there is one. `sealed_only` (the Action, whose cache a
    fork's pull request may read) keeps no cache rather than an unsealed one."""
    config, secrets = workspace.config, workspace.secrets
    llm: LLM
    if config.models.provider == "openai":
        from .. import openai_compat

        adapters: tuple[LLM, Embedder] = openai_compat.from_config(
            config, secrets, meter, deadline=deadline, timeout_seconds=config.models.timeout_seconds
        )
    else:
        from .. import gemini

        adapters = gemini.from_config(
            config, secrets, meter, deadline=deadline, timeout_seconds=config.models.timeout_seconds
        )
    llm, embedder = adapters
    secret = secrets.cache_secret(config.models.provider)
    if cache is not None and sealed_only and secret is None:
        print(
            "no response cache: in the Action it is sealed with the provider's API key or "
            "PYTHIA_CACHE_SECRET, and neither is set",
            file=sys.stderr,
        )
        cache = None
    if cache is not None:
        from ..responsecache import CachedEmbedder, CachedLLM, ResponseCache

        answers = ResponseCache(cache, secret=secret)
        llm = CachedLLM(llm, answers, provider=config.models.provider)
        embedder = CachedEmbedder(embedder, answers)
    return llm, embedder


def backfill(workspace: Workspace, options: Options, meter: UsageMeter) -> Backfill | None:
    """Batch jobs for large piles of threads: the Gemini Batch API (its own v1beta client);
    other providers classify them the normal way."""
    config = workspace.config
    if config.models.provider != "gemini":
        if options.backfill:
            raise UserError(
                "--backfill sends batch jobs to the Gemini Batch API, but models.provider is "
                f"{config.models.provider}; run without --backfill"
            )
        return None
    if options.dry_run:
        # A job's name must be saved for a later run to collect it; a dry run saves nothing.
        if options.backfill:
            print("a dry run saves no state, so --backfill is ignored", file=sys.stderr)
        return None
    from .. import gemini
    from ..backfill import Backfill
    from ..gemini_batch import GeminiBatches

    key = workspace.secrets.gemini_api_key
    if key is None:
        return None  # models() has already said that the key is missing
    client = gemini.make_client(
        key.get_secret_value().strip(),
        timeout_seconds=config.models.timeout_seconds,
        api_version="v1beta",  # where the Batch API is documented
    )
    policy = gemini.RetryPolicy()
    return Backfill(
        GeminiBatches(
            client, call=lambda send: gemini.call_with_retries(send, policy=policy, model="batch")
        ),
        config=config,
        meter=meter,
        always=options.backfill,
        repo_root=workspace.root,
    )


def can_embed(workspace: Workspace) -> bool:
    """Whether the configured provider can be reached: a key, or a local server's address."""
    models_, secrets = workspace.config.models, workspace.secrets
    if models_.provider == "openai":
        return secrets.openai_api_key is not None or bool(models_.base_url.strip())
    return secrets.gemini_api_key is not None


def no_embedder(workspace: Workspace) -> str:
    """Why there is no embedder, naming what the configured provider needs ('' when there is
    one): GEMINI_API_KEY for Gemini; OPENAI_API_KEY, or a local server's models.base_url, for
    OpenAI-compatible providers."""
    if can_embed(workspace):
        return ""
    if workspace.config.models.provider == "openai":
        return "no OPENAI_API_KEY (nor models.base_url for a local server)"
    return "no GEMINI_API_KEY"


def optional_embedder(workspace: Workspace) -> Embedder | None:
    """The embedder when the provider can be reached; without, keyword search only."""
    if not can_embed(workspace):
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


class RunSearch:
    """Search returning repository-relative paths (the index stores docs-relative ones).

    One `SearchIndex` serves every search of the run, opened at first use (after the index
    sync), so what repeats per query is read once.
    """

    def __init__(self, workspace: Workspace, conn: db.Connection, embedder: Embedder | None):
        self._prefix = workspace.docs_prefix
        self._conn = conn
        self._embedder = embedder
        self._opened: hybrid.SearchIndex | None = None

    def _index(self) -> hybrid.SearchIndex:
        if self._opened is None:
            self._opened = hybrid.SearchIndex(self._conn, embedder=self._embedder)
        return self._opened

    def search(self, query: str, k: int) -> list[Hit]:
        hits = self._index().search(query, k=k)
        return [replace(hit, path=self._prefix + hit.path) for hit in hits]

    def prepare(self, queries: Sequence[str], *, k: int) -> None:
        """The run's queries ranked by vector together, before it searches them one by one."""
        self._index().prepare(queries, k=k)


def _warming(
    queries: QueryCache | None, search: RunSearch | None, k: int
) -> Callable[[Sequence[str]], None]:
    """What the pipeline calls with a run's queries: embed them, then `RunSearch.prepare`."""

    def warm(texts: Sequence[str]) -> None:
        if queries is not None:
            queries.warm(texts)
        if search is not None:
            search.prepare(texts, k=k)

    return warm


# --- publishers ------------------------------------------------------------------------------


def dry_run_publisher(workspace: Workspace, options: Options, ledger: Ledger) -> DryRunPublisher:
    from ..publish.dryrun import DryRunPublisher

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
    from ..publish.github import GitHubPublisher, github_client

    token = check_publishing(workspace, options)
    pauses = {} if throttle else {"seconds_between_requests": None, "seconds_between_writes": None}
    return GitHubPublisher(
        repo_path=workspace.root,
        repository=options.repository,
        github=github_client(token.get_secret_value(), base_url=options.api_url or None, **pauses),
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

# Folders that hold no page a link could name, left out of the repository's file list.
_NOT_DOCS = frozenset({".git", ".pythia", "node_modules", ".venv", "venv", "__pycache__"})


def _repository_files(root: Path) -> set[str]:
    """Every file under `root`, relative and with '/', skipping `_NOT_DOCS` folders without
    walking into them (a node_modules tree can hold more files than the docs have words)."""
    found: set[str] = set()
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in _NOT_DOCS]
        base = Path(folder).relative_to(root)
        found.update((base / name).as_posix() for name in files if (Path(folder) / name).is_file())
    return found


def edit_checks(workspace: Workspace, options: Options, docs_texts: Sequence[str]) -> EditChecks:
    """The checks every proposal passes: grounding against the docs, links against every file
    of the repository (and the pages the docs build generates), the configured build."""
    docs = workspace.config.docs
    root = workspace.root.resolve()
    paths = _repository_files(root)
    paths |= {workspace.docs_prefix + page.lstrip("/") for page in docs.generated}
    build = None
    if docs.check_command:

        def build(after: Mapping[str, str]) -> CommandResult:
            from ..checkcommand import run_check_command, scratch_copy

            with scratch_copy(workspace.root, after) as folder:
                return run_check_command(
                    docs.check_command,
                    cwd=folder,
                    environ=options.environment,
                    timeout=docs.check_timeout_seconds,
                    keep_env=docs.check_env,
                )

    return EditChecks(docs_texts=docs_texts, paths=paths, read=workspace.read, build=build)


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
    search: Searcher | None = None,
    clock: Callable[[], float] = time.monotonic,
    started: float | None = None,
    backfill: Backfill | None = None,
) -> pipeline.Deps:
    """Everything `pipeline.run` talks to; `sources` default to the configured streams and
    `search` to the index behind `conn`."""
    if sources is None:
        sources = build_sources(workspace, chosen_streams(workspace, options))
    queries = QueryCache(embedder) if embedder is not None else None
    docs_texts = workspace.docs_texts()
    run_search = RunSearch(workspace, conn, queries)
    return pipeline.Deps(
        sources=sources,
        llm=llm,
        search=search or run_search.search,
        read=workspace.read,
        publisher=publisher,
        store=store,
        meter=meter,
        docs_domains=safety.link_domains(docs_texts),
        repo_root=workspace.root,
        clock=clock,
        since=bool(options.since),
        ledger=ledger,
        warm=_warming(queries, None if search else run_search, workspace.config.limits.search_k),
        checks=edit_checks(workspace, options, docs_texts),
        started=started,
        backfill=backfill,
        known_queries=queries.known if queries is not None else None,
    )
