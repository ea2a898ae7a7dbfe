"""Demand, not repetition: conversations about one docs section become one proposal, evidence
on its open PR, or recorded demand, never one model call each."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import harness
from doubles import FunctionLLM, HashEmbedder, ListSource, MemoryPublisher
from kestrel_model import answer
from pythia.config import Config, parse_config
from pythia.demand import Asked, below_threshold, group_by_section, section_key
from pythia.models import Demand, Hit, Message, Thread, Verdict
from pythia.prompts import environment
from pythia.publish.render import render_pr_body
from pythia.querycache import QueryCache
from pythia.state import Ledger, LedgerEntry, StateStore

FIXTURES = Path(__file__).parent / "fixtures"
START = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 3, 9, 12, 0, tzinfo=timezone.utc)
QUESTION = "our remote cache hangs behind the corporate proxy at work, any idea what to set?"
ANSWER = (
    "since 2.3 it honours HTTPS_PROXY and NO_PROXY; on certificate verify failed set "
    "KESTREL_CA_BUNDLE=/path/to/ca.pem, that fixed it for me"
)


def conversation(number: int, asker: str) -> list[Message]:
    """One proxy question and its answer, hours after the previous conversation."""
    at = START + timedelta(hours=6 * number)
    first = 10 * number + 1
    return [
        Message("tg", first, asker, at, QUESTION, permalink=f"https://t.me/c/{first}"),
        Message("tg", first + 1, "user-helper", at + timedelta(minutes=3), ANSWER, reply_to=first),
    ]


def config(**publish: Any) -> Config:
    return parse_config(
        {
            "project": {"name": "Kestrel"},
            "docs": {"root": "docs"},
            "privacy": {"salt": "test-salt"},
            "publish": publish,
        }
    )


class Runs:
    """Runs of the pipeline over one repository, its state and its ledger."""

    def __init__(self, root: Path, config: Config) -> None:
        shutil.copytree(FIXTURES / "sample-docs/docs", root / "docs")
        self.space = harness.workspace(root, config)
        self.embedder = HashEmbedder()
        self.index = root / "index.sqlite"
        harness.index_docs(self.space, self.index, self.embedder)
        self.store = StateStore(root / "state")
        self.ledger = Ledger()

    def run(self, messages: list[Message], publisher: Any, llm: FunctionLLM) -> Any:
        return harness.run_pipeline(
            self.space,
            index_path=self.index,
            store=self.store,
            ledger=self.ledger,
            llm=llm,
            embedder=self.embedder,
            publisher=publisher,
            sources=[ListSource("tg", messages)],
            now=NOW,
        )


def test_three_conversations_about_one_section_make_one_proposal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pythia.search import SearchIndex

    prepared: list[list[str]] = []
    prepare = SearchIndex.prepare

    def spy(index: SearchIndex, queries: list[str], **options: Any) -> None:
        prepared.append(list(dict.fromkeys(queries)))
        prepare(index, queries, **options)

    monkeypatch.setattr(SearchIndex, "prepare", spy)
    runs = Runs(tmp_path, config())
    llm = FunctionLLM(answer)
    publisher = MemoryPublisher()
    messages = [*conversation(1, "user-a"), *conversation(2, "user-b"), *conversation(3, "user-a")]
    report = runs.run(messages, publisher, llm)

    assert llm.calls("propose") == 1
    assert len(report.proposals_opened) == 1
    (proposal,) = publisher.prs.values()
    assert proposal.demand is not None
    assert len(proposal.demand.conversations) == 3
    assert proposal.demand.people == ("user-a", "user-b")  # who asked; not who answered
    body = render_pr_body(proposal, templates=environment())
    assert "Asked in 3 conversations by 2 people since 2026-03-01" in body
    # every conversation's outcome is recorded: the watermark passes all of them
    assert runs.store.load_stream("tg").watermark == 32
    # the queries of the three conversations were embedded in one request
    query_calls = [
        c
        for c, task in zip(runs.embedder.calls, runs.embedder.tasks, strict=True)
        if task == "query"
    ]
    assert len(query_calls) == 1
    # and their vectors ranked together before the searches
    assert prepared == query_calls


def test_a_conversation_on_an_open_prs_section_is_evidence_without_a_model_call(
    tmp_path: Path,
) -> None:
    runs = Runs(tmp_path, config())
    first = MemoryPublisher()
    runs.run(conversation(1, "user-a"), first, FunctionLLM(answer))
    (proposal,) = first.prs.values()
    # What GitHubPublisher and the pipeline record for it (this double keeps no ledger).
    runs.ledger.put(
        LedgerEntry(fingerprint=proposal.fingerprint, status="open", pr_number=7,
                    title=proposal.title, thread_keys=["tg:11"],
                    targets=[section_key(proposal.sources[0])])
    )  # fmt: skip

    llm, later = FunctionLLM(answer), MemoryPublisher()
    report = runs.run([*conversation(1, "user-a"), *conversation(2, "user-b")], later, llm)
    assert llm.calls("propose") == 0
    (evidence,) = [p for p in later_proposals(later)]
    assert evidence.fingerprint == proposal.fingerprint and evidence.edits == ()
    assert evidence.thread_key == "tg:21" and {e.message_id for e in evidence.evidence} == {21, 22}
    assert report.proposals_opened == [f"pr/{proposal.fingerprint}"]  # a new double: "opened"
    entry = runs.ledger.get(proposal.fingerprint)
    assert entry is not None and entry.thread_keys == ["tg:11", "tg:21"]


def later_proposals(publisher: MemoryPublisher) -> list[Any]:
    return list(publisher.prs.values())


def test_recurring_gaps_only_wait_for_demand_then_become_one_proposal(tmp_path: Path) -> None:
    runs = Runs(tmp_path, config(min_conversations=2, min_people=2))
    llm, publisher = FunctionLLM(answer), MemoryPublisher()
    first = runs.run(conversation(1, "user-a"), publisher, llm)
    assert llm.calls("propose") == 0 and publisher.calls == 0
    assert any("waiting for more demand" in why for _, why in first.skipped)
    (waiting,) = runs.ledger.proposals.values()
    assert waiting.status == "waiting" and waiting.parked is None
    assert waiting.thread_keys == ["tg:11"] and "publish.min_conversations" in waiting.reason
    assert "proxy" not in waiting.model_dump_json().lower()  # ids and docs text only

    second = runs.run([*conversation(1, "user-a"), *conversation(2, "user-b")], publisher, llm)
    assert llm.calls("propose") == 1 and len(second.proposals_opened) == 1
    (proposal,) = publisher.prs.values()
    assert proposal.demand is not None and len(proposal.demand.conversations) == 2


def test_a_section_maintainers_rejected_costs_no_model_call(tmp_path: Path) -> None:
    runs = Runs(tmp_path, config())
    first = MemoryPublisher()
    runs.run(conversation(1, "user-a"), first, FunctionLLM(answer))
    (proposal,) = first.prs.values()
    runs.ledger.put(
        LedgerEntry(
            fingerprint=proposal.fingerprint,
            status="rejected",
            targets=[section_key(proposal.sources[0])],
        )
    )
    llm = FunctionLLM(answer)
    report = runs.run([*conversation(1, "user-a"), *conversation(2, "user-b")], first, llm)
    assert llm.calls("propose") == 0
    assert any("maintainers already rejected" in why for _, why in report.skipped)


def hit(path: str, heading: str) -> Hit:
    return Hit(path, heading, heading.lower(), 1.0, "text")


def asked(number: int, *hits: Hit, queries: tuple[str, ...] = ()) -> Asked:
    thread = Thread("tg", tuple(conversation(number, f"user-{number}")))
    verdict = Verdict(thread.key, "question", True, "s", "r", queries=queries)
    return Asked(thread, verdict, hits)


def test_grouping_prefers_a_standing_proposal_among_the_first_results() -> None:
    proxy, cache = hit("docs/troubleshooting.md", "Proxy"), hit("docs/cache.md", "Location")
    ledger = Ledger()
    ledger.put(LedgerEntry(fingerprint=section_key(cache), status="open"))
    groups = group_by_section(
        [asked(1, proxy), asked(2, proxy, cache), asked(3, cache)], ledger=ledger
    )
    assert [(g.key, [a.thread.key for a in g.asked]) for g in groups] == [
        (section_key(proxy), ["tg:11"]),
        (section_key(cache), ["tg:21", "tg:31"]),
    ]
    assert groups[1].entry is not None and groups[1].entry.status == "open"


def test_thresholds_name_the_setting_to_change() -> None:
    demand = Demand(("tg:1",), ("user-a",), START, START)
    assert below_threshold(demand, min_conversations=1, min_people=1) == ""
    assert "publish.min_conversations" in below_threshold(demand, min_conversations=3, min_people=1)
    assert "publish.min_people" in below_threshold(demand, min_conversations=1, min_people=2)


def test_the_query_cache_asks_once_for_each_query() -> None:
    inner = HashEmbedder()
    cache = QueryCache(inner)
    cache.warm(["a b", "c d", "a b"])
    assert cache.embed(["c d"], task="query") == [inner.vector("c d")]
    assert inner.calls == [["a b", "c d"]]
    cache.embed(["doc"], task="document")  # documents are not cached
    assert inner.calls[-1] == ["doc"]


@pytest.mark.parametrize("count", [1, 2])
def test_demand_sentence_counts(count: int) -> None:
    demand = Demand(tuple(f"tg:{n}" for n in range(count)), ("user-a",), START, START)
    assert demand.sentence().startswith(f"asked in {count} conversation")


def test_a_group_that_found_the_wrong_page_does_not_send_later_conversations_there() -> None:
    from pythia.demand import remember

    env_vars, plugins = hit("docs/configuration.md", "Environment"), hit("docs/plugins.md", "X")
    ledger = Ledger()
    ledger.put(LedgerEntry(fingerprint="p", status="open"))
    group = group_by_section([asked(1, env_vars)], ledger=ledger)[0]
    remember(ledger, "p", group, edited=["docs/plugins.md"])
    entry = ledger.get("p")
    assert entry is not None and entry.targets == [] and entry.thread_keys == ["tg:11"]
    remember(ledger, "p", group_by_section([asked(2, plugins)], ledger=ledger)[0],
             edited=["docs/plugins.md"])  # fmt: skip
    entry = ledger.get("p")
    assert entry is not None and entry.targets == [section_key(plugins)]


def test_a_sections_key_is_the_fingerprint_a_proposal_editing_it_gets() -> None:
    from pythia.propose import fingerprint, section_of

    page = "# The local cache\n\nIntro.\n\n## Where the cache lives\n\nIn ~/.kestrel/cache.\n"
    nested = hit("docs/cache.md", "The local cache > Where the cache lives")
    edited = section_of(page, "In ~/.kestrel/cache.")
    assert section_key(nested) == fingerprint("docs/cache.md", edited)


def test_an_open_proposal_recorded_under_the_whole_heading_path_still_draws_its_section() -> None:
    from pythia.propose import fingerprint

    nested = hit("docs/cache.md", "The local cache > Where the cache lives")
    legacy = fingerprint("docs/cache.md", "the local cache > where the cache lives")
    ledger = Ledger()
    ledger.put(LedgerEntry(fingerprint="p", status="open", targets=[legacy]))
    (group,) = group_by_section([asked(1, nested)], ledger=ledger)
    assert group.entry is not None and group.entry.fingerprint == "p"


def test_a_later_group_whose_best_section_a_proposal_of_the_run_edited_joins_it() -> None:
    from pythia.demand import join_made, made_entry

    clearing, invalidated = hit("docs/cache.md", "Clearing"), hit("docs/cache.md", "Invalidated")
    proxy = hit("docs/remote-cache.md", "Proxy")
    first, later = group_by_section(
        [asked(1, clearing, invalidated), asked(2, invalidated), asked(3, proxy, invalidated)],
        ledger=Ledger(),
    )[0:2]
    assert join_made(later, {}) == [later]
    # The first group's proposal edited the section the later conversation found first.
    made = made_entry(
        proposal_of(section_key(invalidated), paths=("docs/cache.md",)), first, Ledger()
    )
    assert set(made) == {section_key(invalidated), section_key(clearing)}
    (joined,) = join_made(later, made)
    assert joined.entry is not None and joined.entry.status == "open"
    assert [a.thread.key for a in joined.asked] == ["tg:21"]
    # Only a best result joins: conversation 3 found the edited section second, and stays.
    (rest,) = group_by_section([asked(3, proxy, invalidated)], ledger=Ledger())
    assert join_made(rest, made) == [rest]


def test_a_later_conversation_that_found_only_the_page_joins_its_section_made_in_the_run() -> None:
    from pythia.demand import join_made, made_entry

    page, parallel = hit("docs/cli.md", "Command line"), hit("docs/cli.md", "Command line > Jobs")
    other_page = hit("docs/configuration.md", "Configuration")
    first = group_by_section([asked(1, parallel)], ledger=Ledger())[0]
    made = made_entry(proposal_of(section_key(parallel), paths=("docs/cli.md",)), first, Ledger())
    # Best result the page's opening section, the section made among the first results.
    (later,) = group_by_section([asked(2, page, other_page, parallel)], ledger=Ledger())
    (joined,) = join_made(later, made)
    assert joined.entry is not None and joined.key == section_key(parallel)
    # Not when that section is further down, on another page, or after a section of the page.
    for hits in (
        (page, other_page, hit("docs/x.md", "X"), parallel),
        (hit("docs/other.md", "Other"), parallel),
        (hit("docs/cli.md", "Command line > Shell completion"), parallel),
        (page, hit("docs/cli.md", "Command line > Shell completion"), parallel),
    ):
        (stays,) = group_by_section([asked(3, *hits)], ledger=Ledger())
        assert join_made(stays, made) == [stays]


def test_a_conversation_that_found_only_the_page_joins_only_if_it_asks_the_same() -> None:
    from pythia.demand import join_made, made_entry
    from pythia.questions import Questions

    vectors = {"limit parallel jobs": [1.0, 0.0], "how many at once": [0.9, 0.3]}
    vectors["alpine binary"] = [0.0, 1.0]
    questions = Questions(lambda texts: [vectors[text] for text in texts])
    page, parallel = hit("docs/cli.md", "Command line"), hit("docs/cli.md", "Command line > Jobs")
    first = group_by_section(
        [asked(1, parallel, queries=("limit parallel jobs",))], ledger=Ledger()
    )
    made = made_entry(
        proposal_of(section_key(parallel), paths=("docs/cli.md",)), first[0], Ledger()
    )
    questions.remember(section_key(parallel), [item.verdict for item in first[0].asked])

    same = group_by_section(
        [asked(2, page, parallel, queries=("how many at once",))], ledger=Ledger()
    )
    other = group_by_section(
        [asked(3, page, parallel, queries=("alpine binary",))], ledger=Ledger()
    )

    (joined,) = join_made(same[0], made, questions=questions)
    assert joined.entry is not None
    # Retrieval that could not tell pages apart sent it here: it stays a group of its own.
    assert join_made(other[0], made, questions=questions) == other
    # A best result that is the made section itself joins as before, by retrieval alone.
    (direct,) = group_by_section([asked(4, parallel, queries=("alpine binary",))], ledger=Ledger())
    assert join_made(direct, made, questions=questions)[0].entry is not None


def proposal_of(fingerprint: str, *, paths: tuple[str, ...]) -> Any:
    from pythia.models import Edit, Proposal

    return Proposal(
        fingerprint=fingerprint, stream="tg", thread_key="tg:11", category="question",
        title="t", summary="s", reasoning="r", confidence=0.9, diff="", files=(),
        edits=tuple(Edit(path, "old", "new") for path in paths),
    )  # fmt: skip
