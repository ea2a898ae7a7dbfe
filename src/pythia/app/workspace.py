"""The repository Pythia works in: its config, secrets and docs, and where its data is kept."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from ..config import Config, Secrets, load_config
from ..edits import PathPolicy
from ..state import StateStore
from .options import Options

LOCAL_DIR = Path(".pythia")


class UserError(Exception):
    """A problem the user can fix, told in one sentence."""


@dataclass(frozen=True)
class Workspace:
    """The repository Pythia works in, its config, its secrets, and its pseudonym salt."""

    root: Path
    config: Config
    secrets: Secrets
    repository: str = ""  # owner/name, when known
    repository_id: str = ""
    api_url: str = ""  # GITHUB_API_URL, when known (GitHub Enterprise Server)

    @property
    def docs_root(self) -> Path:
        return (self.root / self.config.docs.root).resolve()

    @property
    def docs_prefix(self) -> str:
        """The docs root relative to the repository, as a path prefix ('' or 'docs/')."""
        relative = os.path.relpath(self.docs_root, self.root.resolve()).replace(os.sep, "/")
        return "" if relative == "." else relative.rstrip("/") + "/"

    @property
    def salt(self) -> str:
        """Pseudonym salt: config, else the repository's id, else its name, else the folder's."""
        return (
            self.config.privacy.salt
            or self.repository_id
            or self.repository
            or self.root.resolve().name
        )

    def with_docs_root(self, folder: Path) -> Workspace:
        """The same workspace indexing another docs folder (`pythia index --docs`)."""
        relative = os.path.relpath(folder.resolve(), self.root)
        docs = self.config.docs.model_copy(update={"root": relative})
        return replace(self, config=self.config.model_copy(update={"docs": docs}))

    def read(self, path: str) -> str | None:
        """A repository file's text, or None when it is missing or outside the repository."""
        target = (self.root / path).resolve()
        if self.root.resolve() not in target.parents or not target.is_file():
            return None
        return target.read_text(encoding="utf-8", errors="replace")

    def docs_paths(self) -> list[str]:
        """Every docs file an edit may touch, repository-relative, sorted."""
        policy = PathPolicy.from_config(self.config.docs)
        found = []
        for path in self.docs_root.rglob("*"):
            if path.is_file():
                relative = path.relative_to(self.root.resolve()).as_posix()
                if policy.allows(relative):
                    found.append(relative)
        return sorted(found)

    def docs_texts(self) -> list[str]:
        return [text for path in self.docs_paths() if (text := self.read(path))]


def open_workspace(options: Options) -> Workspace:
    root = Path(options.repo).resolve()
    if not root.is_dir():
        raise UserError(f"{options.repo} is not a folder; pass the docs repository with --repo")
    config_path = Path(options.config) if options.config else root / ".github/pythia.yml"
    config = load_config(config_path)
    if options.llm_base_url:  # the Action's `llm-base-url` input wins over the file
        models = config.models.model_copy(update={"base_url": options.llm_base_url})
        config = config.model_copy(update={"models": models})
    return Workspace(
        root=root,
        config=config,
        secrets=Secrets.from_env(),
        repository=options.repository,
        repository_id=options.repository_id,
        api_url=options.api_url,
    )


@dataclass(frozen=True)
class Storage:
    """Where the index and state live for this command: the data branch or a local folder."""

    index_path: Path
    store: StateStore
    save: Callable[[str], bool]
    on_data_branch: bool


def _uses_data_branch(workspace: Workspace, options: Options) -> bool:
    if options.index is not None or options.local_only:
        return False
    if not (workspace.root / ".git").exists():
        return False
    import git  # GitPython: only for commands that keep their data on a branch

    try:
        return "origin" in [remote.name for remote in git.Repo(workspace.root).remotes]
    except git.GitError:
        return False


@contextmanager
def open_storage(workspace: Workspace, options: Options) -> Iterator[Storage]:
    """The data branch when this is a checkout with an origin; `.pythia/` otherwise."""
    if _uses_data_branch(workspace, options):
        from ..databranch import DataBranch

        token = workspace.secrets.github_token
        with DataBranch(
            workspace.root,
            branch=workspace.config.publish.data_branch,
            token=token.get_secret_value() if token else None,
        ) as data:
            yield Storage(data.index_path, data.store, data.save, on_data_branch=True)
        return
    local = workspace.root / LOCAL_DIR
    index_path = options.index or local / "index.sqlite"
    yield Storage(index_path, StateStore(local / "state"), lambda _message: False, False)
