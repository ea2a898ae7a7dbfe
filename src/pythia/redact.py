"""Finding and redacting secrets and personal data in text, with typed placeholders."""

from __future__ import annotations

import ipaddress
from typing import Literal

from .detectors import PLACEHOLDERS, Finding, candidates
from .handles import replace_handles

__all__ = ["PLACEHOLDERS", "Finding", "Origin", "find_sensitive", "redact", "replace_handles"]

# Where text comes from. Docs legitimately show `you@example.com`, the AWS sample key id and
# addresses from the documentation ranges; in chat those same shapes can carry a real person's
# name (`ivan.petrov@example.com`) and cost nothing to redact, so only docs get the exemption.
Origin = Literal["chat", "docs"]
# Higher first: when two findings overlap, the more dangerous kind keeps its span.
_PRIORITY = ("secret", "card", "iban", "email", "ip", "phone")


# ---------------------------------------------------------------- what docs may show

_RESERVED_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
_RESERVED_TLDS = (".example", ".test", ".invalid", ".localhost")
_DOC_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)


def _documented_sample(kind: str, value: str) -> bool:
    """Values reserved for documentation: RFC 2606 e-mail domains, the RFC 5737 and RFC 3849
    address ranges, and vendors' published sample keys (AKIAIOSFODNN7EXAMPLE)."""
    if kind == "email":
        domain = value.rpartition("@")[2].lower()
        return domain.endswith(_RESERVED_TLDS) or any(
            domain == reserved or domain.endswith("." + reserved)
            for reserved in _RESERVED_EMAIL_DOMAINS
        )
    if kind == "ip":
        address = ipaddress.ip_interface(value).ip
        return any(address in net for net in _DOC_NETWORKS if net.version == address.version)
    return kind == "secret" and "example" in value.lower()


def find_sensitive(text: str, *, origin: Origin = "chat") -> list[Finding]:
    """Every secret and piece of personal data in `text`, without overlaps, in text order.

    Text from chat gets no exemption. Text from the docs may keep values reserved for
    documentation (`you@example.com`, 192.0.2.1, AKIAIOSFODNN7EXAMPLE); real-looking keys and
    addresses are found there too.
    """
    found = [
        finding
        for finding in candidates(text)
        if origin != "docs"  # anything but docs gets the strict reading
        or not _documented_sample(finding.kind, text[finding.start : finding.end])
    ]
    chosen: list[Finding] = []
    for kind in _PRIORITY:
        # Within one kind the earliest, then longest, span wins; detector order breaks ties.
        ordered = sorted(
            (f for f in found if f.kind == kind), key=lambda f: (f.start, f.start - f.end)
        )
        for finding in ordered:
            if not any(finding.start < c.end and c.start < finding.end for c in chosen):
                chosen.append(finding)
    return sorted(chosen, key=lambda f: f.start)


def redact(text: str, *, origin: Origin = "chat") -> str:
    """`text` with every finding replaced by its typed placeholder ([email], [secret], ...);
    `origin` as for `find_sensitive`."""
    parts = []
    position = 0
    for finding in find_sensitive(text, origin=origin):
        parts.append(text[position : finding.start])
        parts.append(finding.placeholder)
        position = finding.end
    parts.append(text[position:])
    return "".join(parts)
