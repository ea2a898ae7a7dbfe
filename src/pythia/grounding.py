"""Whether what an edit adds was said: its flags, paths, variables, versions, URLs, config keys
and code must occur in the messages it cites or already in the docs, and so should the numbers
and names of its prose; and which messages each added line rests on.

Only added lines are read (a line the edit rewrites counts as added, but what it kept from the
old line is in the docs, so it is grounded). Matching is literal with word boundaries, after
the normalisations a chat applies to what people type (smart quotes, `--` turned into a dash).
"""

from __future__ import annotations

import difflib
import html
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from .chattext import as_typed
from .links import find_links
from .pages import LineRole, read_page

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

# What each kind of claim is called in a message to the model or a maintainer.
KIND_NAMES = {
    "flag": "flag",
    "env": "environment variable",
    "path": "path",
    "version": "version",
    "url": "URL",
    "config-key": "config key",
    "code": "code",
    "number": "number",
    "name": "name",
}
# Read from prose, where a wrong guess is likelier: worth a retry, not worth a refusal alone.
SOFT_KINDS = frozenset({"number", "name"})


@dataclass(frozen=True)
class Claim:
    """Something an added line asserts: `token` as written, and the forms that ground it."""

    token: str
    kind: str
    needles: tuple[str, ...]
    exact: bool = False  # match case even where the kind usually ignores it


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


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# ---------------------------------------------------------------- reading claims

_FLAG = re.compile(r"--?[A-Za-z][\w.-]*")
_LONG_FLAG = re.compile(r"--[A-Za-z][\w.-]*")
# `-v`, `-sSf`, and single-dash long options (`-no-cache`, `-Tsvg`).
_SHORT_FLAG = re.compile(r"-[A-Za-z][\w.-]*")
# `$NAME`, `${NAME}`, Windows' `%NAME%` and PowerShell's `$env:NAME`.
_ENV_REF = re.compile(
    r"\$env:([A-Za-z_]\w*)|\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?|%([A-Za-z_][A-Za-z0-9_]*)%"
)
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)")
# A version as PEP 440 writes it (pre, post, dev and local parts), or a `3.12.*` prefix.
_V = r"\d+(?:\.\d+)*(?:[.-]?(?:a|b|c|rc|alpha|beta|pre|preview|post|dev)\d*)*(?:\+[A-Za-z0-9.]+)?"
_VERSION = re.compile(rf"(?:[<>=!~^]=?|===?)?[vV]?(\d+\.{_V}(?:\.\*)?)")
_VERSION_SPEC = re.compile(
    rf"(?<![=-])(?P<op>===|==|>=|<=|~=|!=|>|<|\^|~)\s*(?P<version>[vV]?{_V}(?:\.\*)?)(?![\w.])"
)
_AT_VERSION = re.compile(r"(.+)@([vV]?\d[\w.+-]*)")
_IMAGE_TAG = re.compile(r"(.+/[^:/]+):([vV]?\d[\w.+-]*)")
_NUMBER = re.compile(r"\d+")
_IDENTIFIER = re.compile(r"[A-Za-z_][\w.+:@-]*")
_DOTTED_KEY = re.compile(r"[A-Za-z_][\w-]*(?:\.(?:[A-Za-z_][\w-]*|\"[^\"]+\"))+")
_PLACEHOLDER = re.compile(r"<[A-Za-z][\w .:/-]*>|\[[A-Z][A-Z_ -]*\]")
_CODE_SPLIT = re.compile(r"[\s\"'`,;()\[\]{}|&<>!]+")
_PROMPT = re.compile(r"^(?:\$|>>>|\.\.\.|PS[^>]*>|❯|%|#\s*\$)\s+")
_EXTENSIONS = _word_set(
    """toml txt py pyi pyc lock cfg ini yaml yml json jsonc md mdx rst in whl sh bash zsh fish
    ps1 bat cmd exe gz tgz zip tar xz bz2 env pth so dll dylib ipynb csv html css js ts
    tsx jsx lua rs go c h cpp rb java kt swift xml sql log pem crt key conf svg png jpg jpeg
    gif webp pdf"""
)
# Words of shells and Python so common that no one has to say them first.
_TRIVIAL_CODE = _word_set(
    """cd echo export set unset source sudo if then else elif fi for do done in while true false
    exit cat ls mkdir rm cp mv env which test import from def return class print as with None
    True False pass and or not is self lambda try except raise async await sh bash
    FROM RUN COPY ADD ENV WORKDIR CMD ENTRYPOINT ARG EXPOSE USER VOLUME"""
)
_HASH_COMMENT_LANGUAGES = _word_set(
    """sh bash zsh fish shell console shell-session powershell pwsh ps1 toml ini cfg conf yaml
    yml python py python3 pycon dockerfile docker make makefile text txt plain ruby r env
    dotenv properties nix requirements pip"""
)
_PYTHON_LANGUAGES = _word_set("python py python3 pycon")
_TOML_LINE = re.compile(r"^\s*(?:\[|\]|\"|[\w.\"-]+\s*=(?!=))")
_CONFIG_LANGUAGES = _word_set("toml ini cfg conf properties env dotenv")
_YAML_LANGUAGES = _word_set("yaml yml")
_JSON_LANGUAGES = _word_set("json jsonc json5")


