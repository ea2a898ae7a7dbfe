"""Splitting a markdown page into heading sections (the index's chunks) with markdown-it-py."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import yaml
from markdown_it import MarkdownIt
from markdown_it.token import Token

from .models import Chunk
from .usage import estimate_tokens

# Bump whenever the chunks produced for the same file change: the index re-chunks every file.
# 2: the page title joins the embedded context when the heading path does not start with it.
CHUNKER_VERSION = "2"

# Token counts are estimated as characters / 4 (the usual rule of thumb for English prose
# with BPE tokenizers); no tokenizer is needed and the estimate is stable across models.
MAX_TOKENS = 400
MIN_TOKENS = 200

_PARSER = MarkdownIt("commonmark").enable("table")


@dataclass(frozen=True)
class _Block:
    """A run of source lines that must stay together (a paragraph, a whole code fence...)."""

    start: int
    end: int
    kind: str


@dataclass(frozen=True)
class _Section:
    level: int
    path: tuple[str, ...]
    anchor: str
    heading_lines: tuple[int, int] | None
    blocks: tuple[_Block, ...]


def github_slug(text: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation dropped, spaces to '-'.

    Follows github-slugger: letters, marks, digits, '-' and '_' are kept (any script),
    every other character is dropped, and each space becomes one '-'.
    """
    kept = []
    for char in text.lower():
        if char == " ":
            kept.append("-")
        elif char in "-_" or unicodedata.category(char)[0] in "LMN":
            kept.append(char)
    return "".join(kept)


class Slugger:
    """Unique anchors within one page: repeated slugs get -1, -2... as on GitHub."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def slug(self, text: str) -> str:
        base = github_slug(text)
        result = base
        while result in self._seen:
            self._seen[base] += 1
            result = f"{base}-{self._seen[base]}"
        self._seen[result] = 0
        return result


def split_front_matter(text: str) -> tuple[dict[str, object], str]:
    """Separate a leading YAML front matter block (between '---' lines) from the body.

    Front matter is a convention of static site generators, not markdown, so markdown-it
    would read it as a rule and a setext heading. Unparseable YAML is still skipped.
    """
    lines = text.split("\n")
    if not lines or lines[0].rstrip() != "---":
        return {}, text
    for number, line in enumerate(lines[1:], start=1):
        if line.rstrip() in ("---", "..."):
            try:
                data = yaml.safe_load("\n".join(lines[1:number]))
            except yaml.YAMLError:
                data = None
            body = "\n".join(lines[number + 1 :])
            return (data if isinstance(data, dict) else {}), body
    return {}, text


def heading_text(inline: Token) -> str:
    """The plain text of a heading's inline token (code, emphasis and links unwrapped)."""
    parts = []
    for child in inline.children or []:
        if child.type in ("text", "code_inline", "image"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append(" ")
    return " ".join("".join(parts).split())


def _is_mdx_module_line(source: str) -> bool:
    return all(line.startswith(("import ", "export ")) for line in source.splitlines() if line)


def _blocks_and_headings(
    tokens: Sequence[Token], lines: Sequence[str], *, mdx: bool
) -> list[tuple[str, _Block, Token | None]]:
    """Top-level blocks in order; headings carry their inline token."""
    result: list[tuple[str, _Block, Token | None]] = []
    for index, token in enumerate(tokens):
        if token.level != 0 or token.nesting == -1 or token.map is None:
            continue
        block = _Block(token.map[0], token.map[1], token.type)
        if token.type == "heading_open":
            heading = _Block(token.map[0], token.map[1], token.tag)
            result.append(("heading", heading, tokens[index + 1]))
            continue
        source = "\n".join(lines[block.start : block.end])
        if mdx and token.type == "paragraph_open" and _is_mdx_module_line(source):
            continue
        if token.type in ("bullet_list_open", "ordered_list_open"):
            # A long list may be split between items, never inside one.
            items = [
                _Block(item.map[0], item.map[1], "list_item")
                for item in _children_at(tokens, index, level=1, kind="list_item_open")
                if item.map is not None
            ]
            result.extend(("block", item, None) for item in items)
            continue
        result.append(("block", block, None))
    return result


def _children_at(tokens: Sequence[Token], start: int, *, level: int, kind: str) -> list[Token]:
    found = []
    for token in tokens[start + 1 :]:
        if token.level < level:
            break
        if token.level == level and token.type == kind and token.map is not None:
            found.append(token)
    return found


def _sections(body: str, *, title: str, mdx: bool) -> tuple[list[str], list[_Section]]:
    lines = body.split("\n")
    tokens = _PARSER.parse(body)
    slugger = Slugger()
    stack: list[tuple[int, str]] = []
    sections: list[_Section] = []
    current = _Section(0, (title,) if title else (), "", None, ())
    for role, block, inline in _blocks_and_headings(tokens, lines, mdx=mdx):
        if role == "block":
            current = _Section(
                current.level,
                current.path,
                current.anchor,
                current.heading_lines,
                (*current.blocks, block),
            )
            continue
        sections.append(current)
        assert inline is not None
        level = int(block.kind.removeprefix("h"))
        text = heading_text(inline)
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, text))
        names = tuple(name for _, name in stack)
        # The front matter title stands in for the page's H1 when the page has none.
        path = names if stack[0][0] == 1 or not title else (title, *names)
        current = _Section(level, path, slugger.slug(text), (block.start, block.end), ())
    sections.append(current)
    return lines, sections


