"""The `pythia-data` branch: a private checkout of the index and state, saved with retries."""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import git

from .gitenv import BOT_EMAIL, NoRemote, auth_env, bot_env, remote_url
from .state import StateStore, merge_state_file

log = logging.getLogger(__name__)


INDEX_FILE = "index.sqlite"
STATE_DIR = "state"
INDEX_SUBJECT = "pythia: update the docs index"
_README = """# pythia-data

Written by Pythia: `index.sqlite` (the docs index) and `state/` (stream watermarks and the
proposal ledger). It holds ids, hashes, statuses and PR numbers, never chat messages.
Do not protect this branch; Pythia replaces its index commit instead of stacking them.
"""


class DataBranchError(Exception):
    """The data branch could not be fetched or pushed."""


class DataBranch:
    """A private checkout of the data branch: open, change `path`, then `save`.

    The checkout is a throwaway repository in a temp dir, so the user's working tree, index and
    current branch are never touched.
    """

    def __init__(
        self,
        repo_path: Path | str,
        branch: str = "pythia-data",
        remote: str = "origin",
        token: str | None = None,
        *,
        max_attempts: int = 12,
        max_seconds: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo_path = Path(repo_path)
        self.branch = branch
        self.remote = remote
        self.max_attempts = max_attempts
        self.max_seconds = max_seconds
        self._sleep = sleep
        self._clock = clock
        self.created = False
        self._token = token
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._remote_sha: str | None = None
        self._repo: Any = None

    def __enter__(self) -> DataBranch:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        if self._tmp is None:
            raise DataBranchError("the data branch is not open; call open() first")
        return Path(self._tmp.name)

    @property
    def index_path(self) -> Path:
        return self.path / INDEX_FILE

    @property
    def state_dir(self) -> Path:
        return self.path / STATE_DIR

    @property
    def store(self) -> StateStore:
        return StateStore(self.state_dir)

    def open(self) -> Path:
        """Fetch the branch into a temp checkout, or start it as an orphan if it is missing."""
        try:
            url = remote_url(self.repo_path, self.remote)
        except NoRemote as error:
            raise DataBranchError(str(error)) from None
        self._tmp = tempfile.TemporaryDirectory(prefix="pythia-data-")
        self._repo = git.Repo.init(self._tmp.name)
        self._repo.git.update_environment(**bot_env(), **auth_env(url, self._token))
        self._git("remote", "add", "origin", url)
        self._remote_sha = self._fetch()
        if self._remote_sha is None:
            self._git("symbolic-ref", "HEAD", f"refs/heads/{self.branch}")
            self.state_dir.mkdir(parents=True, exist_ok=True)
            (self.path / "README.md").write_text(_README, encoding="utf-8")
            self.created = True
        else:
            self._git("checkout", "-q", "-B", self.branch, self._remote_sha)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return self.path

    def close(self) -> None:
        if self._tmp is not None:
            self._repo.close()
            self._tmp.cleanup()
            self._tmp = None

    def save(self, message: str) -> bool:
        """Commit and push what changed; False when nothing did.

        When another run pushed first, its state is merged in and the push retried, after a
        growing, jittered pause (runs of a matrix finish together and would collide again),
        for at most `max_attempts` tries within `max_seconds`.
        """
        deadline = self._clock() + self.max_seconds
        snapshot = self._changes()
        attempt = 0
        while snapshot:
            attempt += 1
            self._commit(message)
            if self._push():
                self._remote_sha = self._rev("HEAD")
                return True
            if attempt >= self.max_attempts or self._clock() >= deadline:
                raise DataBranchError(
                    f"another run kept pushing to '{self.branch}' ({attempt} attempts); "
                    "this run's state was not saved, rerun it"
                )
            self._sleep(min(8.0, 0.25 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5))
            self._reapply(snapshot)
            snapshot = self._changes()
        return False

    # -- git plumbing --

    def _git(self, *args: str) -> str:
        return str(self._repo.git.execute(["git", *args]))

    def _rev(self, ref: str) -> str | None:
        try:
            return self._git("rev-parse", "--verify", "-q", ref).strip() or None
        except git.GitCommandError:
            return None

    def _fetch(self) -> str | None:
        ref = f"refs/heads/{self.branch}"
        try:
            listed = self._git("ls-remote", "--heads", "origin", ref)
            if not listed.strip():
                return None
            self._git("fetch", "-q", "origin", f"+{ref}:refs/remotes/origin/{self.branch}")
        except git.GitCommandError as error:
            raise DataBranchError(
                f"cannot fetch '{self.branch}' from '{self.remote}' "
                f"({_last_line(error.stderr)}); check the token's contents permission"
            ) from None
        return self._rev(f"refs/remotes/origin/{self.branch}")

    def _changes(self) -> dict[str, bytes]:
        """Files that differ from the last pushed commit, with this run's content."""
        self._git("add", "-A")
        if self._rev("HEAD") is None:
            names = self._git("ls-files").splitlines()
        else:
            names = self._git("diff", "--cached", "--name-only", "HEAD").splitlines()
        return {n: (self.path / n).read_bytes() for n in names if (self.path / n).is_file()}

    def _commit(self, message: str) -> None:
        # The index always rides in its own commit on top: replacing that commit each save
        # keeps one index blob in history instead of one per rebuild; state commits (a few
        # KB of JSON) stack below it.
        head = self._rev("HEAD")
        if head is not None and self._is_index_commit(head):
            self._git("reset", "-q", "--soft", "HEAD~1")
            head = self._rev("HEAD")
        staged = self._staged(head)
        if any(name != INDEX_FILE for name in staged):
            if INDEX_FILE in staged:
                self._unstage_index(head)
            self._git("commit", "-q", "--no-verify", "-m", message)
            head = self._rev("HEAD")
        if INDEX_FILE in self._staged(head, add_index=True):
            self._git("commit", "-q", "--no-verify", "-m", INDEX_SUBJECT, "-m", message)

    def _staged(self, head: str | None, *, add_index: bool = False) -> list[str]:
        if add_index and (self.path / INDEX_FILE).exists():
            self._git("add", INDEX_FILE)
        if head is None:
            return self._git("ls-files").splitlines()
        return self._git("diff", "--cached", "--name-only", head).splitlines()

    def _unstage_index(self, head: str | None) -> None:
        if head is None:
            self._git("rm", "-q", "--cached", INDEX_FILE)
        else:
            self._git("reset", "-q", head, "--", INDEX_FILE)

    def _is_index_commit(self, sha: str) -> bool:
        author = self._git("log", "-1", "--format=%ae%n%s", sha).splitlines()
        if author[:2] != [BOT_EMAIL, INDEX_SUBJECT] or self._rev(f"{sha}~1") is None:
            return False
        touched = self._git("diff-tree", "--no-commit-id", "--name-only", "-r", sha).splitlines()
        return touched == [INDEX_FILE]

    def _push(self) -> bool:
        lease = f"refs/heads/{self.branch}:{self._remote_sha or ''}"
        try:
            self._git(
                "push", "-q", f"--force-with-lease={lease}", "origin",
                f"HEAD:refs/heads/{self.branch}",
            )  # fmt: skip
        except git.GitCommandError as error:
            stderr = str(error.stderr)
            if any(sign in stderr.lower() for sign in _PROTECTED):
                # A server-side refusal, not a race: retrying cannot help.
                raise DataBranchError(
                    f"'{self.branch}' is protected on GitHub ({_last_line(stderr)}); Pythia "
                    "replaces its commits there, so remove the branch protection rule or "
                    "ruleset that covers it (Settings > Branches, Settings > Rules)"
                ) from None
            if any(sign in stderr for sign in _RACE):
                log.info("the data branch moved during this run; merging and retrying")
                return False
            raise DataBranchError(
                f"cannot push '{self.branch}' ({_last_line(stderr)}); the branch must not be "
                "protected and the token needs contents: write"
            ) from None
        return True

    def _reapply(self, snapshot: dict[str, bytes]) -> None:
        """Move onto the branch as another run left it, then re-apply this run's changes."""
        self._remote_sha = self._fetch()
        if self._remote_sha is None:
            raise DataBranchError(f"'{self.branch}' was deleted during this run; rerun it")
        self._git("reset", "-q", "--hard", self._remote_sha)
        self._git("clean", "-q", "-fdx")
        for name, ours in snapshot.items():
            target = self.path / name
            data = ours
            if name.startswith(f"{STATE_DIR}/") and name.endswith(".json") and target.exists():
                data = merge_state_file(Path(name).name, ours, target.read_bytes())
            # Anything else (the index) is this run's: it was built from the docs this run saw.
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)


# How GitHub (and git servers generally) say a push was refused by policy, not by a race.
_PROTECTED = ("gh006", "gh013", "protected branch", "pre-receive hook declined")
# How a lost race reads: the lease saw another push, or the server's ref moved under ours.
_RACE = ("stale info", "[rejected]", "fetch first", "failed to update ref", "cannot lock ref")


def _last_line(text: object) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1].strip("'\" ") if lines else "no detail"
