"""What may be published: inert markup, defanged links and the rules a proposal must pass.

Redaction of secrets and personal data lives in `redact.py`; it is re-exported here.
"""

from __future__ import annotations

import bisect
import difflib
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from .diffs import changed_chars, changed_lines, unified_diff
from .handles import replace_handles
from .links import defang, domain_allowed, domains, find_links, link_domains
from .models import Proposal
from .redact import PLACEHOLDERS, Finding, find_sensitive, redact

__all__ = [
    "PLACEHOLDERS",
    "Finding",
    "check_proposal",
    "find_sensitive",
    "link_domains",
    "neutralise",
    "redact",
    "sanitize_for_publishing",
]

# ---------------------------------------------------------------- neutralising markup

# GitHub user and team names: letters, digits, single inner hyphens; teams add '_' and '.'.
_MENTION = re.compile(
    r"(?<![A-Za-z0-9_])@(?P<name>[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38})"
    r"(?P<team>/[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?=[A-Za-z0-9]))*)?"
)
_TAG = re.compile(r"<(?P<body>/?[A-Za-z][A-Za-z0-9-]*(?=[\s/>]|$)[^<>]*)(?P<close>>?)")
_MARKUP_DECLARATION = re.compile(r"<(?=[!?])")
# `[text](javascript:...)`: the escaped bracket makes it plain text instead of a link.
_SCRIPT_TARGET = re.compile(r"(?i)\]\((?=\s*<?\s*(?:javascript|vbscript|data)\s*:)")
_ZWJ = "\u200d"
# GitHub links `#12`, `GH-12` and `owner/repo#12` to issues, and closes the issue when a PR that
# says "Fixes #12" or "closes https://github.com/o/r/issues/12" merges.
_ISSUE_REF = re.compile(r"(?<![\w&])#(?=\d)|\bGH(?=-\d)")
_OWNER_REPO_REF = re.compile(r"\b[\w.-]+/[\w.-]+#(?=\d)")
_CLOSING_KEYWORD = re.compile(
    r"(?i)\b(?=(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?):?\s+https?://\S+/(?:issues|pull)/\d)\w"
)
# Zero-width and bidirectional control characters: invisible, they can split a token so no
# detector sees it, or show reviewers text in another order than it is (Trojan Source).
INVISIBLE = frozenset(
    "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff"
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def strip_invisible(text: str) -> str:
    """`text` without zero-width and bidirectional control characters."""
    return "".join(char for char in text if char not in INVISIBLE)


def _code_spans(text: str) -> list[tuple[int, int]]:
    """Closed fenced blocks and inline code spans, where GitHub neither pings nor renders HTML.

    Unclosed fences and lone backticks protect nothing: text after them is still live markup.
    """
    fences: list[tuple[int, int]] = []
    fence = re.compile(r"^ {0,3}(`{3,}|~{3,})[^\n]*\n", re.MULTILINE)
    position = 0
    while (opening := fence.search(text, position)) is not None:
        marker = opening.group(1)
        closing = re.compile(rf"^ {{0,3}}{re.escape(marker[0])}{{{len(marker)},}}[ \t]*$", re.M)
        end = closing.search(text, opening.end())
        if end is None:
            break
        fences.append((opening.start(), end.end()))
        position = end.end()
    inline: list[tuple[int, int]] = []
    runs = re.compile(r"(?<!`)(`+)(?!`)")
    position = 0
    while (run := runs.search(text, position)) is not None:
        position = run.end()
        if _inside(run.start(), fences):
            continue
        close = re.compile(rf"(?<!`){run.group(1)}(?!`)").search(text, run.end())
        if close is None or _inside(close.start(), fences):
            continue
        inline.append((run.start(), close.end()))
        position = close.end()
    return sorted(fences + inline)


def _inside(position: int, spans: Sequence[tuple[int, int]]) -> bool:
    """Whether `position` falls in one of `spans` (sorted, not overlapping)."""
    index = bisect.bisect_right(spans, (position, sys.maxsize)) - 1
    return index >= 0 and spans[index][0] <= position < spans[index][1]


def _live_segments(text: str) -> list[tuple[bool, str]]:
    """`text` cut into (is_live_markup, piece) parts, code spans being the dead parts."""
    parts = []
    position = 0
    for start, end in _code_spans(text):
        if start < position:
            continue
        parts.append((True, text[position:start]))
        parts.append((False, text[start:end]))
        position = end
    parts.append((True, text[position:]))
    return [part for part in parts if part[1]]


def _neutralise_markup(piece: str) -> str:
    piece = _TAG.sub(
        lambda m: "&lt;" + m.group("body") + ("&gt;" if m.group("close") else ""), piece
    )
    piece = _MARKUP_DECLARATION.sub("&lt;", piece)
    # `![alt](url)` would load the url in every reader's browser; `!\[` shows it as text.
    piece = piece.replace("![", "!\\[")
    piece = _SCRIPT_TARGET.sub("]\\\\(", piece)
    piece = _outside_links(_MENTION, piece, lambda found: "@" + _ZWJ + found[1:])
    for pattern in (_CLOSING_KEYWORD, _OWNER_REPO_REF, _ISSUE_REF):
        piece = _outside_links(pattern, piece, lambda found: found + _ZWJ)
    return piece


def _outside_links(pattern: re.Pattern[str], text: str, insert: Callable[[str], str]) -> str:
    """`pattern`'s matches rewritten by `insert`, except inside links (`page#12` stays)."""
    links = [(link.start, link.end) for link in find_links(text)]
    return pattern.sub(
        lambda m: m.group(0) if _inside(m.start(), links) else insert(m.group(0)), text
    )


def neutralise(text: str) -> str:
    """Make chat text inert on GitHub: no @mention pings, no issue links or closing keywords,
    no raw HTML, no remote images.

    A zero-width joiner after '@' stops the ping whatever backticks surround it (wrapping in
    backticks could be undone by an unbalanced backtick in the message). Code spans are left
    as they are, since GitHub neither pings nor renders HTML inside them.
    """
    return "".join(
        _neutralise_markup(piece) if live else piece for live, piece in _live_segments(text)
    )


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters on a word boundary, marked with '…'."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def sanitize_for_publishing(text: str, *, members: Mapping[str, str] | None = None) -> str:
    """Drop invisible characters, redact, replace chat handles, then neutralise: the one call
    to make before text leaves the run. (A zero-width space inside a token would hide it from
    every detector.) `members` maps the handles of the run's chat members to their author
    pseudonyms (`handles.replace_handles`); any other handle becomes `[handle]`."""
    redacted = redact(strip_invisible(text))
    return "".join(
        _neutralise_markup(replace_handles(piece, members=members)) if live else piece
        for live, piece in _live_segments(redacted)
    )


def defang_links(text: str, *, docs_domains: set[str], allowed_domains: Sequence[str]) -> str:
    """Links to domains neither the docs nor the config use become inert (`links.defang`)."""
    return defang(text, docs_domains=docs_domains, allowed=allowed_domains)


# ---------------------------------------------------------------- proposal rules

_DANGEROUS_TAG = re.compile(
    r"(?i)<\s*(script|iframe|object|embed|frame|frameset|base|meta|form|style|link|applet)\b"
)
_EVENT_HANDLER = re.compile(r"(?i)<[^<>]*\son[a-z]+\s*=")
# Markdown links, reference definitions and HTML attributes that run or embed code.
_SCRIPT_LINK = re.compile(
    r"(?im)(?:\]\(\s*<?|^\s{0,3}\[[^\]\n]+\]:\s*<?|\b(?:href|src|action|formaction)\s*=\s*[\"']?)"
    r"\s*(javascript|vbscript|data)\s*:"
)
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)


