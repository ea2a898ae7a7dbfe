"""What a proposal PR says: branch names, hidden markers, the PR body and evidence comments."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace

import jinja2

from ..models import Evidence, Proposal
from ..safety import clip

MAX_BODY_CHARS = 60_000
MAX_QUOTE_CHARS = 500
FINGERPRINT_RE = re.compile(r"<!-- pythia:fingerprint=([\w.-]+) -->")
THREAD_MARKER = "<!-- pythia:thread={key} -->"
EVIDENCE_MARKER = "<!-- pythia:evidence fingerprint={fingerprint} -->"


def branch_name(prefix: str, title: str, fingerprint: str) -> str:
    """`pythia/<slug>-<8 chars of fingerprint>`; the suffix alone finds the branch again."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40].rstrip("-") or "docs"
    return f"{prefix}{slug}-{fingerprint[:8]}"


def fingerprint_in(body: str | None) -> str | None:
    found = FINGERPRINT_RE.search(body or "")
    return found.group(1) if found else None


def _short(evidence: Sequence[Evidence]) -> list[Evidence]:
    return [
        replace(
            e, quote=clip(e.quote, MAX_QUOTE_CHARS)
        )
        for e in evidence
    ]


def render_capped(
    render: Callable[[list[Evidence], int], str], evidence: Sequence[Evidence]
) -> str:
    """Render with as much evidence as fits in GitHub's body limit, dropping the latest first."""
    items = _short(evidence)
    for keep in range(len(items), -1, -1):
        text = render(items[:keep], len(items) - keep)
        if len(text) <= MAX_BODY_CHARS:
            return text
    return text[: MAX_BODY_CHARS - 20] + "\n\n(truncated)\n"


def render_pr_body(
    proposal: Proposal, *, templates: jinja2.Environment, quotes: bool = True
) -> str:
    template = templates.get_template("pr_body.md.j2")

    def render(evidence: list[Evidence], omitted: int) -> str:
        return template.render(
            proposal=proposal,
            fingerprint=proposal.fingerprint,
            thread_key=proposal.thread_key,
            evidence=evidence,
            omitted=omitted,
            quotes=quotes,
        )

    return render_capped(render, proposal.evidence)


def render_evidence_comment(
    proposal: Proposal,
    *,
    previous_body: str | None,
    templates: jinja2.Environment,
    quotes: bool = True,
) -> str:
    """The evidence comment with this thread's section added (or replaced) after earlier ones."""
    sections = [
        s for s in _sections(previous_body) if not s.startswith(thread_marker(proposal.thread_key))
    ]
    template = templates.get_template("evidence_comment.md.j2")
    while True:

        def render(evidence: list[Evidence], omitted: int, previous: list[str] = sections) -> str:
            return template.render(
                proposal=proposal,
                fingerprint=proposal.fingerprint,
                thread_key=proposal.thread_key,
                previous=previous,
                evidence=evidence,
                omitted=omitted,
                quotes=quotes,
            )

        text = render_capped(render, proposal.evidence)
        if len(text) < MAX_BODY_CHARS or not sections:
            return text
        sections = sections[1:]  # the oldest reports give way to the newest


def thread_marker(key: str) -> str:
    return THREAD_MARKER.format(key=key)


def _sections(body: str | None) -> list[str]:
    parts = re.split(r"(?=<!-- pythia:thread=)", body or "")
    return [p.strip() for p in parts[1:] if p.strip()]