def _claim(token: str, kind: str, *needles: str) -> Claim:
    return Claim(token, kind, tuple(dict.fromkeys(needles or (token,))))


def _path_claim(word: str) -> list[Claim]:
    tagged = _IMAGE_TAG.fullmatch(word) or _AT_VERSION.fullmatch(word)
    if tagged:
        return [*_path_claim(tagged.group(1)), _version_claim(tagged.group(2))]
    clean = word.rstrip("/") or word
    plain = clean.removeprefix("./") if clean.startswith("./") and len(clean) > 2 else clean
    needles = [plain, clean, plain.replace("\\", "/")]
    needles.append(re.sub(r"\$\{(\w+)\}", r"$\1", plain))
    needles.append(re.sub(r"\$(\w+)", r"${\1}", plain))
    for home in ("~", "$HOME", "${HOME}", "%USERPROFILE%"):
        if plain.startswith(home + "/"):
            rest = plain[len(home) :]
            needles.extend(other + rest for other in ("~", "$HOME", "${HOME}", "%USERPROFILE%"))
    return [_claim(clean, "path", *needles)]


def _version_claim(word: str) -> Claim:
    number = word.lstrip("<>=!~^ ").lstrip("vV")
    bare = number.removesuffix(".*")
    needles = [bare]
    trimmed = bare
    while trimmed.endswith(".0") and trimmed.count(".") > 1:
        trimmed = trimmed[:-2]
        needles.append(trimmed)
    return _claim(word, "version", *needles)


def _env_name(reference: re.Match[str]) -> str:
    return next(group for group in reference.groups() if group)


def _env_claim(name: str, token: str | None = None) -> Claim:
    return _claim(token or name, "env", name)


def _config_claim(key: str) -> Claim:
    clean = ".".join(part.strip().strip("\"'") for part in key.split("."))
    return _claim(clean, "config-key", clean)


def _has_extension(word: str) -> bool:
    stem, dot, extension = word.rpartition(".")
    return bool(dot and stem and extension.lower() in _EXTENSIONS)


def _looks_like_path(word: str, *, code: bool) -> bool:
    if word.startswith(("~/", "./", "../", "/", "$HOME/", "${HOME}/", "%")) and len(word) > 2:
        return "/" in word or "\\" in word
    if re.match(r"^[A-Za-z]:\\", word) or ("\\" in word and code):
        return True
    if "/" in word:
        segments = [segment for segment in word.split("/") if segment]
        if not segments:
            return False
        return (
            code
            or word.endswith("/")
            or segments[0].startswith(".")
            or _has_extension(segments[-1])
        )
    if re.fullmatch(r"\.[A-Za-z][\w.-]*", word) and "_" not in word:
        return True  # a dotfile: .venv, .python-version
    return _has_extension(word)