def _added_text(before: str | None, after: str) -> str:
    """The lines of `after` that are not in `before`, in order."""
    new_lines = after.splitlines()
    if before is None:
        return "\n".join(new_lines)
    matcher = difflib.SequenceMatcher(None, before.splitlines(), new_lines, autojunk=False)
    added = []
    for tag, _, _, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "insert"):
            added.extend(new_lines[j1:j2])
    return "\n".join(added)


def _mentions(text: str) -> list[str]:
    found: list[str] = []
    for live, piece in _live_segments(text):
        if not live:
            continue
        urls = [(link.start, link.end) for link in find_links(piece)]
        found.extend(m.group(0) for m in _MENTION.finditer(piece) if not _inside(m.start(), urls))
    return found


def check_proposal(
    *,
    before: Mapping[str, str],
    after: Mapping[str, str],
    docs_domains: set[str],
    allowed_domains: Sequence[str],
    max_changed_lines: int,
    max_changed_chars: int = 20_000,
) -> list[str]:
    """One sentence per rule the change from `before` to `after` breaks; empty means publishable.

    Only added text is judged: what the docs already say was published before.
    """
    reasons: list[str] = []
    old_text = "\n".join(before.values())
    for path in sorted(after):
        added = _added_text(before.get(path), after[path])
        if not added:
            continue
        if set(added) & INVISIBLE:
            reasons.append(
                f"The edit to {path} adds invisible characters (zero-width or bidirectional "
                "controls), which can hide text from reviewers; it is refused."
            )
        reasons.extend(_sensitive_reasons(path, strip_invisible(added), strip_invisible(old_text)))
        for domain in sorted(domains(added) - domains(old_text)):
            if not domain_allowed(domain, docs_domains=docs_domains, allowed=allowed_domains):
                reasons.append(
                    f"The edit to {path} links to {domain}, a domain the docs do not use "
                    "and the config does not allow."
                )
        reasons.extend(_markup_reasons(path, added, old_text))
    changed = {path: text for path, text in after.items() if before.get(path) != text}
    old = {path: before[path] for path in changed if path in before}
    diff = unified_diff(old, changed)
    count = changed_lines(diff)
    if count > max_changed_lines:
        reasons.append(
            f"The proposal changes {count} lines, more than the limit of {max_changed_lines}; "
            "a smaller, focused edit is needed."
        )
    chars = changed_chars(diff)
    if chars > max_changed_chars:
        reasons.append(
            f"The proposal changes {chars} characters, more than the limit of "
            f"{max_changed_chars}; a smaller, focused edit is needed."
        )
    return reasons


