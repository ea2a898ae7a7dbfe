"""The repository Pythia works in: its config, secrets, storage, docs index and streams."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

from . import actions, index
from . import search as hybrid
from .config import Config, Secrets, Stream, load_config
from .models import Hit
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


LOG_LEVELS = ("debug", "info", "warning", "error")


def setup_logging(args: argparse.Namespace, secrets: Secrets | None = None) -> None:
    values = secrets.values() if secrets else []
    in_ci = actions.in_actions()
    if in_ci:
        actions.mask(values)
    level = str(getattr(args, "log_level", "info") or "info").lower()
    if level not in LOG_LEVELS:
        raise UserError(f"log level '{level}' is not one of {', '.join(LOG_LEVELS)}")
    actions.configure_logging(level=level, secrets=values, actions=in_ci)


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
        from .databranch import DataBranch

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


def embedder_for(workspace: Workspace, *, required: bool) -> tuple[Embedder | None, Any]:
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


def searcher(
    workspace: Workspace, conn: Any, embedder: Embedder | None
) -> Callable[[str, int], list[Hit]]:
    """Search returning repository-relative paths (the index stores docs-relative ones)."""
    prefix = workspace.docs_prefix

    def search(query: str, k: int) -> list[Hit]:
        return [
            replace(hit, path=prefix + hit.path)
            for hit in hybrid.search(conn, query, k=k, embedder=embedder)
        ]

    return search


def chosen_streams(workspace: Workspace, only: str | None, since: str | None) -> list[Stream]:
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


def build_sources(workspace: Workspace, streams: list[Stream]) -> list[Any]:
    from .sources import build_source

    salt = workspace.salt()
    return [build_source(stream, secrets=workspace.secrets, salt=salt) for stream in streams]


def resolve_export_paths(workspace: Workspace, streams: list[Stream]) -> list[Stream]:
    from .config import ExportStream

    resolved: list[Stream] = []
    for stream in streams:
        if isinstance(stream, ExportStream) and not Path(stream.path).is_absolute():
            path = str((workspace.root / stream.path).resolve())
            resolved.append(stream.model_copy(update={"path": path}))
        else:
            resolved.append(stream)
    return resolved


def docs_paths(workspace: Workspace) -> list[str]:
    from .edits import PathPolicy

    policy = PathPolicy.from_config(workspace.config.docs)
    found = []
    for path in workspace.docs_root.rglob("*"):
        if path.is_file():
            relative = path.relative_to(workspace.root.resolve()).as_posix()
            if policy.allows(relative):
                found.append(relative)
    return sorted(found)
