"""Which docs files the index covers, and which of them may have changed since its last update."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import git

from .globs import glob_regex


@dataclass(frozen=True)
class Scope:
    """Which paths (POSIX, relative to the docs root) belong in the index."""

    include: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...]

    @classmethod
    def of(cls, include: Sequence[str], exclude: Sequence[str]) -> Scope:
        return cls(tuple(map(glob_regex, include)), tuple(map(glob_regex, exclude)))

    def __contains__(self, path: object) -> bool:
        return (
            isinstance(path, str)
            and any(p.match(path) for p in self.include)
            and not any(p.match(path) for p in self.exclude)
        )


@dataclass(frozen=True)
class Candidates:
    """Paths that may have changed, and which of them differ from the commit (dirty)."""

    paths: frozenset[str]
    dirty: frozenset[str]
    commit: str


def _open_repo(docs_root: Path) -> git.Repo | None:
    try:
        repo = git.Repo(docs_root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    return repo if repo.working_tree_dir else None


def _git_paths(repo: git.Repo, *args: str, docs_rel: str) -> set[str]:
    # -z: paths are NUL-separated and never quoted (core.quotePath would escape non-ASCII).
    output = repo.git.execute(["git", *args, "-z", "--", docs_rel], strip_newline_in_stdout=False)
    prefix = "" if docs_rel == "." else docs_rel.rstrip("/") + "/"
    return {p[len(prefix) :] for p in str(output).split("\0") if p and p.startswith(prefix)}


def _head(repo: git.Repo) -> str:
    try:
        return str(repo.head.commit.hexsha)
    except ValueError:  # a repository without commits
        return ""


def _has_commit(repo: git.Repo, sha: str) -> bool:
    try:
        repo.git.execute(["git", "cat-file", "-e", f"{sha}^{{commit}}"])
    except git.GitCommandError:
        return False
    return True


def _git_candidates(
    repo: git.Repo, docs_root: Path, *, recorded: str, known: Iterable[str], dirty_before: set[str]
) -> Candidates:
    """Changed paths from git: commits since `recorded`, the working tree, untracked files.

    `--no-renames` matters: with rename detection (git's default since 2.9) `--name-only`
    lists only a renamed file's new name, and the old one would keep stale chunks.
    """
    top = Path(str(repo.working_tree_dir)).resolve()
    docs_rel = docs_root.resolve().relative_to(top).as_posix()
    head = _head(repo)
    untracked = _git_paths(repo, "ls-files", "--others", "--exclude-standard", docs_rel=docs_rel)
    dirty = set(untracked)
    if head:
        dirty |= _git_paths(repo, "diff", "--name-only", "--no-renames", "HEAD", docs_rel=docs_rel)
    if recorded and head and _has_commit(repo, recorded):
        committed = _git_paths(
            repo, "diff", "--name-only", "--no-renames", f"{recorded}..{head}", docs_rel=docs_rel
        )
        paths = committed | dirty | dirty_before
    else:
        tracked = _git_paths(repo, "ls-files", "--cached", docs_rel=docs_rel)
        paths = tracked | untracked | set(known)
    return Candidates(frozenset(paths), frozenset(dirty), head)


def _walk(docs_root: Path) -> set[str]:
    found: set[str] = set()
    for folder, dirs, files in os.walk(docs_root):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        base = Path(folder).relative_to(docs_root)
        found.update((base / name).as_posix() for name in files)
    return found


def find_candidates(
    docs_root: Path, *, recorded: str, known: Iterable[str], dirty_before: set[str]
) -> Candidates:
    """The paths to check: from git when the docs are in a repository, else every file.

    Outside git nothing is dirty and there is no commit; every file on disk or in the
    index is a candidate, and its content hash tells whether it changed.
    """
    repo = _open_repo(docs_root)
    if repo is None:
        return Candidates(frozenset(_walk(docs_root) | set(known)), frozenset(), "")
    try:
        return _git_candidates(
            repo, docs_root, recorded=recorded, known=known, dirty_before=dirty_before
        )
    finally:
        repo.close()
