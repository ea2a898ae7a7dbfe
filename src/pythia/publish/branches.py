"""Proposal branches: commits built from git objects and pushed, never touching the checkout."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import git

from ..gitenv import auth_env, bot_env, remote_url


class ProposalBranches:
    """Builds commits from a base branch plus new file contents and pushes them as branches.

    It works on git objects and a private index file (GIT_INDEX_FILE), so the user's working
    tree, index and checked-out branch never change.
    """

    def __init__(self, repo_path: Path, *, remote: str = "origin", token: str | None = None):
        self.repo = git.Repo(repo_path)
        self.remote = remote
        self._env = {**bot_env(), **auth_env(remote_url(Path(repo_path), remote), token)}

    def _git(self, *args: str, env: dict[str, str] | None = None) -> str:
        return str(self.repo.git.execute(["git", *args], env={**self._env, **(env or {})}))

    def fetch(self, branch: str) -> str:
        """The remote tip of `branch`, fetched into refs/remotes/<remote>/<branch>."""
        tracking = f"refs/remotes/{self.remote}/{branch}"
        self._git("fetch", "-q", self.remote, f"+refs/heads/{branch}:{tracking}")
        return self._git("rev-parse", tracking).strip()

    def read(self, commit: str, path: str) -> str | None:
        """A file's text at `commit`, or None when it does not exist there."""
        try:
            blob = self._git("rev-parse", "--verify", "--quiet", f"{commit}:{path}").strip()
        except git.GitCommandError:
            return None
        raw: bytes = self.repo.git.execute(
            ["git", "cat-file", "blob", blob], env=self._env, stdout_as_string=False,
            strip_newline_in_stdout=False,
        )
        return raw.decode("utf-8", errors="replace")

    def remote_head(self, branch: str) -> str | None:
        listed = self._git("ls-remote", "--heads", self.remote, f"refs/heads/{branch}").split()
        return listed[0] if listed else None

    def commit(self, parent: str, files: Sequence[tuple[str, str]], message: str) -> str:
        index_file = Path(self.repo.git_dir) / f"pythia-index-{os.getpid()}"
        env = {"GIT_INDEX_FILE": str(index_file)}
        try:
            self._git("read-tree", parent, env=env)
            for path, text in files:
                blob = self._store(text)
                entry = f"{self._mode(parent, path)},{blob},{path}"
                self._git("update-index", "--add", "--cacheinfo", entry, env=env)
            tree = self._git("write-tree", env=env).strip()
        finally:
            index_file.unlink(missing_ok=True)
        return self._git("commit-tree", tree, "-p", parent, "-m", message).strip()

    def _store(self, text: str) -> str:
        with tempfile.NamedTemporaryFile("wb", suffix=".md", delete=False) as handle:
            handle.write(text.encode("utf-8"))
        try:
            return self._git("hash-object", "-w", "--no-filters", handle.name).strip()
        finally:
            Path(handle.name).unlink(missing_ok=True)

    def _mode(self, parent: str, path: str) -> str:
        listed = self._git("ls-tree", parent, "--", path).split()
        return listed[0] if listed and listed[0] in ("100644", "100755") else "100644"

    def push(self, sha: str, branch: str, *, expected: str | None) -> None:
        """Push `sha` to `branch` if the remote branch is still at `expected` (None: absent)."""
        lease = f"--force-with-lease=refs/heads/{branch}:{expected or ''}"
        self._git("push", "-q", lease, self.remote, f"{sha}:refs/heads/{branch}")
