"""Grouping a run's doc-worthy conversations by the docs section they target, and their demand.

Repeated questions are demand, not repetition: every conversation about one section joins one
group, and a group costs at most one proposal call (none when it meets an open or waiting
proposal, or one maintainers already decided on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from .handles import member_handles
from .models import Demand, Evidence, Hit, Proposal, Thread, Verdict
from .propose import fingerprint, fuse, quote_of
from .questions import Questions
from .safety import defang_proposal, sanitize_for_publishing
from .state import TERMINAL, Ledger, LedgerEntry

EVIDENCE_PER_THREAD = 5  # messages of each new conversation shown on an open PR
# How deep in a conversation's results an open or waiting proposal's section may be found.
MATCH_DEPTH = 3
_RANK = {"open": 3, "waiting": 2}


@dataclass(frozen=True)
class Asked:
    """One doc-worthy conversation: its thread, the verdict, and the docs sections retrieved."""

    thread: Thread
    verdict: Verdict
    hits: tuple[Hit, ...]


@dataclass(frozen=True)
class Group:
    """The conversations of a run about one docs section, oldest first, and the ledger entry
    (open, waiting or decided proposal) already standing for that section, if any."""

    key: str
    asked: tuple[Asked, ...]
    entry: LedgerEntry | None = None

    @property
    def threads(self) -> tuple[Thread, ...]:
        return tuple(item.thread for item in self.asked)

    @property
    def demand(self) -> Demand:
        return Demand.of(self.threads)

    def hits(self, k: int) -> list[Hit]:
        """The members' results fused by reciprocal rank, best first."""
        return fuse([item.hits for item in self.asked], k=k)


def section_key(hit: Hit) -> str:
    """The key of a docs section: the fingerprint a proposal editing that section gets, from
    its file and its own heading (the index keeps the heading path, "Page > Section")."""
    return fingerprint(hit.path, hit.heading.rpartition(" > ")[2].strip().lower())


def _keys(hit: Hit) -> tuple[str, ...]:
    """`section_key`, then the key ledgers written before 0.3 recorded as a target (from the
    whole heading path), so their open proposals still draw their sections' conversations."""
    return (section_key(hit), fingerprint(hit.path, hit.heading.strip().lower()))


def group_by_section(asked: Sequence[Asked], *, ledger: Ledger) -> list[Group]:
    """Conversations grouped by the section they target: a section an open or waiting proposal
    stands for when one is among their first results, else their best result's section.
    (Joining a section another conversation of the run targets, when it is among the first
    results, was tried: it merged distinct gaps of neighbouring sections more often than it
    mended questions split across them.)

    `asked` comes in chat order; groups keep it (the one holding the oldest conversation first),
    so a run that stops early has finished the oldest work.
    """
    standing = _standing(ledger)
    members: dict[str, list[Asked]] = {}
    for item in asked:
        first = section_key(item.hits[0]) if item.hits else f"conversation:{item.thread.key}"
        key = _live(item, standing) or first
        members.setdefault(key, []).append(item)
    return [Group(key, tuple(items), standing.get(key)) for key, items in members.items()]


def _live(item: Asked, standing: Mapping[str, LedgerEntry], *, depth: int = MATCH_DEPTH) -> str:
    """The key of the first open or waiting proposal among the item's first `depth` results,
    or ''."""
    for hit in item.hits[:depth]:
        for key in _keys(hit):
            if key in standing and standing[key].status in _RANK:
                return key
    return ""


def join_made(
    group: Group, made: Mapping[str, LedgerEntry], *, questions: Questions | None = None
) -> list[Group]:
    """`group`, formed before this run made any proposal, split by the proposals made since:
    members whose best result is a section one of them stands for join it as evidence (no
    model call), and so do members whose best result is that section's page, when they rank
    the section next among the page's sections (`_live_on_its_page`); the others stay one
    group. (Joining on any of the first MATCH_DEPTH results,
    as an open PR of an earlier run is joined, was tried: a run's fresh proposals then drew
    distinct gaps of their pages, 7 of the 19 topics of tests/benchmarks/bench_demand.py.)"""
    if not made or (group.entry is not None and group.entry.status == "open"):
        return [group]
    joined: dict[str, list[Asked]] = {}
    rest: list[Asked] = []
    for item in group.asked:
        key = _live(item, made, depth=1) or _live_on_its_page(item, made, questions)
        if key:
            joined.setdefault(key, []).append(item)
        else:
            rest.append(item)
    parts = [Group(key, tuple(items), made[key]) for key, items in joined.items()]
    if rest:
        parts.append(Group(group.key, tuple(rest), group.entry))
    return parts


def _live_on_its_page(
    item: Asked, made: Mapping[str, LedgerEntry], questions: Questions | None
) -> str:
    """When the item's best result is a page's opening section (it found the page, not a
    section of it): the key of the page's next section among its first results, if a
    proposal of this run stands for it and (with `questions`) its conversations asked what
    this one asks, or ''. Retrieval that cannot tell pages apart finds a page's opening
    section too, for a question the page does not answer."""
    if not item.hits or " > " in item.hits[0].heading:
        return ""
    page = item.hits[0].path
    on_page = tuple(hit for hit in item.hits[1:MATCH_DEPTH] if hit.path == page)
    key = _live(replace(item, hits=on_page[:1]), made, depth=1)
    if (
        key
        and questions is not None
        and not questions.asks_like(item.verdict, made[key].fingerprint)
    ):
        return ""
    return key