def _code_word_claims(word: str) -> list[Claim]:
    """The claims of one word of a command or code line."""
    word = word.strip(".:").lstrip("=@") if not word.startswith((".", "./", "../")) else word
    word = word.rstrip(":")
    if len(word) < 2 or not re.search(r"[A-Za-z0-9]", word):
        return []
    if word.startswith("--"):
        name, _, value = word.partition("=")
        claims = [_claim(name, "flag")] if _LONG_FLAG.fullmatch(name) else []
        return claims + (_code_word_claims(value) if value else [])
    if _SHORT_FLAG.fullmatch(word.partition("=")[0]):
        name, _, value = word.partition("=")
        return [_claim(name, "flag"), *(_code_word_claims(value) if value else [])]
    if word.startswith("-") and _NUMBER.fullmatch(word[1:]):
        return []
    assignment = _ASSIGNMENT.fullmatch(word)
    if assignment:
        name, value = assignment.groups()
        first = (
            _env_claim(name)
            if name.isupper() or _ENV_NAME.fullmatch(name)
            else _claim(name, "code", name)
        )
        return [first, *(_code_word_claims(value) if value else [])]
    if _looks_like_path(word, code=True):
        return _path_claim(word)
    reference = _ENV_REF.fullmatch(word)
    if reference:
        return [_env_claim(_env_name(reference), word)]
    if _ENV_NAME.fullmatch(word):
        return [_env_claim(word)]
    if _VERSION.fullmatch(word):
        return [_version_claim(word)]
    tagged = _AT_VERSION.fullmatch(word)
    if tagged:
        return [*_code_word_claims(tagged.group(1)), _version_claim(tagged.group(2))]
    if _NUMBER.fullmatch(word):
        return [_claim(word, "number")] if len(word) >= 2 else []
    if "=" in word:
        return [claim for part in word.split("=") for claim in _code_word_claims(part)]
    if word.startswith("tool.") or (
        _DOTTED_KEY.fullmatch(word) and word.count(".") >= 2 and word == word.lower()
    ):
        return [_config_claim(word)]
    if word.startswith(".") and re.fullmatch(r"\.[A-Za-z]\w*_\w*", word):
        return _code_word_claims(word[1:])  # `.status_code` after a call: an attribute
    if _IDENTIFIER.fullmatch(word) and word not in _TRIVIAL_CODE:
        # `NETRC`, `PATH`: an upper-case word in code is a name whose case matters.
        exact = word.isupper() and bool(re.search(r"[A-Z]{2}", word))
        return [Claim(word, "code", (word,), exact=exact)]
    return []


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
        return [*claims, _config_claim(table.group(1))]
    key_value = _config_line(text, language)
    if key_value is not None:
        key, value = key_value
        if language not in _CONFIG_LANGUAGES | _YAML_LANGUAGES | _JSON_LANGUAGES and (
            key.isupper() or _ENV_NAME.fullmatch(key)
        ):
            claims.append(_env_claim(key))
        else:
            claims.append(_config_claim(key))
        text = value
    text = _PLACEHOLDER.sub(" ", _take_urls(text, claims))

    def specifier(match: re.Match[str]) -> str:
        claims.append(_version_claim(match.group(0).replace(" ", "")))
        return " "

    text = _VERSION_SPEC.sub(specifier, text)
    for word in _CODE_SPLIT.split(text):
        claims.extend(_code_word_claims(word))
    return claims


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


_SCHEME_URL = re.compile(r"(?i)(?<![\w+.-])[a-z][a-z0-9+.-]*://[^\s<>\"'`]+")


def _take_urls(text: str, claims: list[Claim]) -> str:
    """Add a claim for each URL in `text` and return the text without them.

    Any scheme counts (`git+ssh://`); a host without one (`ghcr.io/astral-sh/uv:0.4`) is read
    like a path, so an image tag or a version after it is checked on its own.
    """
    spans = [(match.start(), match.end()) for match in _SCHEME_URL.finditer(text)]
    for link in find_links(text):
        found = text[link.start : link.end]
        if link.form == "bare" and not re.search(r"[/:]", found):
            continue  # `self.run`, `config.dev`: a word with a dot, not a host
        if not any(start < link.end and link.start < end for start, end in spans):
            spans.append((link.start, link.end))
    for start, end in sorted(spans, reverse=True):
        found = text[start:end]
        if "://" in found or found.lower().startswith("www."):
            claims.append(_url_claim(found))
        else:
            claims.extend(_path_claim(found.rstrip(".,;:!?)")))
        text = text[:start] + " " + text[end:]
    return text


