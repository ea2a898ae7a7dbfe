"""The claims of one word or span of a line, each with the forms of it that ground it.

A word of a command or of prose may be a flag, an environment variable, a path, a version, a
URL, a config key or (in code) a code word; URLs, and in code version specifiers, are spans
taken out of a line first. A `Claim` keeps the token as written and its needles: the spellings
under which it may have been said (`~/x` or `$HOME/x`, `0.5.0` or `0.5`, a URL with or without
its trailing slash).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .links import find_links

__all__ = [
    "KIND_NAMES",
    "SOFT_KINDS",
    "Claim",
    "code_word_claims",
    "config_claim",
    "env_claim",
    "is_env_name",
    "new_claim",
    "prose_word_claims",
    "take_urls",
    "take_version_specifiers",
    "url_claim",
    "version_claim",
    "word_set",
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


def word_set(words: str) -> frozenset[str]:
    """The words of a whitespace-separated list, as a set."""
    return frozenset(words.split())


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
_EXTENSIONS = word_set(
    """toml txt py pyi pyc lock cfg ini yaml yml json jsonc md mdx rst in whl sh bash zsh fish
    ps1 bat cmd exe gz tgz zip tar xz bz2 env pth so dll dylib ipynb csv html css js ts
    tsx jsx lua rs go c h cpp rb java kt swift xml sql log pem crt key conf svg png jpg jpeg
    gif webp pdf"""
)
# Words of shells and Python so common that no one has to say them first.
_TRIVIAL_CODE = word_set(
    """cd echo export set unset source sudo if then else elif fi for do done in while true false
    exit cat ls mkdir rm cp mv env which test import from def return class print as with None
    True False pass and or not is self lambda try except raise async await sh bash
    FROM RUN COPY ADD ENV WORKDIR CMD ENTRYPOINT ARG EXPOSE USER VOLUME"""
)
_PUNCTUATION = "\"'()[]{}<>*_,;:!?"


def new_claim(token: str, kind: str, *needles: str) -> Claim:
    """A claim grounded by any of `needles` (by the token itself when none is given)."""
    return Claim(token, kind, tuple(dict.fromkeys(needles or (token,))))


def _path_claim(word: str) -> list[Claim]:
    tagged = _IMAGE_TAG.fullmatch(word) or _AT_VERSION.fullmatch(word)
    if tagged:
        return [*_path_claim(tagged.group(1)), version_claim(tagged.group(2))]
    clean = word.rstrip("/") or word
    plain = clean.removeprefix("./") if clean.startswith("./") and len(clean) > 2 else clean
    needles = [plain, clean, plain.replace("\\", "/")]
    needles.append(re.sub(r"\$\{(\w+)\}", r"$\1", plain))
    needles.append(re.sub(r"\$(\w+)", r"${\1}", plain))
    for home in ("~", "$HOME", "${HOME}", "%USERPROFILE%"):
        if plain.startswith(home + "/"):
            rest = plain[len(home) :]
            needles.extend(other + rest for other in ("~", "$HOME", "${HOME}", "%USERPROFILE%"))
    return [new_claim(clean, "path", *needles)]


def version_claim(word: str) -> Claim:
    """A version or specifier (`>=0.5.0`), grounded by its number with or without trailing `.0`s."""
    number = word.lstrip("<>=!~^ ").lstrip("vV")
    bare = number.removesuffix(".*")
    needles = [bare]
    trimmed = bare
    while trimmed.endswith(".0") and trimmed.count(".") > 1:
        trimmed = trimmed[:-2]
        needles.append(trimmed)
    return new_claim(word, "version", *needles)


def _env_name(reference: re.Match[str]) -> str:
    return next(group for group in reference.groups() if group)


def is_env_name(name: str) -> bool:
    """Whether a name being assigned or keyed is an environment variable (`UV_CACHE_DIR=...`)."""
    return name.isupper() or bool(_ENV_NAME.fullmatch(name))


def env_claim(name: str, token: str | None = None) -> Claim:
    """An environment variable as written (`$HOME`, `%APPDATA%`), grounded by its bare name."""
    return new_claim(token or name, "env", name)


def config_claim(key: str) -> Claim:
    """A config key, dotted parts unquoted (`tool.uv."index-url"` is `tool.uv.index-url`)."""
    clean = ".".join(part.strip().strip("\"'") for part in key.split("."))
    return new_claim(clean, "config-key", clean)


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


def code_word_claims(word: str) -> list[Claim]:
    """The claims of one word of a command or code line."""
    word = word.strip(".:").lstrip("=@") if not word.startswith((".", "./", "../")) else word
    word = word.rstrip(":")
    if len(word) < 2 or not re.search(r"[A-Za-z0-9]", word):
        return []
    if word.startswith("--"):
        name, _, value = word.partition("=")
        claims = [new_claim(name, "flag")] if _LONG_FLAG.fullmatch(name) else []
        return claims + (code_word_claims(value) if value else [])
    if _SHORT_FLAG.fullmatch(word.partition("=")[0]):
        name, _, value = word.partition("=")
        return [new_claim(name, "flag"), *(code_word_claims(value) if value else [])]
    if word.startswith("-") and _NUMBER.fullmatch(word[1:]):
        return []
    assignment = _ASSIGNMENT.fullmatch(word)
    if assignment:
        name, value = assignment.groups()
        first = env_claim(name) if is_env_name(name) else new_claim(name, "code", name)
        return [first, *(code_word_claims(value) if value else [])]
    if _looks_like_path(word, code=True):
        return _path_claim(word)
    reference = _ENV_REF.fullmatch(word)
    if reference:
        return [env_claim(_env_name(reference), word)]
    if _ENV_NAME.fullmatch(word):
        return [env_claim(word)]
    if _VERSION.fullmatch(word):
        return [version_claim(word)]
    tagged = _AT_VERSION.fullmatch(word)
    if tagged:
        return [*code_word_claims(tagged.group(1)), version_claim(tagged.group(2))]
    if _NUMBER.fullmatch(word):
        return [new_claim(word, "number")] if len(word) >= 2 else []
    if "=" in word:
        return [claim for part in word.split("=") for claim in code_word_claims(part)]
    if word.startswith("tool.") or (
        _DOTTED_KEY.fullmatch(word) and word.count(".") >= 2 and word == word.lower()
    ):
        return [config_claim(word)]
    if word.startswith(".") and re.fullmatch(r"\.[A-Za-z]\w*_\w*", word):
        return code_word_claims(word[1:])  # `.status_code` after a call: an attribute
    if _IDENTIFIER.fullmatch(word) and word not in _TRIVIAL_CODE:
        # `NETRC`, `PATH`: an upper-case word in code is a name whose case matters.
        exact = word.isupper() and bool(re.search(r"[A-Z]{2}", word))
        return [Claim(word, "code", (word,), exact=exact)]
    return []


_SCHEME_URL = re.compile(r"(?i)(?<![\w+.-])[a-z][a-z0-9+.-]*://[^\s<>\"'`]+")


def take_urls(text: str, claims: list[Claim]) -> str:
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
            claims.append(url_claim(found))
        else:
            claims.extend(_path_claim(found.rstrip(".,;:!?)")))
        text = text[:start] + " " + text[end:]
    return text


def take_version_specifiers(text: str, claims: list[Claim]) -> str:
    """Add a claim for each version specifier in `text` (`>= 3.12`); return the text without."""

    def specifier(match: re.Match[str]) -> str:
        claims.append(version_claim(match.group(0).replace(" ", "")))
        return " "

    return _VERSION_SPEC.sub(specifier, text)


def url_claim(url: str) -> Claim:
    """A URL, grounded with or without its trailing slash, fragment, `.git` or `git+`."""
    url = url.rstrip(".,;:!?)>'\"")
    bare = url.rstrip("/")
    needles = [bare, url, bare.split("#", 1)[0].rstrip("/"), bare.removesuffix(".git")]
    if bare.startswith("git+"):
        needles.append(bare[4:])
    return new_claim(url, "url", *needles)


def prose_word_claims(word: str) -> list[Claim]:
    """Code-like tokens written in prose without backticks: flags, variables, paths, keys."""
    word = word.strip(_PUNCTUATION.replace("<>", "")).rstrip(".")
    if _VERSION.fullmatch(word) and re.match(r"[<>=!~^]", word):
        return [version_claim(word)]
    word = word.strip(_PUNCTUATION)
    word = word.rstrip(".") if not word.endswith("..") else word
    if len(word) < 2:
        return []
    flag = _LONG_FLAG.fullmatch(word.split("=", 1)[0])
    if flag:
        return [new_claim(flag.group(0), "flag")]
    reference = _ENV_REF.fullmatch(word)
    if reference:
        return [env_claim(_env_name(reference), word)]
    if _ENV_NAME.fullmatch(word):
        return [env_claim(word)]
    if re.fullmatch(r"[vV]\d+(?:\.\d+)*", word) or (
        _VERSION.fullmatch(word) and word.count(".") >= 2
    ):
        return [version_claim(word)]
    if re.search(r"[A-Za-z]", word) and _looks_like_path(word, code=False):
        return _path_claim(word)
    if word.startswith("tool.") or (
        _DOTTED_KEY.fullmatch(word)
        and word.count(".") >= 2
        and word == word.lower()
        and not _has_extension(word)
    ):
        return [config_claim(word)]
    return []
