"""Applying a proposal's search/replace edits, all or nothing, to the paths a policy allows."""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .config import Docs
from .diffs import changed_lines, unified_diff
from .globs import glob_match
from .matching import locate, not_found_message
from .models import Edit

# unified_diff and changed_lines are re-exported for callers that import them from here.
__all__ = [
    "DOC_EXTENSIONS",
    "AmbiguousSearch",
    "EditError",
    "FileCreationRefused",
    "OverlappingEdits",
    "PathPolicy",
    "PathRefused",
    "SearchNotFound",
    "apply_edits",
    "changed_lines",
    "hard_refusal",
    "normalise_path",
    "unified_diff",
]

DOC_EXTENSIONS = (".md", ".mdx", ".markdown", ".rst", ".txt")


class EditError(Exception):
    """An edit could not be applied; the message is written for the model that proposed it."""

    def __init__(self, message: str, *, path: str = "", index: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.index = index


class PathRefused(EditError):
    """The edit targets a file the bot may never change."""


class SearchNotFound(EditError):
    """The SEARCH text is not in the file."""


class AmbiguousSearch(EditError):
    """The SEARCH text occurs more than once."""


class OverlappingEdits(EditError):
    """Two edits of one proposal touch the same lines."""


class FileCreationRefused(EditError):
    """An empty SEARCH asked to create a file where that is not allowed."""


# ---------------------------------------------------------------- paths


def normalise_path(path: str) -> str:
    """A POSIX path relative to the repository, or PathRefused saying why it cannot be one."""
    raw = path.strip().replace("\\", "/")
    if not raw or any(ord(char) < 32 for char in raw):
        raise PathRefused(f"'{path}' is not a valid file path; give a path like docs/page.md.")
    if raw.startswith("/") or re.match(r"^[A-Za-z]:", raw) or raw.startswith("~"):
        raise PathRefused(
            f"{raw} is an absolute path; give the path relative to the repository, "
            "as in the files you were shown."
        )
    if ".." in raw.split("/"):
        raise PathRefused(
            f"{raw} leaves the repository ('..'); only files inside it can be edited."
        )
    return posixpath.normpath(raw)


def hard_refusal(path: str) -> str | None:
    """Why no policy may ever allow editing `path` (already normalised), or None."""
    if path.lower() == ".github" or path.lower().startswith(".github/"):
        return f"{path} is under .github/, which this bot never changes; edit only docs pages."
    if not path.lower().endswith(DOC_EXTENSIONS):
        kinds = ", ".join(DOC_EXTENSIONS)
        return f"{path} is not a documentation file; only {kinds} files can be changed."
    return None


def _under(path: str, folder: str) -> bool:
    folder = posixpath.normpath(folder.strip().replace("\\", "/")).strip("/")
    return folder in ("", ".") or path.startswith(folder + "/")


@dataclass(frozen=True)
class PathPolicy:
    """Which repository paths the bot may edit or create, from the `docs` section of the config."""

    root: str = "."
    include: tuple[str, ...] = ("**/*.md", "**/*.mdx")
    exclude: tuple[str, ...] = ()
    new_file_dirs: tuple[str, ...] = field(default=())

    @classmethod
    def from_config(cls, docs: Docs) -> PathPolicy:
        return cls(
            root=docs.root,
            include=tuple(docs.include),
            exclude=tuple(docs.exclude),
            new_file_dirs=tuple(docs.new_file_dirs),
        )

    @property
    def root_prefix(self) -> str:
        """The root as a path prefix: '' for the repository root, else 'docs/'."""
        root = posixpath.normpath(self.root.strip().replace("\\", "/")).strip("/")
        return "" if root in ("", ".") else root + "/"

    @property
    def creation_dirs(self) -> tuple[str, ...]:
        """The folders, relative to the repository, where new pages may be created."""
        prefix = self.root_prefix
        dirs = []
        for folder in self.new_file_dirs:
            clean = posixpath.normpath(folder.strip().replace("\\", "/")).strip("/")
            dirs.append(prefix.rstrip("/") if clean in ("", ".") else prefix + clean)
        return tuple(dirs)

    def refusal(self, path: str) -> str | None:
        """Why `path` (relative to the repository) may not be edited, or None if it may."""
        try:
            clean = normalise_path(path)
        except PathRefused as error:
            return str(error)
        hard = hard_refusal(clean)
        if hard:
            return hard
        prefix = self.root_prefix
        if prefix and not clean.startswith(prefix):
            return f"{clean} is outside the docs folder {prefix}; edit only pages under it."
        relative = clean[len(prefix) :]
        if not any(glob_match(pattern, relative) for pattern in self.include):
            return f"{clean} is not one of the docs files this bot may edit."
        if any(glob_match(pattern, relative) for pattern in self.exclude):
            return f"{clean} is excluded from the docs this bot may edit."
        return None

    def allows(self, path: str) -> bool:
        return self.refusal(path) is None


# ---------------------------------------------------------------- text helpers


@dataclass
class _File:
    """A file as lines without endings, and how to write it back."""

    lines: list[str]
    crlf: bool
    final_newline: bool

    @classmethod
    def parse(cls, text: str) -> _File:
        crlf = text.count("\r\n") * 2 > text.count("\n")
        body = text.replace("\r\n", "\n")
        final_newline = body.endswith("\n")
        lines = body[:-1].split("\n") if final_newline else body.split("\n")
        return cls(lines=[] if body == "" else lines, crlf=crlf, final_newline=final_newline)

    def render(self) -> str:
        text = "\n".join(self.lines) + ("\n" if self.final_newline and self.lines else "")
        return text.replace("\n", "\r\n") if self.crlf else text


def _block_lines(text: str) -> list[str]:
    """The lines of a SEARCH or REPLACE block; one final newline is not an extra empty line."""
    body = text.replace("\r\n", "\n")
    if body.endswith("\n"):
        body = body[:-1]
    return body.split("\n") if body else []


def _numbered(message: str, index: int, total: int) -> str:
    if total == 1:
        return message
    return (
        f"Edit {index + 1} of {total}: {message} "
        "None of the edits were applied; send them all again."
    )


# ---------------------------------------------------------------- applying


def apply_edits(
    texts: Mapping[str, str],
    edits: Sequence[Edit],
    *,
    allowed: Callable[[str], bool] | PathPolicy,
    new_file_dirs: Sequence[str] | None = None,
) -> dict[str, str]:
    """Apply every edit to a scratch copy of `texts` and return the files that changed, or raise.

    `texts` maps repository-relative paths to the current text of every file an edit may
    touch; a path missing from it counts as not existing. `new_file_dirs` are folders relative
    to the repository where an empty SEARCH may create a page; left out, they come from the
    policy. Nothing is returned unless every edit applied (all or nothing).
    """
    creation_dirs: Sequence[str]
    if new_file_dirs is not None:
        creation_dirs = new_file_dirs
    elif isinstance(allowed, PathPolicy):
        creation_dirs = allowed.creation_dirs
    else:
        creation_dirs = ()
    originals = {normalise_path(path): text for path, text in texts.items()}
    files: dict[str, _File] = {}
    created: set[str] = set()
    # Line ranges each earlier edit wrote, per file, to tell overlapping edits apart.
    written: dict[str, list[tuple[int, int]]] = {}
    total = len(edits)
    for index, edit in enumerate(edits):
        try:
            path = _authorise(edit.path, allowed)
            if not edit.search.strip():
                _create(path, edit, originals=originals, files=files, dirs=creation_dirs)
                created.add(path)
                written[path] = [(0, len(files[path].lines))]
                continue
            _replace(path, edit, originals=originals, files=files, written=written)
        except EditError as error:
            raise type(error)(
                _numbered(str(error), index, total), path=error.path or edit.path, index=index
            ) from None
    changed = {}
    for path, file in files.items():
        text = file.render()
        if path in created or text != originals.get(path):
            changed[path] = text
    return changed


def _authorise(raw_path: str, allowed: Callable[[str], bool] | PathPolicy) -> str:
    path = normalise_path(raw_path)
    reason = hard_refusal(path)
    if reason is None:
        if isinstance(allowed, PathPolicy):
            reason = allowed.refusal(path)
        elif not allowed(path):
            reason = f"{path} is not one of the docs files this bot may edit."
    if reason:
        raise PathRefused(reason, path=path)
    return path


def _create(
    path: str,
    edit: Edit,
    *,
    originals: Mapping[str, str],
    files: dict[str, _File],
    dirs: Sequence[str],
) -> None:
    if path in originals or path in files:
        raise FileCreationRefused(
            f"{path} already exists, so an empty SEARCH cannot create it; put the exact lines "
            "to change in SEARCH.",
            path=path,
        )
    if not any(_under(path, folder) for folder in dirs):
        where = ", ".join(f"{folder}/" for folder in dirs)
        hint = f"new pages may only go under {where}" if where else "no new pages may be created"
        raise FileCreationRefused(
            f"{path} cannot be created: {hint}; edit an existing page instead.", path=path
        )
    lines = _block_lines(edit.replace)
    if not "".join(lines).strip():
        raise FileCreationRefused(
            f"The edit creating {path} has an empty REPLACE; give the new page's full text.",
            path=path,
        )
    files[path] = _File(lines=lines, crlf=False, final_newline=True)


def _replace(
    path: str,
    edit: Edit,
    *,
    originals: Mapping[str, str],
    files: dict[str, _File],
    written: dict[str, list[tuple[int, int]]],
) -> None:
    if path not in files:
        if path not in originals:
            known = difflib.get_close_matches(path, list(originals), n=3)
            hint = f" Did you mean {', '.join(known)}?" if known else ""
            raise SearchNotFound(
                f"{path} is not one of the files you were given, so it cannot be edited.{hint}",
                path=path,
            )
        files[path] = _File.parse(originals[path])
    file = files[path]
    search = _block_lines(edit.search)
    replace = _block_lines(edit.replace)
    matches = locate(file.lines, search, replace)
    regions = written.setdefault(path, [])
    if not matches:
        if regions and locate(_File.parse(originals.get(path, "")).lines, search, replace):
            raise OverlappingEdits(
                f"This SEARCH block matches lines of {path} that an earlier edit in this "
                "proposal already changed; merge the overlapping edits into one.",
                path=path,
            )
        raise SearchNotFound(not_found_message(path, file.lines, search), path=path)
    if len(matches) > 1:
        raise AmbiguousSearch(
            f"SEARCH block matches {len(matches)} places in {path}, but it must match exactly "
            "one; add a few more lines of the surrounding text so it is unique.",
            path=path,
        )
    match = matches[0]
    end = match.start + match.length
    if any(_overlaps(match.start, end, start, stop) for start, stop in regions):
        raise OverlappingEdits(
            f"This SEARCH block overlaps lines of {path} that an earlier edit in this proposal "
            "changed; merge the overlapping edits into one.",
            path=path,
        )
    if list(match.replacement) == file.lines[match.start : end]:
        raise EditError(
            f"The edit to {path} changes nothing: REPLACE is the same as SEARCH.", path=path
        )
    file.lines[match.start : end] = match.replacement
    delta = len(match.replacement) - match.length
    written[path] = [
        (start + delta, stop + delta) if start >= end else (start, stop) for start, stop in regions
    ] + [(match.start, match.start + len(match.replacement))]


def _overlaps(start: int, end: int, other_start: int, other_end: int) -> bool:
    if other_start == other_end:  # an earlier deletion left a point; touching it is no overlap
        return start < other_start < end
    return start < other_end and other_start < end