def _url_claim(url: str) -> Claim:
    url = url.rstrip(".,;:!?)>'\"")
    bare = url.rstrip("/")
    needles = [bare, url, bare.split("#", 1)[0].rstrip("/"), bare.removesuffix(".git")]
    if bare.startswith("git+"):
        needles.append(bare[4:])
    return _claim(url, "url", *needles)


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
_PUNCTUATION = "\"'()[]{}<>*_,;:!?"
# Capitalised or acronyms that name nothing in particular.
_COMMON_NAMES = _word_set(
    """I OK TODO FAQ README CHANGELOG URL URLs URI API APIs CLI GUI UI HTTP HTTPS JSON YAML TOML
    HTML CSS XML CSV PDF ID IDs OS CPU CPUs GPU GPUs RAM SSH SSL TLS DNS IP ASCII UTF PR PRs CI
    Note Notes Warning Tip Important Caution Example Info Danger See Also"""
)


def _strip_line_markup(text: str) -> str:
    text = _CONTAINER_TITLE.sub("", text) if _CONTAINER_TITLE.match(text) else text
    text = _LINE_PREFIX.sub("", text, count=1)
    return re.sub(r"\s+#+\s*$", "", text)


def _prose_word_claims(word: str) -> list[Claim]:
    """Code-like tokens written in prose without backticks: flags, variables, paths, keys."""
    word = word.strip(_PUNCTUATION.replace("<>", "")).rstrip(".")
    if _VERSION.fullmatch(word) and re.match(r"[<>=!~^]", word):
        return [_version_claim(word)]
    word = word.strip(_PUNCTUATION)
    word = word.rstrip(".") if not word.endswith("..") else word
    if len(word) < 2:
        return []
    flag = _LONG_FLAG.fullmatch(word.split("=", 1)[0])
    if flag:
        return [_claim(flag.group(0), "flag")]
    reference = _ENV_REF.fullmatch(word)
    if reference:
        return [_env_claim(_env_name(reference), word)]
    if _ENV_NAME.fullmatch(word):
        return [_env_claim(word)]
    if re.fullmatch(r"[vV]\d+(?:\.\d+)*", word) or (
        _VERSION.fullmatch(word) and word.count(".") >= 2
    ):
        return [_version_claim(word)]
    if re.search(r"[A-Za-z]", word) and _looks_like_path(word, code=False):
        return _path_claim(word)
    if word.startswith("tool.") or (
        _DOTTED_KEY.fullmatch(word)
        and word.count(".") >= 2
        and word == word.lower()
        and not _has_extension(word)
    ):
        return [_config_claim(word)]
    return []


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
            claims.append(_version_claim(value))
        elif unit or len(value.replace(",", "")) >= 2:
            claims.append(_claim(match.group(0), "number", value))
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
            claims.append(_claim(word, "name"))
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
            claims.append(_url_claim(match.group(2)))
        return f" {match.group(1)} "

    def link_tail(match: re.Match[str]) -> str:
        if re.match(r"(?i)[a-z][a-z0-9+.-]*://", match.group(1)):
            claims.append(_url_claim(match.group(1)))
        return " "

    text = _MD_LINK.sub(link, text)
    # The end of a link whose text began on an earlier line: `more text](../page.md)`.
    text = _LINK_TAIL.sub(link_tail, text)
    definition = _REFERENCE_DEFINITION.match(text)
    if definition:
        target = definition.group(1)
        if re.match(r"(?i)[a-z][a-z0-9+.-]*://", target):
            claims.append(_url_claim(target))
        return claims
    text = _REFERENCE_LINK.sub(r" \1 ", text)
    text = _FOOTNOTE.sub(" ", text)
    text = _take_urls(text, claims)  # before tags go: autolinks and href="..." hold URLs
    text = html.unescape(_HTML_TAG.sub(" ", text))
    kept = []
    for match in re.finditer(r"\S+", text):
        word_claims = _prose_word_claims(match.group(0))
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
            return self.holds(_config_claim(parent)) and self.has(leaf, "config-key")
        return False


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

_STOP_WORDS = _word_set(
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
