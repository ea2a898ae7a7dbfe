"""Changed files as a git-style unified diff, and how many lines a diff changes."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping


def unified_diff(before: Mapping[str, str], after: Mapping[str, str]) -> str:
    """A git-style diff from `before` to `after` (files missing from `before` are new)."""
    parts = []
    for path in sorted(after):
        old = before.get(path)
        new = after[path]
        if old == new:
            continue
        old_lines = old.splitlines(keepends=True) if old is not None else []
        new_lines = new.splitlines(keepends=True)
        header = [f"diff --git a/{path} b/{path}\n"]
        if old is None:
            header.append("new file mode 100644\n")
        body = difflib.unified_diff(
            old_lines,
            new_lines,
            fromfile=f"a/{path}" if old is not None else "/dev/null",
            tofile=f"b/{path}",
        )
        parts.append("".join(header) + "".join(_mark_missing_newlines(body)))
    return "".join(parts)


def _mark_missing_newlines(lines: Iterable[str]) -> list[str]:
    """git needs the marker after a last line without newline; difflib does not write it."""
    return [
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    ]


_HUNK = re.compile(r"^@@ -\d+(?:,(\d+))? \+\d+(?:,(\d+))? @@")


def changed_lines(diff: str) -> int:
    """How many lines a unified diff adds plus how many it removes."""
    return _changed(diff)[0]


def changed_chars(diff: str) -> int:
    """How many characters the lines a unified diff adds or removes hold."""
    return _changed(diff)[1]


def _changed(diff: str) -> tuple[int, int]:
    count = chars = 0
    old_left = new_left = 0
    for line in diff.splitlines():
        if old_left > 0 or new_left > 0:
            if line.startswith("+"):
                new_left -= 1
                count += 1
                chars += len(line) - 1
            elif line.startswith("-"):
                old_left -= 1
                count += 1
                chars += len(line) - 1
            elif line.startswith("\\"):
                continue
            else:
                old_left -= 1
                new_left -= 1
            continue
        hunk = _HUNK.match(line)
        if hunk:
            old_left = int(hunk.group(1)) if hunk.group(1) is not None else 1
            new_left = int(hunk.group(2)) if hunk.group(2) is not None else 1
    return count, chars
