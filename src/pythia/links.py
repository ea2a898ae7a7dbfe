"""Finding links in text, in every form a reader or a shell would follow, and the domain rule.

One finder serves the edit rules, the docs' own domains and the defanging of published text,
so a form one of them misses cannot slip past the others: URLs with a scheme, protocol-relative
targets (`[x](//host/a)`, `[x]: //host/a`), `www.` hosts, and scheme-less hosts with a path or a
port (`curl -sSL host.example/i.sh`, `pip install -i pypi.example/simple`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = rf"(?:{_LABEL}\.)+[a-z][a-z0-9-]{{1,62}}"
_TAIL = r"[^\s<>\"'`]*"

_URL = re.compile(r"(?i)\b(?:https?|ftp)://[^\s<>\"'`]+")
# `//host/path` as a link target, a reference definition or a word of its own.
_PROTOCOL_RELATIVE = re.compile(rf"(?i)(?<![\w:/])//{_HOST}{_TAIL}")
_WWW = re.compile(rf"(?i)(?<![\w./@-])www\.{_HOST}(?::\d+)?{_TAIL}")
# A scheme-less host counts when a path or a port follows it, or, written in lower case, when
# its last label is a well-known top-level domain that is not also a file extension
# (`setup.py`, `mkdocs.yml` and `ASP.NET` are not hosts; `evil.example/i.sh` is).
_BARE = re.compile(rf"(?i)(?<![\w./@:%+~-])(?P<host>{_HOST})(?P<rest>(?::\d+)?/{_TAIL}|:\d+\b)?")
_BARE_IP = re.compile(r"(?<![\w./:-])\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?/[^\s<>\"'`]*")
_FILE_EXTENSIONS = frozenset(
    [
        "md",
        "mdx",
        "rst",
        "txt",
        "py",
        "pyi",
        "js",
        "ts",
        "tsx",
        "jsx",
        "json",
        "yml",
        "yaml",
        "toml",
        "ini",
        "cfg",
        "conf",
        "lock",
        "sh",
        "bash",
        "zsh",
        "ps1",
        "rs",
        "go",
        "rb",
        "java",
        "kt",
        "c",
        "h",
        "cpp",
        "hpp",
        "cs",
        "php",
        "pl",
        "sql",
        "csv",
        "xml",
        "html",
        "htm",
        "css",
        "scss",
        "png",
        "jpg",
        "jpeg",
        "gif",
        "svg",
        "ico",
        "pdf",
        "zip",
        "gz",
        "tgz",
        "bz2",
        "xz",
        "whl",
        "tar",
        "log",
        "env",
        "bat",
        "exe",
        "dll",
        "so",
        "dylib",
        "jar",
        "war",
        "mod",
        "sum",
        "gradle",
        "ipynb",
        "lua",
        "r",
        "swift",
        "dart",
        "vue",
        "ex",
        "exs",
        "erl",
        "hs",
        "ml",
        "scala",
        "clj",
        "nix",
        "tf",
        "hcl",
        "dockerfile",
    ]
)
# Top-level domains a bare host may end in without a path: the common generic ones, country
# codes often seen in developer links, and the names reserved for documentation and tests.
_TLDS = frozenset(
    [
        "com",
        "org",
        "net",
        "io",
        "dev",
        "app",
        "ai",
        "co",
        "info",
        "biz",
        "xyz",
        "cloud",
        "online",
        "site",
        "tech",
        "me",
        "tv",
        "gg",
        "page",
        "run",
        "sh",
        "example",
        "test",
        "invalid",
        "localhost",
        "local",
        "internal",
        "edu",
        "gov",
        "mil",
        "int",
        "us",
        "uk",
        "de",
        "fr",
        "ru",
        "cn",
        "jp",
        "eu",
        "nl",
        "be",
        "ch",
        "at",
        "se",
        "no",
        "fi",
        "dk",
        "pl",
        "cz",
        "es",
        "it",
        "pt",
        "br",
        "ca",
        "au",
        "nz",
        "to",
        "ly",
        "su",
    ]
)


@dataclass(frozen=True)
class Link:
    """A link found in text: where it is, its host (lower case, no 'www.'), and its form."""

    start: int
    end: int
    host: str
    form: str  # "url", "protocol-relative", "www" or "bare"


def normal_domain(domain: str) -> str:
    domain = domain.strip().strip(".").lower()
    return domain[4:] if domain.startswith("www.") else domain


def host_of(url: str) -> str:
    """The host of a URL, protocol-relative link or bare host, normalised."""
    rest = url.split("://", 1)[1] if "://" in url else url.lstrip("/")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    host = authority.rpartition("@")[2]
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    else:
        host = host.split(":", 1)[0]
    return normal_domain(host)


def _trimmed(text: str, start: int, end: int) -> int:
    while end > start and text[end - 1] in ".,;:!?)]":
        end -= 1
    return end


def _bare_is_host(host: str, rest: str | None) -> bool:
    last = host.rsplit(".", 1)[-1].lower()
    if rest:
        return last not in _FILE_EXTENSIONS or rest.startswith(":")
    return host == host.lower() and last in _TLDS and last not in _FILE_EXTENSIONS


def find_links(text: str) -> list[Link]:
    """Every link in `text`, in order, without overlaps (the longest form wins)."""
    found: list[Link] = []
    taken: list[tuple[int, int]] = []

    def add(start: int, end: int, form: str) -> None:
        end = _trimmed(text, start, end)
        if any(start < t_end and t_start < end for t_start, t_end in taken):
            return
        host = host_of(text[start:end])
        if host:
            found.append(Link(start, end, host, form))
            taken.append((start, end))

    for match in _URL.finditer(text):
        add(match.start(), match.end(), "url")
    for match in _PROTOCOL_RELATIVE.finditer(text):
        add(match.start(), match.end(), "protocol-relative")
    for match in _WWW.finditer(text):
        add(match.start(), match.end(), "www")
    for match in _BARE.finditer(text):
        if _bare_is_host(match.group("host"), match.group("rest")):
            add(match.start(), match.end(), "bare")
    for match in _BARE_IP.finditer(text):
        add(match.start(), match.end(), "bare")
    return sorted(found, key=lambda link: link.start)


def domains(text: str) -> set[str]:
    return {link.host for link in find_links(text)}


def link_domains(texts: Iterable[str]) -> set[str]:
    """The domains the docs already link to (lower case, without 'www.')."""
    found: set[str] = set()
    for text in texts:
        found |= domains(text)
    return found


def domain_allowed(domain: str, *, docs_domains: set[str], allowed: Sequence[str]) -> bool:
    """The one domain rule: a domain the docs use, or one the config allows (subdomains too)."""
    if domain in {normal_domain(d) for d in docs_domains}:
        return True
    for entry in allowed:
        base = normal_domain(entry)
        if base and (domain == base or domain.endswith("." + base)):
            return True
    return False


def defang(text: str, *, docs_domains: set[str], allowed: Sequence[str]) -> str:
    """Links to domains neither the docs nor the config use become inert text
    (`hxxps://evil[.]example/x`, `evil[.]example/i.sh`): a PR must not send readers, or their
    shells, to a stranger's site."""
    pieces = []
    position = 0
    for link in find_links(text):
        if domain_allowed(link.host, docs_domains=docs_domains, allowed=allowed):
            continue
        pieces.append(text[position : link.start])
        pieces.append(_inert(text[link.start : link.end], link))
        position = link.end
    pieces.append(text[position:])
    return "".join(pieces)


def _inert(found: str, link: Link) -> str:
    if link.form == "url":
        scheme, _, rest = found.partition("://")
        authority, sep, path = rest.partition("/")
        return f"{scheme.replace('t', 'x', 2)}://{authority.replace('.', '[.]')}{sep}{path}"
    prefix = "//" if link.form == "protocol-relative" else ""
    body = found[len(prefix) :]
    authority, sep, path = body.partition("/")
    return f"{prefix}{authority.replace('.', '[.]')}{sep}{path}"
