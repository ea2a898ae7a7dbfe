"""What one line of a docs page claims, read as its role on the page says.

A line of code is read word by word, without its prompt or placeholders (`<path>`); a config
line is its key and its value; a trailing `# comment` is prose, except inline script metadata
in Python, which is TOML. A line of prose is read, without its Markdown syntax, for code spans,
URLs, bare code-like words, numbers and names. One word's claims are read by `claimwords`.
"""

from __future__ import annotations

import html
import re

from .chattext import as_typed
from .claimwords import (
    KIND_NAMES,
    SOFT_KINDS,
    Claim,
    code_word_claims,
    config_claim,
    env_claim,
    is_env_name,
    new_claim,
    prose_word_claims,
    take_urls,
    take_version_specifiers,
    url_claim,
    version_claim,
    word_set,
)
from .pages import LineRole

__all__ = ["KIND_NAMES", "SOFT_KINDS", "Claim", "line_claims"]


# ---------------------------------------------------------------- code

# Placeholders name no real thing: `<name>`, `[NAME]`, and the docs' stock path `/path/to/...`.
_PLACEHOLDER = re.compile(
    r"<[A-Za-z][\w .:/-]*>|\[[A-Z][A-Z_ -]*\]"
    r"|(?<![\w.~/-])(?:[A-Za-z]:)?[/\\]?path[/\\]to[/\\][^\s`\"')]*"
)
_CODE_SPLIT = re.compile(r"[\s\"'`,;()\[\]{}|&<>!]+")
_PROMPT = re.compile(r"^(?:\$|>>>|\.\.\.|PS[^>]*>|❯|%|#\s*\$)\s+")
_HASH_COMMENT_LANGUAGES = word_set(
    """sh bash zsh fish shell console shell-session powershell pwsh ps1 toml ini cfg conf yaml
    yml python py python3 pycon dockerfile docker make makefile text txt plain ruby r env
    dotenv properties nix requirements pip"""
)
_PYTHON_LANGUAGES = word_set("python py python3 pycon")
_TOML_LINE = re.compile(r"^\s*(?:\[|\]|\"|[\w.\"-]+\s*=(?!=))")
_CONFIG_LANGUAGES = word_set("toml ini cfg conf properties env dotenv")
_YAML_LANGUAGES = word_set("yaml yml")
_JSON_LANGUAGES = word_set("json jsonc json5")


def _split_comment(line: str, language: str) -> tuple[str, str]:
    """A code line's code and its trailing `# comment` (read as prose), where `#` is one."""
    if language.lower() not in _HASH_COMMENT_LANGUAGES and language:
        return line, ""
    stripped = line.strip()
    if stripped.startswith("#") and not stripped.startswith(("#!", "#[")):
        return "", stripped.lstrip("#")
    match = re.search(r"\s#\s", line)
    if match:
        return line[: match.start()], line[match.end() :]
    return line, ""


def _code_claims(line: str, language: str = "") -> list[Claim]:
    """The claims of one line of code: a command, a config line, a line of a program."""
    language = language.lower()
    code, comment = _split_comment(line, language)
    if comment and not code.strip() and language in _PYTHON_LANGUAGES:
        # Inline script metadata (PEP 723) is TOML written in comments.
        if comment.strip().startswith("///"):
            return []
        if _TOML_LINE.match(comment):
            return _code_claims(comment.strip(), "toml")
    claims = _prose_claims(comment) if comment.strip() else []
    text = _PROMPT.sub("", as_typed(code).strip())
    if not text:
        return claims
    table = re.fullmatch(r"\[\[?\s*([^\]]+?)\s*\]\]?", text)
    if table and language not in _JSON_LANGUAGES and _DOTTED_KEY_OR_NAME.fullmatch(table.group(1)):
        return [*claims, config_claim(table.group(1))]
    key_value = _config_line(text, language)
    if key_value is not None:
        key, value = key_value
        in_config = language in _CONFIG_LANGUAGES | _YAML_LANGUAGES | _JSON_LANGUAGES
        if not in_config and is_env_name(key):
            claims.append(env_claim(key))
        else:
            claims.append(config_claim(key))
        text = value
    text = _PLACEHOLDER.sub(" ", take_urls(text, claims))
    text = take_version_specifiers(text, claims)
    words = _CODE_SPLIT.split(text)
    for number, word in enumerate(words):
        if number and _is_metavariable(word, command=words[0]):
            continue
        claims.extend(code_word_claims(word))
    return claims


