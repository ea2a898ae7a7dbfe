"""Where a SEARCH block matches a file (a cautious ladder), or why it matches nowhere."""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

# Aider found a similarity below about 0.6 shows the model lines that only confuse it.
_SIMILAR_ENOUGH = 0.6
_FENCE_OPEN = re.compile(r"^\s*(```+|~~~+)[\w+.#-]*\s*$")
_FENCE_CLOSE = re.compile(r"^\s*(```+|~~~+)\s*$")


def _unfenced(lines: list[str]) -> list[str] | None:
    if len(lines) >= 2 and _FENCE_OPEN.match(lines[0]) and _FENCE_CLOSE.match(lines[-1]):
        return lines[1:-1]
    return None


def _trim_blank_edges(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _variants(search: list[str], replace: list[str]) -> list[tuple[list[str], list[str]]]:
    """The block as given, then without fences the file lacks, then without blank edge lines."""
    variants = [(search, replace)]
    inner = _unfenced(search)
    if inner is not None:
        replace_inner = _unfenced(replace)
        replace = replace_inner if replace_inner is not None else replace
        search = inner
        variants.append((search, replace))
    trimmed = _trim_blank_edges(search)
    if trimmed != search and trimmed:
        variants.append((trimmed, _trim_blank_edges(replace)))
    return variants


def _leading(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _common_indent(lines: Sequence[str]) -> str:
    indents = [_leading(line) for line in lines if line.strip()]
    if not indents:
        return ""
    common = indents[0]
    for indent in indents[1:]:
        while not indent.startswith(common):
            common = common[:-1]
    return common


@dataclass(frozen=True)
class Match:
    start: int
    length: int
    replacement: tuple[str, ...]


def _exact(lines: list[str], search: list[str], replace: list[str]) -> list[Match]:
    n = len(search)
    return [
        Match(i, n, tuple(replace)) for i in range(len(lines) - n + 1) if lines[i : i + n] == search
    ]


def _rstripped(lines: list[str], search: list[str], replace: list[str]) -> list[Match]:
    n = len(search)
    wanted = [line.rstrip() for line in search]
    return [
        Match(i, n, tuple(replace))
        for i in range(len(lines) - n + 1)
        if [line.rstrip() for line in lines[i : i + n]] == wanted
    ]


def _reindented(lines: list[str], search: list[str], replace: list[str]) -> list[Match]:
    """Matches where every line is shifted by one indentation; the replacement shifts alike."""
    indent = _common_indent(search)
    body = [line[len(indent) :].rstrip() if line.strip() else "" for line in search]
    anchor = next((j for j, line in enumerate(body) if line), None)
    if anchor is None:
        return []
    n = len(search)
    found = []
    for i in range(len(lines) - n + 1):
        window = [line.rstrip() for line in lines[i : i + n]]
        first = window[anchor]
        prefix = first[: len(first) - len(body[anchor])]
        if not first.endswith(body[anchor]) or prefix.strip():
            continue
        if all(
            (not b and not w.strip()) or (b and w == prefix + b)
            for b, w in zip(body, window, strict=True)
        ):
            shifted = tuple(_shift(line, indent, prefix) for line in replace)
            found.append(Match(i, n, shifted))
    return found


def _shift(line: str, old: str, new: str) -> str:
    if not line.strip():
        return ""
    return new + (line[len(old) :] if line.startswith(old) else line.lstrip())


_LADDER = (_exact, _rstripped, _reindented)


def locate(lines: list[str], search: list[str], replace: list[str]) -> list[Match]:
    """The matches at the first rung of the ladder (and variant of the block) that has any."""
    for variant_search, variant_replace in _variants(search, replace):
        for rung in _LADDER:
            matches = rung(lines, variant_search, variant_replace)
            if matches:
                return matches
    return []


# ---------------------------------------------------------------- messages


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.strip(), b.strip(), autojunk=False).ratio()


def _candidate_starts(lines: list[str], search: list[str], limit: int = 5) -> set[int]:
    """Likely starts of the intended lines: where its lines recur, and lines like its first."""
    wanted = {line.strip(): i for i, line in enumerate(search) if line.strip()}
    votes = Counter(
        j - wanted[line.strip()] for j, line in enumerate(lines) if line.strip() in wanted
    )
    starts = {start for start, _ in votes.most_common(limit)}
    anchor = next((line for line in search if line.strip()), "")
    scored: list[tuple[float, int]] = []
    offset = search.index(anchor) if anchor else 0
    for j, line in enumerate(lines):
        floor = scored[-1][0] if len(scored) >= limit else 0.0
        matcher = difflib.SequenceMatcher(None, anchor.strip(), line.strip(), autojunk=False)
        if matcher.real_quick_ratio() <= floor or matcher.quick_ratio() <= floor:
            continue
        scored = sorted([*scored, (matcher.ratio(), j - offset)], reverse=True)[:limit]
    return starts | {start for _, start in scored}


def _closest_lines(lines: list[str], search: list[str]) -> list[str]:
    """The window of the file most like the search, if it is similar enough to help the model.

    Only a few likely starts are scored, line by line, so a long page stays fast.
    """
    if not lines or not search:
        return []
    size = min(len(search), len(lines))
    best, best_score = 0, 0.0
    for start in _candidate_starts(lines, search):
        start = min(max(start, 0), len(lines) - size)
        window = lines[start : start + size]
        score = sum(map(_similarity, search, window)) / size
        if score > best_score:
            best, best_score = start, score
    return lines[best : best + size] if best_score >= _SIMILAR_ENOUGH else []


def not_found_message(path: str, lines: list[str], search: list[str]) -> str:
    message = f"SEARCH block failed to exactly match lines in {path}."
    fragment = "\n".join(search).strip()
    containing = [line for line in lines if fragment and fragment in line]
    if len(search) == 1 and containing:
        shown = "\n".join(containing[:3])
        return (
            f"{message} SEARCH must hold whole lines, and this text is only part of "
            f"{'this line' if len(containing) == 1 else 'these lines'}; copy whole lines "
            f"(with enough of them to be unique) into SEARCH:\n{shown}"
        )
    similar = _closest_lines(lines, search)
    if similar:
        shown = "\n".join(similar)
        return (
            f"{message} Did you mean to match some of these actual lines:\n{shown}\n"
            "The SEARCH text must copy the file's lines exactly, including spacing "
            "and punctuation."
        )
    return (
        f"{message} No part of the file resembles it; copy the lines to replace exactly "
        "from the file as you were shown it."
    )
