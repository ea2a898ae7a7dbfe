"""What an edit breaks in a docs tree: Markdown structure, relative links and their anchors.

Only new problems count: a page's problems after the edit are compared with the same page's
problems before it, so a docs tree with old broken links can still take a good edit.
CommonMark never fails to parse, so "does not parse" is made concrete: a fenced code block left
open (the rest of the page becomes code), front matter that is no longer valid YAML, an HTML
comment left open (the rest of the page disappears). reStructuredText and other non-Markdown
pages get no structural checks; MDX pages get the Markdown ones except HTML comments.
Pages are read by `pages`; a repository's own build command is run by `checkcommand`.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

import yaml

from .checkcommand import (
    CommandResult,
    build_scratch,
    command_environment,
    run_check_command,
    scratch_copy,
)
from .pages import (
    MARKDOWN_SUFFIXES,
    LineRole,
    Page,
    PageLink,
    page_anchors,
    page_links,
    read_page,
)

__all__ = [
    "MARKDOWN_SUFFIXES",
    "CommandResult",
    "LineRole",
    "Page",
    "PageLink",
    "Problem",
    "build_scratch",
    "check_docs",
    "command_environment",
    "docs_feedback",
    "page_anchors",
    "page_links",
    "read_page",
    "run_check_command",
    "scratch_copy",
]


# ---------------------------------------------------------------- where a link leads


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class _Target:
    """Where a relative link leads: a file (or folder) and an optional fragment."""

    path: str
    fragment: str


def _split_target(page_path: str, target: str) -> _Target | None:
    """The repository path and fragment a link means, or None when it cannot be checked here.

    Links with a scheme, protocol-relative and site-absolute links, templated links and links
    that leave the tree are left alone: only the built site could tell whether they work.
    """
    target = target.strip()
    if not target or _SCHEME.match(target) or target.startswith("/"):
        return None
    if "{{" in target or "{%" in target or "${" in target:
        return None
    location, _, fragment = target.partition("#")
    location = unquote(location.split("?", 1)[0])
    fragment = unquote(fragment)
    if not location:
        return _Target(page_path, fragment)
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(page_path), location))
    if joined == ".." or joined.startswith("../"):
        return None
    return _Target(joined, fragment)


class _Tree:
    """The docs tree as an edit leaves it: the edited texts over the existing files."""

    def __init__(
        self,
        texts: Mapping[str, str],
        *,
        read: Callable[[str], str | None],
        paths: Iterable[str],
    ) -> None:
        self._texts = texts
        self._read = read
        self.files = set(paths) | set(texts)
        self.dirs = {"."}
        for path in self.files:
            parent = posixpath.dirname(path)
            while parent and parent not in self.dirs:
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)
        self._anchors: dict[str, set[str] | None] = {}

    def text(self, path: str) -> str | None:
        return self._texts[path] if path in self._texts else self._read(path)

    def find(self, path: str) -> str | None:
        """The file (or folder) a link path names, trying the forms static site tools accept."""
        path = path.rstrip("/") or "."
        for candidate in (path, f"{path}.md", f"{path}.mdx"):
            if candidate in self.files:
                return candidate
        if path in self.dirs:
            for name in ("index.md", "README.md", "index.mdx", "_index.md"):
                candidate = posixpath.join(path, name) if path != "." else name
                if candidate in self.files:
                    return candidate
            return path
        return None

    def anchors(self, path: str) -> set[str] | None:
        """The anchors of a Markdown file, or None when they cannot be known."""
        if path not in self._anchors:
            text = self.text(path) if path.lower().endswith(MARKDOWN_SUFFIXES) else None
            self._anchors[path] = None if text is None else page_anchors(read_page(text, path=path))
        return self._anchors[path]


# ---------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """Something the edit broke in the docs, with a message written for the model."""

    path: str
    line: int  # 1-based; 0 when the problem belongs to the whole page
    kind: str  # unclosed-fence, front-matter, unclosed-comment, broken-link, missing-anchor...
    message: str
    # What makes two problems "the same" before and after an edit (line numbers move).
    key: str = field(default="", compare=False, repr=False)


def _structure_problems(page: Page) -> list[Problem]:
    problems: list[Problem] = []
    if not page.is_markdown:
        return problems
    for start in page.unclosed_fences:
        fence = page.lines[start].strip().lstrip(">").strip()
        markup = fence[: len(fence) - len(fence.lstrip(fence[:1]))] if fence else "```"
        problems.append(
            Problem(
                page.path,
                start + 1,
                "unclosed-fence",
                f"The code block opened with {markup} at line {start + 1} of {page.path} is "
                f"never closed, so the rest of the page renders as code; close it with a "
                f"{markup} line.",
                key="unclosed-fence",
            )
        )
    if page.front_matter_end is not None:
        block = "\n".join(page.lines[1 : page.front_matter_end])
        reason = ""
        try:
            data = yaml.safe_load(block)
        except yaml.YAMLError as error:
            reason = str(error).splitlines()[0] if str(error) else "it does not parse"
        else:
            if data is not None and not isinstance(data, dict):
                reason = "it is not a mapping of keys to values"
        if reason:
            problems.append(
                Problem(
                    page.path,
                    1,
                    "front-matter",
                    f"The front matter of {page.path} (lines 1-{page.front_matter_end + 1}) is "
                    f"no longer valid YAML ({reason}); leave the front matter as it was.",
                    key="front-matter",
                )
            )
    if not page.path.lower().endswith(".mdx"):
        problems.extend(_comment_problems(page))
    return problems


def _comment_problems(page: Page) -> list[Problem]:
    """An HTML comment opened outside code and never closed hides the rest of the page."""
    open_at: int | None = None
    for number, (line, role) in enumerate(zip(page.lines, page.roles, strict=True)):
        if role.kind in ("code", "markup", "front-matter"):
            continue
        position = 0
        while True:
            if open_at is None:
                found = line.find("<!--", position)
                if found < 0:
                    break
                open_at, position = number, found + 4
            else:
                found = line.find("-->", position)
                if found < 0:
                    break
                open_at, position = None, found + 3
    if open_at is None:
        return []
    return [
        Problem(
            page.path,
            open_at + 1,
            "unclosed-comment",
            f"The HTML comment opened at line {open_at + 1} of {page.path} is never closed "
            "with -->, so the rest of the page is hidden; close it or remove it.",
            key="unclosed-comment",
        )
    ]


def _link_problems(page: Page, tree: _Tree) -> list[Problem]:
    problems: list[Problem] = []
    if not page.is_markdown:
        return problems
    for link in page_links(page):
        target = _split_target(page.path, link.target)
        if target is None:
            continue
        line = link.line + 1
        found = tree.find(target.path)
        if found is None:
            problems.append(
                Problem(
                    page.path,
                    line,
                    "broken-link",
                    f"The link `{link.target}` in {page.path} (line {line}) points to "
                    f"{target.path}, which does not exist; link to an existing page or "
                    "remove the link.",
                    key=f"broken-link:{link.target}",
                )
            )
            continue
        if not target.fragment:
            continue
        anchors = tree.anchors(found)
        if anchors is None or target.fragment.lower() in anchors:
            continue
        close = difflib.get_close_matches(target.fragment.lower(), sorted(anchors), n=3)
        hint = f" Did you mean {', '.join('#' + a for a in close)}?" if close else ""
        where = "this page" if found == page.path else found
        problems.append(
            Problem(
                page.path,
                line,
                "missing-anchor",
                f"The link `{link.target}` in {page.path} (line {line}) points to "
                f"#{target.fragment}, but {where} has no heading with that anchor; link to an "
                f"existing heading or drop the #part.{hint}",
                key=f"missing-anchor:{link.target}",
            )
        )
    return problems


def _problems(page: Page, tree: _Tree) -> list[Problem]:
    return _structure_problems(page) + _link_problems(page, tree)


def check_docs(
    before: Mapping[str, str],
    after: Mapping[str, str],
    *,
    read: Callable[[str], str | None],
    paths: Iterable[str],
) -> list[Problem]:
    """The problems an edit adds to the docs tree, in page order.

    `before` and `after` map the edited paths to their text (a path missing from `before` is a
    new page); `read` returns any other file's text (None when it cannot); `paths` lists every
    file that exists before the edit, with the same root as the edited paths. Pass every file of
    the repository, not only the pages, so links to images and downloads resolve.
    """
    existing = set(paths)
    old_tree = _Tree(before, read=read, paths=existing)
    new_tree = _Tree(after, read=read, paths=existing)
    problems: list[Problem] = []
    for path in sorted(after):
        old_text = before.get(path)
        if old_text == after[path]:
            continue
        page = read_page(after[path], path=path)
        found = _problems(page, new_tree)
        known: Counter[str] = Counter()
        if old_text is not None:
            old_page = read_page(old_text, path=path)
            known.update(problem.key for problem in _problems(old_page, old_tree))
            if old_page.front_matter_end is not None and page.front_matter_end is None:
                found.insert(0, _front_matter_removed(path))
        for problem in found:
            if known[problem.key] > 0:
                known[problem.key] -= 1
            else:
                problems.append(problem)
    problems.extend(_removed_anchor_problems(before, after, old_tree, new_tree))
    return problems


def _front_matter_removed(path: str) -> Problem:
    return Problem(
        path,
        1,
        "front-matter",
        f"The front matter of {path} is no longer closed by a '---' line, so it renders as "
        "text; leave the front matter as it was.",
        key="front-matter-removed",
    )


def _removed_anchor_problems(
    before: Mapping[str, str], after: Mapping[str, str], old_tree: _Tree, new_tree: _Tree
) -> list[Problem]:
    """Links from unedited pages to headings the edit renamed or removed."""
    removed: dict[str, set[str]] = {}
    for path, old_text in before.items():
        if path not in after or after[path] == old_text:
            continue
        old_anchors, new_anchors = old_tree.anchors(path), new_tree.anchors(path)
        if old_anchors is not None and new_anchors is not None and old_anchors - new_anchors:
            removed[path] = old_anchors - new_anchors
    if not removed:
        return []
    wanted = {"#" + anchor for anchors in removed.values() for anchor in anchors}
    problems: list[Problem] = []
    for other in sorted(new_tree.files - set(after)):
        if not other.lower().endswith(MARKDOWN_SUFFIXES):
            continue
        text = new_tree.text(other)
        if text is None or not any(anchor in text.lower() for anchor in wanted):
            continue
        for link in page_links(read_page(text, path=other)):
            target = _split_target(other, link.target)
            if target is None or not target.fragment:
                continue
            destination = new_tree.find(target.path)
            gone = removed.get(destination or "", set())
            if target.fragment.lower() in gone:
                problems.append(
                    Problem(
                        other,
                        link.line + 1,
                        "removed-anchor",
                        f"The edit removes the heading anchor #{target.fragment} from "
                        f"{destination}, but {other} (line {link.line + 1}) links to it; keep "
                        "that heading's text as it was.",
                        key=f"removed-anchor:{link.target}",
                    )
                )
    return problems


def docs_feedback(problems: Sequence[Problem]) -> str:
    """One message for the model listing what its edit broke, or '' when nothing."""
    if not problems:
        return ""
    lines = ["Your edit breaks the docs:"]
    lines.extend(f"- {problem.message}" for problem in problems)
    lines.append("Send the whole proposal again with these fixed.")
    return "\n".join(lines)