# A manual page's placeholder: `kestrel explain TASK`, `cp SOURCE DEST` (letters only; a name
# with `_` or digits, such as `KESTREL_JOBS`, is a variable and stays a claim).
_METAVARIABLE = re.compile(r"[A-Z]{2,}(?:\.{3})?")
# Commands whose upper-case arguments are variables' names, not placeholders.
_NAMING_COMMANDS = frozenset({"export", "set", "unset", "env", "printenv", "echo", "declare"})


def _is_metavariable(word: str, *, command: str) -> bool:
    """An upper-case argument of a command written in lower case: a placeholder the reader
    fills in, which no conversation says (it says the value, `kestrel explain build`)."""
    return (
        bool(_METAVARIABLE.fullmatch(word))
        and command.islower()
        and command not in _NAMING_COMMANDS
    )


_DOTTED_KEY_OR_NAME = re.compile(r"[A-Za-z_\"][\w\"-]*(?:\.[A-Za-z_\"][\w\" -]*)*")


def _config_line(text: str, language: str) -> tuple[str, str] | None:
    """A config line's key and value, for TOML/INI, YAML and JSON (and unlabelled TOML)."""
    if language in _YAML_LANGUAGES:
        match = re.match(r"^(?:-\s+)?([A-Za-z0-9_.\"'-]+)\s*:(?:\s+(.*))?$", text)
    elif language in _JSON_LANGUAGES:
        match = re.match(r"^\"([^\"]+)\"\s*:\s*(.*)$", text)
    elif language in _CONFIG_LANGUAGES or not language:
        match = re.match(r"^([A-Za-z0-9_.\"-]+)\s*=(?!=)\s*(.*)$", text)
    else:
        return None
    if match is None:
        return None
    return match.group(1), match.group(2) or ""


# ---------------------------------------------------------------- prose

