"""Reading a docs page: what each source line is, and a Markdown page's links and anchors.

A line is prose, a heading, code, markup or front matter; a link is a target as written, with
its line; the anchors are the `#fragments` a link may use: heading slugs as GitHub and mkdocs
make them, and explicit ids.

Markdown and MDX go through markdown-it, with mkdocs-material containers' bodies dedented first;
reStructuredText is read by its literal blocks; any other page is prose.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from markdown_it import MarkdownIt
from markdown_it.token import Token

from .chunking import Slugger, heading_text

__all__ = [
    "MARKDOWN_SUFFIXES",
    "RST_SUFFIXES",
    "LineRole",
    "Page",
    "PageLink",
    "page_anchors",
    "page_links",
    "read_page",
]

MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdx")
RST_SUFFIXES = (".rst",)

_PARSER = MarkdownIt("commonmark").enable("table")


# ---------------------------------------------------------------- reading a page


@dataclass(frozen=True)
class LineRole:
    """What one source line of a page is.

    `kind` is one of "blank", "prose", "heading", "html", "code" (inside a code block),
    "markup" (a fence, an RST underline or directive: structure, no content) and
    "front-matter". `language` is the code block's info string's first word.
    """

    kind: str
    language: str = ""


@dataclass(frozen=True)
class Page:
    """A docs page read once: its lines, what each line is, and its Markdown tokens."""

    path: str
    lines: tuple[str, ...]
    roles: tuple[LineRole, ...]
    tokens: tuple[Token, ...] = ()
    front_matter_end: int | None = None  # index of the closing '---' line
    unclosed_fences: tuple[int, ...] = ()  # index of each fence line that is never closed

    @property
    def is_markdown(self) -> bool:
        return self.path.lower().endswith(MARKDOWN_SUFFIXES)


_BLANK = LineRole("blank")
_PROSE = LineRole("prose")

# mkdocs-material admonitions (`!!! note`), collapsible blocks (`??? tip`, `???+ tip`) and
# content tabs (`=== "Linux"`) hold 4-space indented Markdown, which CommonMark alone reads as
# an indented code block (https://squidfunk.github.io/mkdocs-material/reference/admonitions/).
_CONTAINER = re.compile(r"^\s*(?:(?:!!!|\?\?\?\+?)\s+[\w-]+|===\+?\s+[\"'])")


def _open_containers(lines: Sequence[str]) -> list[str]:
    """The lines with mkdocs containers' bodies dedented, so they parse as the Markdown they are.

    Line numbers are kept: only leading spaces are removed.
    """
    result: list[str] = []
    stack: list[int] = []  # the content indent of each open container, in the original text
    for line in lines:
        if not line.strip():
            result.append(line)
            continue
        indent = len(line) - len(line.lstrip(" "))
        while stack and indent < stack[-1]:
            stack.pop()
        result.append(line[4 * len(stack) :] if stack else line)
        if _CONTAINER.match(line):
            stack.append(indent + 4)
    return result


def _front_matter_end(lines: Sequence[str]) -> int | None:
    """The index of the line closing a leading `---` YAML block, or None when there is none."""
    if not lines or lines[0].rstrip() != "---":
        return None
    for number, line in enumerate(lines[1:], start=1):
        if line.rstrip() in ("---", "..."):
            return number
    return None


def _fence_closed(token: Token, lines: Sequence[str]) -> bool:
    assert token.map is not None
    start, end = token.map
    if end - start < 2 or end > len(lines):
        return False
    last = re.sub(r"^[\s>]*", "", lines[end - 1])
    char, length = token.markup[0], len(token.markup)
    return re.fullmatch(rf"{re.escape(char)}{{{length},}}\s*", last) is not None


def read_page(text: str, *, path: str) -> Page:
    """Read a page: Markdown (and MDX) through markdown-it, RST by its literal blocks."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").removeprefix("\ufeff")
    lines = text.split("\n")
    lower = path.lower()
    if lower.endswith(RST_SUFFIXES):
        return Page(path, tuple(lines), tuple(_rst_roles(lines)))
    if not lower.endswith(MARKDOWN_SUFFIXES):
        return Page(path, tuple(lines), tuple(_BLANK if not x.strip() else _PROSE for x in lines))
    front_end = _front_matter_end(lines)
    body = list(lines)
    if front_end is not None:
        body[: front_end + 1] = [""] * (front_end + 1)
    body = _open_containers(body)
    tokens = _PARSER.parse("\n".join(body))
    roles = [_BLANK if not line.strip() else _PROSE for line in lines]
    unclosed: list[int] = []
    for token in tokens:
        if token.map is None:
            continue
        start, end = token.map
        if token.type == "fence":
            language = token.info.split()[0].strip("{}.") if token.info.strip() else ""
            closed = _fence_closed(token, body)
            if not closed:
                unclosed.append(start)
            roles[start] = LineRole("markup", language)
            for number in range(start + 1, end - 1 if closed else end):
                roles[number] = LineRole("code", language)
            if closed:
                roles[end - 1] = LineRole("markup", language)
        elif token.type == "code_block":
            for number in range(start, end):
                if lines[number].strip():
                    roles[number] = LineRole("code")
        elif token.type == "heading_open":
            for number in range(start, end):
                roles[number] = LineRole("heading")
        elif token.type == "html_block":
            for number in range(start, end):
                if lines[number].strip():
                    roles[number] = LineRole("html")
    if front_end is not None:
        for number in range(front_end + 1):
            roles[number] = LineRole("front-matter")
    return Page(path, tuple(lines), tuple(roles), tuple(tokens), front_end, tuple(unclosed))