def made_entry(proposal: Proposal, group: Group, ledger: Ledger) -> dict[str, LedgerEntry]:
    """The sections a proposal this run made stands for, and the entry to join for them: the
    ledger's where publishing recorded one, else (a dry run) one standing in as open. It
    stands for the section it edits and, as `remember` records, the group's own section when
    it edited that page."""
    entry = ledger.get(proposal.fingerprint) or LedgerEntry(
        fingerprint=proposal.fingerprint,
        status="open",
        title=proposal.title,
        category=proposal.category,
        confidence=proposal.confidence,
        paths=list(proposal.paths),
    )
    if entry.status not in _RANK:
        return {}
    keys = [proposal.fingerprint]
    if _found_the_page(group, proposal.paths):
        keys.append(group.key)
    return dict.fromkeys(keys, entry)


def _found_the_page(group: Group, edited: Sequence[str]) -> bool:
    """Whether the group's best result is on a page the proposal edited: only then does the
    proposal stand for the group's section too (a group that found the wrong page must not
    send later conversations there)."""
    top = group.hits(1)
    return bool(top) and top[0].path in edited


def _standing(ledger: Ledger) -> dict[str, LedgerEntry]:
    """Section key -> the entry standing for it: open before waiting before decided ones."""
    found: dict[str, LedgerEntry] = {}
    for entry in ledger.proposals.values():
        for key in (entry.fingerprint, *entry.targets):
            current = found.get(key)
            if current is None or _rank(entry) > _rank(current):
                found[key] = entry
    return found


def _rank(entry: LedgerEntry) -> int:
    return _RANK.get(entry.status, 1 if entry.status in TERMINAL else 0)


def below_threshold(demand: Demand, *, min_conversations: int, min_people: int) -> str:
    """Why a gap is not proposed yet (too few conversations or people), or ''."""
    talks, people = len(demand.conversations), len(demand.people)
    if talks < min_conversations:
        return (
            f"asked in {talks} of the {min_conversations} conversations "
            "publish.min_conversations asks for"
        )
    if people < min_people:
        return f"asked by {people} of the {min_people} people publish.min_people asks for"
    return ""


def evidence_for(
    group: Group,
    entry: LedgerEntry,
    *,
    quotes: bool,
    docs_domains: set[str],
    allowed_domains: Sequence[str],
) -> Proposal:
    """New conversations for an open PR, as the evidence comment shows them; no model call."""
    first = group.threads[0]
    messages = [m for thread in group.threads for m in thread.messages[:EVIDENCE_PER_THREAD]]
    summaries = dict.fromkeys(" ".join(i.verdict.summary.split()) for i in group.asked)
    members = member_handles(m for thread in group.threads for m in thread.messages)
    return defang_proposal(
        Proposal(
            fingerprint=entry.fingerprint,
            stream=first.stream,
            thread_key=first.key,
            category=entry.category or group.asked[0].verdict.category,
            title=entry.title,
            summary=sanitize_for_publishing(" ".join(s for s in summaries if s), members=members),
            reasoning="",
            confidence=entry.confidence,
            edits=(),
            diff="",
            files=(),
            evidence=tuple(
                Evidence(
                    message_id=m.id,
                    author=m.author,
                    sent_at=m.sent_at,
                    quote=quote_of(m.text, members=members) if quotes else "",
                    permalink=m.permalink,
                )
                for m in messages
            ),
            demand=group.demand.merged(entry.demand()),
        ),
        docs_domains=docs_domains,
        allowed_domains=allowed_domains,
    )


def remember(
    ledger: Ledger,
    fingerprint: str,
    group: Group,
    *,
    reason: str = "",
    earlier: LedgerEntry | None = None,
    edited: Sequence[str] | None = None,
) -> None:
    """Add the group's demand (ids and counts only) and its section to a ledger entry; with
    `reason`, a gap still waiting for demand gets an entry of its own. With `edited` (the
    pages a proposal changed), the group's section becomes one of the entry's only when the
    proposal edited that page: a group that found the wrong page must not send later
    conversations there too."""
    entry = ledger.get(fingerprint)
    if entry is None:
        if not reason:
            return  # a publisher that keeps no ledger (a dry run, a test double)
        top = group.hits(1)
        entry = LedgerEntry(
            fingerprint=fingerprint,
            status="waiting",
            category=group.asked[0].verdict.category,
            title=f"{top[0].path} › {top[0].heading}" if top and top[0].heading else "",
        )
    if reason:
        entry = entry.model_copy(update={"reason": reason})
    entry = entry.with_demand(group.demand)
    if earlier is not None:
        entry = entry.with_demand(earlier.demand())
    mine = edited is None or _found_the_page(group, edited)
    targets = {*entry.targets, *(earlier.targets if earlier else ())}
    if mine:
        targets.add(group.key)
    ledger.put(entry.model_copy(update={"targets": sorted(targets)}))
