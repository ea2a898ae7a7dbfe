"""Whether what an edit adds was said, and which cited messages each added line rests on.

An edit's flags, paths, variables, versions, URLs, config keys and code must occur in the
messages it cites or already in the docs, and so should the numbers and names of its prose.
Only added lines are read (a line the edit rewrites counts as added, but what it kept from the
old line is in the docs, so it is grounded). Matching is literal with word boundaries, after
the normalisations a chat applies to what people type (smart quotes, `--` turned into a dash).
What a line claims is read by `claims`.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from .chattext import as_typed
from .claims import KIND_NAMES, SOFT_KINDS, Claim, line_claims
from .claimwords import config_claim, word_set
from .pages import read_page

__all__ = [
    "KIND_NAMES",
    "SOFT_KINDS",
    "Claim",
    "Grounds",
    "LineSupport",
    "Ungrounded",
    "added_lines",
    "attribute_lines",
    "find_ungrounded",
    "grounding_feedback",
    "line_claims",
    "refusal_reason",
]


@dataclass(frozen=True)
class Ungrounded:
    """A claim of the edit found neither in the cited messages nor in the docs."""

    token: str
    kind: str
    path: str
    line: int  # 1-based, in the edited file

    @property
    def soft(self) -> bool:
        """A number or name read from prose rather than a code-like token."""
        return self.kind in SOFT_KINDS


@dataclass(frozen=True)
class LineSupport:
    """An added line and the evidence messages (indices into the cited ones) it rests on."""

    path: str
    line: int  # 1-based, in the edited file
    text: str
    messages: tuple[int, ...]


# ---------------------------------------------------------------- grounds


@lru_cache(maxsize=4096)
def _pattern(needle: str, kind: str) -> re.Pattern[str]:
    body = re.escape(needle)
    if kind in ("version", "number"):
        return re.compile(rf"(?<![\d.,]){body}(?![\d])(?![.,]\d)")
    left = r"(?<![\w-])" if needle[0].isalnum() or needle[0] in "_-" else r"(?<!\w)"
    if kind in ("name",):
        left = r"(?<![A-Za-z0-9])"
    if kind == "url":
        right = r"(?![\w/%?=&-])(?!\.\w)"
    elif needle[-1].isalnum() or needle[-1] == "_":
        right = r"(?![\w-])(?!\.\w)" if kind != "name" else r"(?![A-Za-z0-9])"
    else:
        right = ""
    return re.compile(left + body + right)


_FOLDED_KINDS = frozenset({"version", "url", "code", "name"})
# The XDG base directories and where they are when unset
# (https://specifications.freedesktop.org/basedir-spec/latest/).
_XDG_DEFAULTS = {
    "XDG_CACHE_HOME": ".cache",
    "XDG_CONFIG_HOME": ".config",
    "XDG_DATA_HOME": ".local/share",
    "XDG_STATE_HOME": ".local/state",
}
_XDG_PATH = re.compile(r"\$\{?(XDG_[A-Z]+_HOME)\}?(/.+)")


class Grounds:
    """The texts a claim may rest on (the cited messages and the docs), searched literally."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.text = "\n".join(as_typed(text) for text in texts)
        self._lower = self.text.lower()

    def has(self, needle: str, kind: str, *, exact: bool = False) -> bool:
        if not needle:
            return False
        folded = kind in _FOLDED_KINDS and not exact
        haystack, target = (self._lower, needle.lower()) if folded else (self.text, needle)
        pattern = _pattern(target, kind)
        # str.find skips to each occurrence fast; the pattern only checks its boundaries there.
        start = haystack.find(target)
        while start >= 0:
            if pattern.match(haystack, start):
                return True
            start = haystack.find(target, start + 1)
        return False

    def holds(self, claim: Claim) -> bool:
        """Whether any form of the claim occurs; a dotted config key may be said in parts."""
        if any(self.has(needle, claim.kind, exact=claim.exact) for needle in claim.needles):
            return True
        if claim.kind == "config-key" and "." in claim.token:
            parent, _, leaf = claim.token.rpartition(".")
            return self.holds(config_claim(parent)) and self.has(leaf, "config-key")
        if claim.kind == "path":
            return self._under_xdg_default(claim.token)
        return False

    def _under_xdg_default(self, path: str) -> bool:
        """`$XDG_CACHE_HOME/app` when both the variable and `~/.cache/app` (the same place
        while it is unset) were said: that the tool honours the variable must be said too."""
        found = _XDG_PATH.fullmatch(path)
        if found is None or found.group(1) not in _XDG_DEFAULTS:
            return False
        variable, rest = found.groups()
        default = f"{_XDG_DEFAULTS[variable]}{rest}"
        return self.has(variable, "env") and any(
            self.has(f"{home}/{default}", "path") for home in ("~", "$HOME", "${HOME}")
        )


# ---------------------------------------------------------------- the edit's added lines


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").removeprefix("\ufeff").split("\n")


def added_lines(before: str | None, after: str) -> list[int]:
    """The 0-based numbers of the lines of `after` that are not lines of `before`."""
    new = _lines(after)
    if before is None:
        return [number for number, line in enumerate(new) if line.strip()]
    matcher = difflib.SequenceMatcher(None, _lines(before), new, autojunk=False)
    found: list[int] = []
    for tag, _, _, start, end in matcher.get_opcodes():
        if tag in ("insert", "replace"):
            found.extend(number for number in range(start, end) if new[number].strip())
    return found