def _pack(blocks: Sequence[_Block], lines: Sequence[str]) -> list[list[_Block]]:
    """Group blocks into parts of about MIN..MAX tokens, evenly sized, never splitting one."""
    sizes = [estimate_tokens("\n".join(lines[b.start : b.end])) for b in blocks]
    total = sum(sizes)
    if total <= MAX_TOKENS:
        return [list(blocks)]
    parts_wanted = -(-total // MAX_TOKENS)
    target = max(MIN_TOKENS, total // parts_wanted)
    groups: list[list[_Block]] = [[]]
    filled = 0
    for block, size in zip(blocks, sizes, strict=True):
        if groups[-1] and (filled + size > MAX_TOKENS or filled >= target):
            groups.append([])
            filled = 0
        groups[-1].append(block)
        filled += size
    return groups


def _source(lines: Sequence[str], start: int, end: int) -> str:
    return "\n".join(lines[start:end]).strip("\n").rstrip()


def content_hash(*, heading: str, text: str, title: str = "") -> str:
    """The hash of exactly what is embedded for a chunk (see `embedding_text`)."""
    embedded = embedding_text(heading=heading, text=text, title=title)
    return hashlib.sha256(embedded.encode()).hexdigest()


def embedding_text(*, heading: str, text: str, title: str = "") -> str:
    """What the embedder sees: the page title and the heading path, then the section.

    The context tells a split part, or a section named only "Caching", what it belongs to;
    the heading path usually starts with the page title already (the H1).
    """
    context = heading
    if title and not heading.startswith(title):
        context = f"{title} > {heading}" if heading else title
    return f"{context}\n\n{text}" if context else text


def chunk_markdown(text: str, *, path: str) -> list[Chunk]:
    """Split one markdown (or MDX) page into chunks, one or more per non-empty section."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").removeprefix("\ufeff")
    front, body = split_front_matter(text)
    front_title = front.get("title")
    title = str(front_title).strip() if isinstance(front_title, (str, int, float)) else ""
    lines, sections = _sections(body, title=title, mdx=path.endswith(".mdx"))
    page_title = title or next(
        (section.path[0] for section in sections if section.level == 1 and section.path), ""
    )
    chunks: list[Chunk] = []
    for section in sections:
        if not section.blocks:
            continue
        heading = " > ".join(section.path)
        for number, group in enumerate(_pack(section.blocks, lines)):
            start = group[0].start
            if number == 0 and section.heading_lines is not None:
                start = section.heading_lines[0]
            body_text = _source(lines, start, group[-1].end)
            if not body_text:
                continue
            chunks.append(
                Chunk(
                    path=path,
                    heading=heading,
                    anchor=section.anchor,
                    text=body_text,
                    ordinal=len(chunks),
                    content_hash=content_hash(heading=heading, text=body_text, title=page_title),
                    title=page_title,
                )
            )
    return chunks