_CODE_SPAN = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|$)")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\(\s*<?([^\s)>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_LINK_TAIL = re.compile(r"\]\(\s*<?([^\s)>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE_DEFINITION = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")
_REFERENCE_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_FOOTNOTE = re.compile(r"\[\^[^\]]+\]:?")
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_LINE_PREFIX = re.compile(r"^\s*(?:>\s*)*(?:(?:[-*+]|\d+[.)])\s+(?:\[[ xX]\]\s+)?)?(?:#{1,6}\s+)?")
_CONTAINER_TITLE = re.compile(r"^\s*(?:!!!|\?\?\?\+?|===\+?)\s*(?:[\w-]+(?:\s+[\w-]+)*)?\s*")
_UNITS = (
    r"%|x|×|ms|s|sec|secs|seconds?|mins?|minutes?|h|hrs?|hours?|days?|weeks?|months?|years?"
    r"|[kKMGT]i?B|[kKMGT]b|bytes?|times|cores?|threads?|workers?|requests?|packages?"
    r"|files?|lines?|characters?|chars?|MB/s|GB/s|px|ms\b"
)
_NUMBER_IN_PROSE = re.compile(
    rf"(?<![\w.,/:#-])(\d+(?:[.,]\d+)*)(?:\s?({_UNITS}))?(?![\w])(?!\.\d)"
)
_WORD = re.compile(r"(?<![\w.])[A-Za-z][A-Za-z0-9]*(?:['-][A-Za-z0-9]+)*")
# Capitalised or acronyms that name nothing in particular.
_COMMON_NAMES = word_set(
    """I OK TODO FAQ README CHANGELOG URL URLs URI API APIs CLI GUI UI HTTP HTTPS JSON YAML TOML
    HTML CSS XML CSV PDF ID IDs OS CPU CPUs GPU GPUs RAM SSH SSL TLS DNS IP ASCII UTF PR PRs CI
    Note Notes Warning Tip Important Caution Example Info Danger See Also"""
)


def _strip_line_markup(text: str) -> str:
    text = _CONTAINER_TITLE.sub("", text) if _CONTAINER_TITLE.match(text) else text
    text = _LINE_PREFIX.sub("", text, count=1)
    return re.sub(r"\s+#+\s*$", "", text)


def _initial(text: str, start: int) -> bool:
    """Whether the word at `start` opens a sentence, a cell, a quote or a parenthesis."""
    before = text[:start].rstrip(" *_")
    if not before:
        return True
    if before[-1] in "\"'([":
        return True
    before = before.rstrip("\"')]> ")
    return not before or before[-1] in ".!?:;|"


def _soft_claims(text: str, *, heading: bool) -> list[Claim]:
    """Numbers and names in prose: 2+ digit numbers, numbers with units, versions, proper names."""
    claims: list[Claim] = []

    def number(match: re.Match[str]) -> str:
        value, unit = match.group(1), match.group(2)
        if "." in value and not unit:
            claims.append(version_claim(value))
        elif unit or len(value.replace(",", "")) >= 2:
            claims.append(new_claim(match.group(0), "number", value))
        return " " * len(match.group(0))  # a unit (`GB`) is not also a name

    text = _NUMBER_IN_PROSE.sub(number, text)
    for match in _WORD.finditer(text):
        word = match.group(0).removesuffix("'s")
        if word in _COMMON_NAMES or len(word) < 2:
            continue
        inner = word[1:]
        mixed = bool(re.search(r"[a-z][A-Z]", word) or re.search(r"[A-Z]{2,}[a-z]", word))
        acronym = sum(char.isupper() for char in word) >= 2 and not re.search(r"[a-z]", word)
        digits = bool(re.search(r"\d", word))
        capital = word[0].isupper() and inner == inner.lower() and not digits
        proper = capital and not heading and not _initial(text, match.start())
        if mixed or acronym or digits or proper:
            claims.append(new_claim(word, "name"))
    return claims


def _prose_claims(text: str, *, heading: bool = False) -> list[Claim]:
    """The claims of a line of prose: code spans, URLs, bare code-like words, numbers, names."""
    claims: list[Claim] = []
    text = as_typed(text)
    heading = heading or bool(_CONTAINER_TITLE.match(text))
    text = _strip_line_markup(text)

    def code_span(match: re.Match[str]) -> str:
        claims.extend(_code_claims(match.group(2).strip()))
        return " \u2063 "  # an invisible separator keeps the words around a span apart

    text = _CODE_SPAN.sub(code_span, text)
    text = _HTML_COMMENT.sub(" ", text)

    def link(match: re.Match[str]) -> str:
        if re.match(r"(?i)[a-z][a-z0-9+.-]*://", match.group(2)):
            claims.append(url_claim(match.group(2)))
        return f" {match.group(1)} "

    def link_tail(match: re.Match[str]) -> str:
        if re.match(r"(?i)[a-z][a-z0-9+.-]*://", match.group(1)):
            claims.append(url_claim(match.group(1)))
        return " "

    text = _MD_LINK.sub(link, text)
    # The end of a link whose text began on an earlier line: `more text](../page.md)`.
    text = _LINK_TAIL.sub(link_tail, text)
    definition = _REFERENCE_DEFINITION.match(text)
    if definition:
        target = definition.group(1)
        if re.match(r"(?i)[a-z][a-z0-9+.-]*://", target):
            claims.append(url_claim(target))
        return claims
    text = _REFERENCE_LINK.sub(r" \1 ", text)
    text = _FOOTNOTE.sub(" ", text)
    text = take_urls(text, claims)  # before tags go: autolinks and href="..." hold URLs
    text = html.unescape(_HTML_TAG.sub(" ", text))
    kept = []
    for match in re.finditer(r"\S+", text):
        word_claims = prose_word_claims(match.group(0))
        claims.extend(word_claims)
        kept.append(" " * len(match.group(0)) if word_claims else match.group(0))
        kept.append(" ")
    claims.extend(_soft_claims("".join(kept), heading=heading))
    return claims


def line_claims(line: str, role: LineRole) -> list[Claim]:
    """What one line asserts, read as its role on the page says (code, prose, heading...)."""
    if role.kind in ("blank", "markup"):
        return []
    if role.kind == "code":
        return _code_claims(line, role.language)
    if role.kind == "front-matter":
        key, colon, value = line.partition(":")
        return _prose_claims(value, heading=True) if colon and key.strip() else []
    return _prose_claims(line, heading=role.kind in ("heading", "front-matter"))