def _sensitive_reasons(path: str, added: str, old_text: str) -> list[str]:
    labels = []
    # Docs may show reserved sample values (you@example.com); chat quotes may not.
    for finding in find_sensitive(added, origin="docs"):
        value = added[finding.start : finding.end]
        if value not in old_text and finding.label not in labels:
            labels.append(finding.label)
    return [
        f"The edit to {path} adds {label}; proposals must not publish secrets or personal data."
        for label in labels
    ]


_HTML_TAG_NAME = re.compile(r"</?([A-Za-z][A-Za-z0-9-]*)(?=[\s/>])")


def _html_tags(text: str) -> set[str]:
    """Names of the raw HTML tags in `text` outside code, lower case."""
    return {
        match.group(1).lower()
        for live, piece in _live_segments(text)
        if live
        for match in _HTML_TAG_NAME.finditer(piece)
    }


def _markup_reasons(path: str, added: str, old_text: str) -> list[str]:
    reasons = []
    tags = sorted({m.group(1).lower() for m in _DANGEROUS_TAG.finditer(added)})
    if tags:
        reasons.append(
            f"The edit to {path} adds raw HTML (<{'>, <'.join(tags)}>), which is refused."
        )
    if _EVENT_HANDLER.search(added):
        reasons.append(
            f"The edit to {path} adds an HTML event handler attribute, which is refused."
        )
    if _SCRIPT_LINK.search(added):
        reasons.append(f"The edit to {path} adds a script or data link, which is refused.")
    if any(m.group(0) not in old_text for m in _HTML_COMMENT.finditer(added)):
        reasons.append(
            f"The edit to {path} adds an HTML comment, which hides text from readers; "
            "it is refused."
        )
    unknown = sorted(_html_tags(added) - _html_tags(old_text))
    if unknown and not reasons:  # one markup refusal says enough
        reasons.append(
            f"The edit to {path} adds HTML the docs do not use (<{'>, <'.join(unknown)}>); "
            "write it as Markdown."
        )
    mentions = [m for m in dict.fromkeys(_mentions(added)) if m not in _mentions(old_text)]
    if mentions:
        reasons.append(
            f"The edit to {path} adds {', '.join(mentions)}, which would notify people on GitHub."
        )
    return reasons


def defang_proposal(
    proposal: Proposal, *, docs_domains: set[str], allowed_domains: Sequence[str]
) -> Proposal:
    """The proposal with unknown links made inert in everything the PR shows besides the
    edits (which `check_proposal` already holds to known domains)."""

    def inert(text: str) -> str:
        return defang(text, docs_domains=docs_domains, allowed=allowed_domains)

    return replace(
        proposal,
        title=inert(proposal.title),
        summary=inert(proposal.summary),
        reasoning=inert(proposal.reasoning),
        evidence=tuple(replace(e, quote=inert(e.quote)) for e in proposal.evidence),
    )
