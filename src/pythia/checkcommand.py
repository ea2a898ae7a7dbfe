"""Running a repository's own docs check (`mkdocs build --strict`) on an edit, without secrets.

The command runs in a scratch copy of the repository with the edit applied (no `.git`), with
PATH, HOME, the locale and little else in its environment (never a token or a key), under a time
limit; its last lines of output are kept for the model.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from .edits import normalise_path

__all__ = [
    "LINKED_DIRS",
    "CommandResult",
    "build_scratch",
    "command_environment",
    "run_check_command",
    "scratch_copy",
]


# The variables a build tool needs to find itself and read text; everything else is dropped.
_KEPT_ENVIRONMENT = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TERM",
        "TMPDIR",
        "USER",
        "LOGNAME",
        "SHELL",
        "PYTHONIOENCODING",
        "CI",
        "SYSTEMROOT",
        "COMSPEC",
        "PATHEXT",
    }
)
# Never passed, even when asked for by name: the names Pythia's own secrets and tokens use.
_SECRET_NAME = re.compile(
    r"(?i)TOKEN|SECRET|PASSW|CREDENTIAL|_KEY$|_KEY_|^KEY_|APIKEY|_SESSION$|AUTH"
    r"|^GEMINI_|^GOOGLE_|^TELEGRAM_|^ZULIP_|^GITHUB_|^ACTIONS_|^INPUT_|^AWS_|^AZURE_"
)


def command_environment(environ: Mapping[str, str], *, keep: Iterable[str] = ()) -> dict[str, str]:
    """The environment a docs check command runs with: PATH, HOME, locale and little else.

    `keep` adds variables by name (a build may need one), but a name that looks like a secret
    is dropped all the same.
    """
    wanted = _KEPT_ENVIRONMENT | set(keep)
    return {
        name: value
        for name, value in environ.items()
        if (name in wanted or name.startswith("LC_")) and not _SECRET_NAME.search(name)
    }


@dataclass(frozen=True)
class CommandResult:
    """How a docs check command ended: ok, or its exit code and its last lines of output."""

    command: str
    ok: bool
    exit_code: int | None  # None when it was stopped at the time limit
    timed_out: bool
    tail: str
    seconds: float
    timeout: float

    def feedback(self) -> str:
        """The failure as a message for the model (and a refusal reason), or '' when ok."""
        if self.ok:
            return ""
        if self.timed_out:
            head = (
                f"The docs check `{self.command}` did not finish within {self.timeout:g} s on "
                "the edited docs."
            )
        else:
            head = (
                f"The docs check `{self.command}` failed (exit {self.exit_code}) "
                "on the edited docs."
            )
        if not self.tail:
            return head + " It printed nothing."
        return (
            f"{head} Its last lines:\n```\n{self.tail}\n```\nChange the edit so the check passes."
        )


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_TAIL_BYTES = 64 * 1024
_LINE_CHARS = 300


def _tail(raw: bytes, max_lines: int) -> str:
    text = _ANSI.sub("", raw.decode("utf-8", errors="replace")).replace("\r\n", "\n")
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    kept = lines[-max_lines:] if max_lines > 0 else []
    return "\n".join(
        line if len(line) <= _LINE_CHARS else line[: _LINE_CHARS - 1] + "…" for line in kept
    )


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def run_check_command(
    command: str,
    *,
    cwd: Path,
    environ: Mapping[str, str],
    timeout: float = 300.0,
    keep_env: Iterable[str] = (),
    max_lines: int = 20,
) -> CommandResult:
    """Run a repository's docs check (`mkdocs build --strict`) in `cwd` through the shell.

    The command sees only `command_environment(environ)`, reads nothing on stdin, and is killed
    with everything it started when `timeout` seconds pass. Output goes to a file, so a chatty
    build never blocks on a full pipe; only its last `max_lines` lines are kept.
    """
    env = command_environment(environ, keep=keep_env)
    started = time.monotonic()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(
            command,
            shell=True,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a timeout kills its children
        )
        timed_out = False
        try:
            exit_code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out, exit_code = True, None
        finally:
            _kill_group(process)  # also ends anything it left running in the background
            process.wait()
        seconds = time.monotonic() - started
        size = output.seek(0, os.SEEK_END)
        output.seek(max(0, size - _TAIL_BYTES))
        raw = output.read()
    return CommandResult(
        command=command,
        ok=not timed_out and exit_code == 0,
        exit_code=exit_code,
        timed_out=timed_out,
        tail=_tail(raw, max_lines),
        seconds=seconds,
        timeout=timeout,
    )


# Installed trees a build uses as they are: linked into the scratch copy, never copied.
LINKED_DIRS = ("node_modules", ".venv", "venv")


def build_scratch(
    repo_root: Path,
    changed: Mapping[str, str],
    into: Path,
    *,
    linked: Sequence[str] = LINKED_DIRS,
) -> Path:
    """Copy the repository at `repo_root` into `into`, then write the changed files over it.

    `.git` is left out (the check must not see the token checkout stored there); folders named
    in `linked` are symlinked instead of copied. Changed paths are repository-relative and may
    not leave the copy.
    """
    repo_root = repo_root.resolve()
    skipped: list[tuple[Path, str]] = []

    def ignore(folder: str, names: list[str]) -> set[str]:
        dropped = {name for name in names if name == ".git"}
        for name in names:
            if name in linked and (Path(folder) / name).is_dir():
                skipped.append((Path(folder), name))
                dropped.add(name)
        return dropped

    shutil.copytree(repo_root, into, symlinks=True, ignore=ignore, dirs_exist_ok=True)
    root = into.resolve()
    for folder, name in skipped:
        (root / folder.relative_to(repo_root) / name).symlink_to(folder / name)
    for path, text in changed.items():
        target = root / normalise_path(path)
        parent = target.parent
        parent.mkdir(parents=True, exist_ok=True)
        if not parent.resolve().is_relative_to(root):
            raise ValueError(f"{path} leads outside the scratch copy; it cannot be written.")
        if target.is_symlink():
            target.unlink()
        target.write_text(text, encoding="utf-8", newline="")
    return root


@contextmanager
def scratch_copy(
    repo_root: Path, changed: Mapping[str, str], *, linked: Sequence[str] = LINKED_DIRS
) -> Iterator[Path]:
    """A temporary copy of the repository with the edit applied, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="pythia-check-") as folder:
        yield build_scratch(repo_root, changed, Path(folder) / "repo", linked=linked)