_RST_UNDERLINE = re.compile(r"""([=\-~^"'`#*+<>:._])\1{2,}""")
_RST_DIRECTIVE = re.compile(r"^\.\.\s+([\w:-]+)::\s*(.*)$")
_RST_CODE_DIRECTIVES = frozenset(
    {"code-block", "code", "sourcecode", "highlight", "literalinclude"}
)
_RST_OPTION = re.compile(r"^\s+:[\w-]+:(?:\s|$)")


def _rst_roles(lines: Sequence[str]) -> list[LineRole]:
    """Roles of RST lines: literal blocks (after `::` or a code directive) are code."""
    roles: list[LineRole] = []
    opener: int | None = None  # indent of the line that announced a literal block
    inside: int | None = None  # indent of the line whose literal block we are in
    language = ""
    for line in lines:
        if not line.strip():
            roles.append(_BLANK)
            continue
        indent = len(line) - len(line.lstrip())
        if inside is not None and indent > inside:
            roles.append(
                LineRole("markup") if _RST_OPTION.match(line) else LineRole("code", language)
            )
            continue
        inside = None
        if opener is not None and indent > opener:
            inside, opener = opener, None
            roles.append(
                LineRole("markup") if _RST_OPTION.match(line) else LineRole("code", language)
            )
            continue
        opener = None
        stripped = line.strip()
        directive = _RST_DIRECTIVE.match(stripped)
        if _RST_UNDERLINE.fullmatch(stripped):
            roles.append(LineRole("markup"))
        elif directive and directive.group(1) in _RST_CODE_DIRECTIVES:
            opener, language = indent, directive.group(2).strip()
            roles.append(LineRole("markup"))
        elif stripped.endswith("::"):
            opener, language = indent, ""
            roles.append(_PROSE)
        else:
            roles.append(_PROSE)
    return roles


# ---------------------------------------------------------------- links and anchors


@dataclass(frozen=True)
class PageLink:
    """A link or image target as written on a page, with its 0-based line."""

    target: str
    line: int


_HTML_TARGET = re.compile(r"""(?i)\b(?:href|src)\s*=\s*["']([^"']+)["']""")


def _line_of(target: str, lines: Sequence[str], start: int, end: int) -> int:
    for candidate in (target, unquote(target)):
        for number in range(start, min(end, len(lines))):
            if candidate in lines[number]:
                return number
    return start


def page_links(page: Page) -> list[PageLink]:
    """Every link and image target of a Markdown page (Markdown syntax and raw HTML)."""
    found: list[PageLink] = []
    for token in page.tokens:
        if token.map is None:
            continue
        start, end = token.map
        if token.type == "html_block":
            found.extend(
                PageLink(match.group(1), _line_of(match.group(1), page.lines, start, end))
                for match in _HTML_TARGET.finditer(token.content)
            )
            continue
        if token.type != "inline":
            continue
        for child in token.children or []:
            targets: list[str] = []
            if child.type == "link_open":
                targets = [str(child.attrs.get("href", ""))]
            elif child.type == "image":
                targets = [str(child.attrs.get("src", ""))]
            elif child.type == "html_inline":
                targets = [match.group(1) for match in _HTML_TARGET.finditer(child.content)]
            found.extend(
                PageLink(target, _line_of(target, page.lines, start, end))
                for target in targets
                if target
            )
    return found


def _toc_slug(text: str, *, ascii_only: bool) -> str:
    """Python-Markdown's toc slug (mkdocs' default): word characters, '-' for spaces."""
    value = unicodedata.normalize("NFKD", text)
    if ascii_only:
        value = value.encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


_ATTR_LIST = re.compile(r"\s*\{:?\s*([^}]*)\}\s*$")
_EXPLICIT_ID = re.compile(r"\{[^}\n]*#([\w:.-]+)[^}\n]*\}")
_HTML_ID = re.compile(r"""(?i)\b(?:id|name)\s*=\s*["']([^"']+)["']""")


def page_anchors(page: Page) -> set[str]:
    """Every `#fragment` a Markdown page answers to, lower case.

    Heading slugs are given as GitHub makes them and as Python-Markdown (mkdocs) does, with
    each one's suffix for repeated headings; explicit `{#id}` attributes and HTML `id`/`name`
    attributes count too. Accepting any of them keeps a link that works on one renderer from
    being called broken.
    """
    anchors: set[str] = set()
    github = Slugger()
    seen: Counter[str] = Counter()
    for index, token in enumerate(page.tokens):
        if token.type != "heading_open" or index + 1 >= len(page.tokens):
            continue
        text = heading_text(page.tokens[index + 1])
        attributes = _ATTR_LIST.search(text)
        if attributes:
            anchors.update(re.findall(r"#([\w:.-]+)", attributes.group(1)))
            text = text[: attributes.start()]
        anchors.add(github.slug(text))
        for ascii_only in (True, False):
            slug = _toc_slug(text, ascii_only=ascii_only)
            anchors.add(f"{slug}_{seen[slug]}" if seen[slug] else slug)
        seen[_toc_slug(text, ascii_only=True)] += 1
    body = "\n".join(page.lines)
    anchors.update(_EXPLICIT_ID.findall(body))
    anchors.update(_HTML_ID.findall(body))
    return {anchor.lower() for anchor in anchors}