def _changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    return [path for path in sorted(after) if before.get(path) != after[path]]


def find_ungrounded(
    before: Mapping[str, str],
    after: Mapping[str, str],
    *,
    evidence: Sequence[str],
    docs: Iterable[str],
) -> list[Ungrounded]:
    """The claims the edit adds that neither the cited messages nor the docs contain.

    `before` and `after` map each edited path to its text (a new page has no `before`);
    `evidence` holds the texts of the messages the proposal cites; `docs` the texts of the
    whole docs tree as it is. Each claim is reported once per file, at its first line.
    """
    grounds = Grounds([*evidence, *docs, *before.values()])
    found: list[Ungrounded] = []
    for path in _changed(before, after):
        page = read_page(after[path], path=path)
        seen: set[tuple[str, str]] = set()
        for number in added_lines(before.get(path), after[path]):
            for claim in line_claims(page.lines[number], page.roles[number]):
                key = (claim.kind, claim.token)
                if key in seen:
                    continue
                seen.add(key)
                if not grounds.holds(claim):
                    found.append(Ungrounded(claim.token, claim.kind, path, number + 1))
    return found


def _unique(found: Iterable[Ungrounded]) -> list[Ungrounded]:
    seen: set[tuple[str, str]] = set()
    result = []
    for item in found:
        if (item.kind, item.token) not in seen:
            seen.add((item.kind, item.token))
            result.append(item)
    return result


def _quoted(token: str) -> str:
    fence = "``" if "`" in token else "`"
    return f"{fence}{token}{fence}"


def grounding_feedback(found: Sequence[Ungrounded]) -> str:
    """One message for the model naming each ungrounded token, or '' when there is none."""
    if not found:
        return ""
    lines = ["Your edit adds things that are not in the conversation or the docs:"]
    for item in _unique(found):
        kind = KIND_NAMES.get(item.kind, item.kind)
        lines.append(
            f"- {_quoted(item.token)} ({kind}, {item.path} line {item.line}) is not in the "
            "conversation or the docs; remove it or quote where it was said."
        )
    lines.append(
        "Use only what the participants said or what the docs already say, and send the whole "
        "proposal again."
    )
    return "\n".join(lines)


def refusal_reason(found: Sequence[Ungrounded], *, limit: int = 5) -> str:
    """One sentence for a refusal record or a report: what was not grounded."""
    unique = _unique(found)
    if not unique:
        return ""
    named = ", ".join(
        f"{_quoted(item.token)} ({KIND_NAMES.get(item.kind, item.kind)})" for item in unique[:limit]
    )
    more = f" and {len(unique) - limit} more" if len(unique) > limit else ""
    return f"The edit adds what no one said and the docs do not have: {named}{more}."


# ---------------------------------------------------------------- which message a line rests on

_STOP_WORDS = word_set(
    """the and for that this with from your you are was were have has had not but can will
    would should could what when where which who how why there their they them then than
    into onto also just only some any all each more most very such like use used using
    about after before does did done make makes made get gets got been being its it's
    i'm don't doesn't isn't can't it is be to of in on at by or an as if so no yes do we
    our us me my he she his her one two new need needs want wants way same other here
    still even well now out up down over under again because while these those"""
)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def _content_words(text: str) -> set[str]:
    return {
        _stem(word)
        for word in re.findall(r"[a-z][a-z0-9_-]+", as_typed(text).lower())
        if len(word) >= 4 and word not in _STOP_WORDS
    }


def attribute_lines(
    before: Mapping[str, str],
    after: Mapping[str, str],
    *,
    evidence: Sequence[str],
    docs: Iterable[str] = (),
) -> list[LineSupport]:
    """For each added line, the cited messages it rests on (indices into `evidence`).

    A message supports a line when it holds one of the line's code-like tokens, or shares
    words with it that are rare in the docs (a word every page uses says little). The indices
    come in message order; a line no message supports gets none.
    """
    documents = [_content_words(text) for text in docs]
    frequency: Counter[str] = Counter(word for words in documents for word in words)
    total = max(1, len(documents))

    def rarity(word: str) -> float:
        return math.log((total + 1) / (frequency[word] + 1)) / math.log(total + 1)

    messages = [Grounds([text]) for text in evidence]
    message_words = [_content_words(text) for text in evidence]
    result: list[LineSupport] = []
    for path in _changed(before, after):
        page = read_page(after[path], path=path)
        for number in added_lines(before.get(path), after[path]):
            line, role = page.lines[number], page.roles[number]
            if role.kind in ("blank", "markup"):
                continue
            claims = [c for c in line_claims(line, role) if c.kind not in SOFT_KINDS]
            # A code word is worth what a word is (the product's name is on every page);
            # a flag, a path, a variable, a version, a URL or a key is worth a match alone.
            strong = [claim for claim in claims if claim.kind != "code"]
            words = _content_words(line) | {
                _stem(c.token.lower()) for c in claims if c.kind == "code"
            }
            supporters = []
            for index, (grounds, said) in enumerate(zip(messages, message_words, strict=True)):
                score = 2.0 * sum(1 for claim in strong if grounds.holds(claim))
                score += sum(0.25 + rarity(word) for word in words & said)
                if score >= 1.5:
                    supporters.append(index)
            result.append(LineSupport(path, number + 1, line, tuple(supporters)))
    return result
