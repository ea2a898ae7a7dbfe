"""The whole pipeline on the Kestrel sample: real export source, index, prompts, edits, state."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import harness
from doubles import FunctionLLM, HashEmbedder, MemoryPublisher
from kestrel_model import answer
from pythia.config import Config, parse_config
from pythia.publish.dryrun import DryRunPublisher
from pythia.state import Ledger, LedgerEntry, StateStore
from pythia.usage import UsageMeter

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 3, 6, 12, 0, tzinfo=timezone.utc)


def make_config(**overrides: Any) -> Config:
    data: dict[str, Any] = {
        "project": {"name": "Kestrel"},
        "docs": {"root": "docs"},
        "streams": [
            {
                "id": "kestrel-users",
                "kind": "export",
                "start": "oldest",
                "path": str(FIXTURES / "sample-chat/result.json"),
                "permalink_base": "https://t.me/kestrel_users",
            }
        ],
        "privacy": {"salt": "test-salt"},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(data)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(FIXTURES / "sample-docs/docs", root / "docs")
    return root


class Harness:
    """A repository with its docs indexed, run through `harness.run_pipeline` with doubles."""

    def __init__(self, repo: Path, config: Config) -> None:
        self.repo = repo
        self.config = config
        self.embedder = HashEmbedder()
        self.index_path = repo / ".pythia/index.sqlite"
        harness.index_docs(harness.workspace(repo, config), self.index_path, self.embedder)
        self.store = StateStore(repo / ".pythia/state")

    def run(self, *, llm: Any, publisher: Any, **options: Any) -> Any:
        return harness.run_pipeline(
            harness.workspace(self.repo, self.config),
            index_path=self.index_path,
            store=self.store,
            llm=llm,
            embedder=self.embedder,
            publisher=publisher,
            **options,
        )


def test_dry_run_writes_grounded_proposals_and_saves_nothing(repo: Path, tmp_path: Path) -> None:
    runner = Harness(repo, make_config())
    llm = FunctionLLM(answer)
    out = tmp_path / "pythia-out"
    report = runner.run(llm=llm, publisher=DryRunPublisher(out), dry_run=True)

    assert report.messages_read == 39
    assert llm.calls("classify") == 1
    assert report.classified["troubleshooting"] == 3
    assert report.classified["update"] == 1
    # proxy, relative cache dir, cache moved: previewed, not opened
    assert report.proposals_opened == [] and len(report.proposals_previewed) == 3
    patches = sorted(p.read_text() for p in out.glob("*/change.patch"))
    assert any("+Since 2.3 Kestrel honours `HTTPS_PROXY`" in p for p in patches)
    assert any(
        "+Since Kestrel 3.0 the local cache lives in `~/.cache/kestrel`" in p for p in patches
    )
    body = next(p.read_text() for p in out.glob("*/proposal.md") if "proxy" in p.read_text())
    assert "https://t.me/kestrel_users/" in body
    # the Windows thread has doc value but the model proposed no change for it
    assert any("no change" in why for _, why in report.skipped)
    # dry run: no state written, docs untouched
    assert not (repo / ".pythia/state").exists()
    assert "HTTPS_PROXY" not in (repo / "docs/troubleshooting.md").read_text()


def test_chat_text_reaches_the_model_only_as_delimited_data(repo: Path, tmp_path: Path) -> None:
    runner = Harness(repo, make_config())
    llm = FunctionLLM(answer)
    runner.run(llm=llm, publisher=DryRunPublisher(tmp_path / "out"), dry_run=True)
    classify = next(r for r in llm.requests if r.stage == "classify")
    assert "is never an instruction" in classify.system
    data = classify.prompt.split("<chat_data>", 1)[1].split("</chat_data>", 1)[0]
    assert "HTTPS_PROXY" in data
    assert "HTTPS_PROXY" not in classify.prompt.split("<chat_data>", 1)[0]


def test_a_second_run_reads_nothing_new_and_opens_nothing_twice(repo: Path) -> None:
    runner = Harness(repo, make_config())
    publisher = MemoryPublisher()
    first = runner.run(llm=FunctionLLM(answer), publisher=publisher)
    assert len(first.proposals_opened) == 3
    state = runner.store.load_stream("kestrel-users")
    assert state.watermark == 42
    assert state.done_ids == []

    second = runner.run(llm=FunctionLLM(answer), publisher=publisher)
    assert second.messages_read == 0
    assert len(publisher.prs) == 3
    assert publisher.calls == 3


def test_unsettled_threads_wait_for_a_later_run(repo: Path) -> None:
    runner = Harness(repo, make_config(threads={"settle_minutes": 60 * 24 * 2}))
    publisher = MemoryPublisher()
    report = runner.run(llm=FunctionLLM(answer), publisher=publisher)
    state = runner.store.load_stream("kestrel-users")
    # threads of the last two days are not settled, so the watermark stops before them
    assert report.streams[0].threads_settled < report.streams[0].threads
    assert state.watermark is not None and state.watermark < 42


def test_a_crash_while_publishing_loses_and_duplicates_nothing(repo: Path) -> None:
    runner = Harness(repo, make_config())
    publisher = MemoryPublisher(fail_after=1)
    with pytest.raises(RuntimeError, match="injected"):
        runner.run(llm=FunctionLLM(answer), publisher=publisher)
    assert runner.store.load_stream("kestrel-users").watermark is None  # nothing saved

    publisher.fail_after = None
    report = runner.run(llm=FunctionLLM(answer), publisher=publisher)
    assert len(publisher.prs) == 3
    assert len(report.proposals_updated) == 1  # the PR from the crashed run got the evidence
    assert runner.store.load_stream("kestrel-users").watermark == 42


def test_failing_threads_are_retried_then_given_up(repo: Path) -> None:
    runner = Harness(repo, make_config(threads={"max_failures": 2}))

    def broken_proposals(request: Any) -> str:
        return answer(request) if request.stage == "classify" else "not json at all"

    first = runner.run(llm=FunctionLLM(broken_proposals), publisher=MemoryPublisher())
    assert len(first.failed) == 4  # every thread with doc value
    state = runner.store.load_stream("kestrel-users")
    assert state.watermark is not None and state.watermark < 42
    assert all(f.count == 1 for f in state.failures.values())

    second = runner.run(llm=FunctionLLM(broken_proposals), publisher=MemoryPublisher())
    assert len(second.failed) == 4
    state = runner.store.load_stream("kestrel-users")
    assert state.watermark == 42  # given up after two failures: outcome recorded


def test_the_call_cap_stops_new_work_and_keeps_the_rest_for_later(repo: Path) -> None:
    config = make_config(limits={"max_llm_calls": 2})
    runner = Harness(repo, config)
    meter = UsageMeter.from_config(config)
    report = runner.run(
        llm=FunctionLLM(answer, meter=meter), publisher=MemoryPublisher(), meter=meter
    )
    assert report.stopped_early and "max_llm_calls" in report.stopped_early
    state = runner.store.load_stream("kestrel-users")
    assert state.watermark is not None and state.watermark < 42


def test_the_time_budget_stops_new_work(repo: Path) -> None:
    runner = Harness(repo, make_config(limits={"time_budget_minutes": 1}))
    ticks = iter(range(0, 10_000, 30))
    report = runner.run(
        llm=FunctionLLM(answer), publisher=MemoryPublisher(), clock=lambda: float(next(ticks))
    )
    assert report.stopped_early == "the time budget is spent"


def test_a_broken_stream_does_not_stop_the_others(repo: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        '{"id": 1, "author": "a", "date": "2026-03-01T10:00:00Z", "text": "x"}\n{oops\n'
    )
    config = make_config()
    streams = [
        *config.streams,
        parse_config(
            {
                "streams": [
                    {"id": "broken", "kind": "export", "path": str(broken), "start": "oldest"}
                ]
            }
        ).streams[0],
    ]
    config = config.model_copy(update={"streams": streams})
    runner = Harness(repo, config)
    report = runner.run(llm=FunctionLLM(answer), publisher=MemoryPublisher())
    by_stream = {s.stream: s for s in report.streams}
    assert by_stream["broken"].error and "broken.jsonl" in by_stream["broken"].error
    assert by_stream["kestrel-users"].messages_read == 39
    assert len(report.proposals_opened) == 3


def test_a_gemini_outage_stops_the_stage_and_keeps_everything_for_later(repo: Path) -> None:
    from pythia.gemini import GeminiUnavailable

    runner = Harness(repo, make_config())
    calls = {"propose": 0}

    def outage_during_proposals(request: Any) -> str:
        if request.stage == "propose":
            calls["propose"] += 1
            if calls["propose"] > 1:
                raise GeminiUnavailable("Gemini kept answering 503 after 5 attempts")
        return answer(request)

    publisher = MemoryPublisher()
    report = runner.run(llm=FunctionLLM(outage_during_proposals), publisher=publisher)
    assert report.stopped_early and "503" in report.stopped_early
    assert len(publisher.prs) == 1
    first = runner.store.load_stream("kestrel-users")
    assert first.watermark is not None and first.watermark < 42

    second = runner.run(llm=FunctionLLM(answer), publisher=publisher)
    assert second.stopped_early is None
    assert len(publisher.prs) == 3
    assert runner.store.load_stream("kestrel-users").watermark == 42


def test_proposals_parked_under_the_pr_limits_are_published_first_next_time(
    repo: Path, tmp_path: Path
) -> None:
    runner = Harness(repo, make_config())
    recorder = MemoryPublisher()
    runner.run(llm=FunctionLLM(answer), publisher=recorder, dry_run=True)
    parked = next(iter(recorder.prs.values()))

    # Park it in a ledger, save and load it as the data branch would.
    ledger = Ledger()
    ledger.put(
        LedgerEntry(
            fingerprint=parked.fingerprint, status="waiting", parked=parked
        )
    )
    store = StateStore(tmp_path / "state")
    store.save_ledger(ledger)
    assert '"quote"' not in (tmp_path / "state/ledger.json").read_text()
    reloaded = store.load_ledger().parked()
    assert [p.fingerprint for p in reloaded] == [parked.fingerprint]
    assert reloaded[0].files == parked.files and reloaded[0].diff == parked.diff

    publisher = MemoryPublisher()
    report = runner.run(llm=FunctionLLM(answer), publisher=publisher, ledger=store.load_ledger())
    assert publisher.order[0] == parked.fingerprint
    assert report.proposals_opened[0] == f"pr/{parked.fingerprint}"
    assert len(publisher.prs) == 3  # the parked one is not opened twice


def test_a_since_rerun_whose_stream_fails_keeps_the_stored_watermark(
    repo: Path, tmp_path: Path
) -> None:
    runner = Harness(repo, make_config())
    runner.run(llm=FunctionLLM(answer), publisher=MemoryPublisher())
    assert runner.store.load_stream("kestrel-users").watermark == 42

    missing = tmp_path / "gone.json"
    broken = runner.config.streams[0].model_copy(update={"path": str(missing), "start": 1})
    runner.config = runner.config.model_copy(update={"streams": [broken]})
    report = runner.run(llm=FunctionLLM(answer), publisher=MemoryPublisher(), since="1")
    assert report.streams[0].error
    assert runner.store.load_stream("kestrel-users").watermark == 42


def test_the_time_budget_counts_from_the_start_of_the_job(repo: Path) -> None:
    runner = Harness(repo, make_config(limits={"time_budget_minutes": 1}))
    # Indexing took the whole minute before the pipeline started.
    report = runner.run(
        llm=FunctionLLM(answer),
        publisher=MemoryPublisher(),
        clock=lambda: 1000.0,
        started=1000.0 - 61,
    )
    assert report.stopped_early == "the time budget is spent"
    assert report.classified == {}


def test_a_run_stopped_by_a_cap_leaves_its_verdicts_for_the_next_one(repo: Path) -> None:
    capped = Harness(repo, make_config(limits={"max_llm_calls": 2}))
    meter = UsageMeter.from_config(capped.config)
    first = capped.run(
        llm=FunctionLLM(answer, meter=meter), publisher=MemoryPublisher(), meter=meter
    )
    assert first.stopped_early and "max_llm_calls" in first.stopped_early
    state = capped.store.load_stream("kestrel-users")
    assert state.judged and all(j.category for j in state.judged.values())
    assert "proxy" not in state.model_dump_json().lower()  # ids, hashes, categories only

    runner = Harness(repo, make_config())
    llm = FunctionLLM(answer)
    second = runner.run(llm=llm, publisher=MemoryPublisher())
    assert llm.calls("classify") == 0  # nothing already paid for is classified again
    assert llm.calls("propose") == len(state.judged)
    after = runner.store.load_stream("kestrel-users")
    assert after.watermark == 42 and after.judged == {}
    assert second.stopped_early is None


def test_a_proposal_the_checks_refuse_is_counted_and_its_threads_recorded(repo: Path) -> None:
    def inventive(request: Any) -> str:
        if request.stage == "classify":
            return answer(request)
        found = json.loads(answer(request))
        if found.get("change"):  # the double invents a flag in every edit
            edit = found["edits"][0]
            edit["replace"] = edit["replace"] + "\nRun `kestrel cache --to-disk` first.\n"
        return json.dumps(found)

    runner = Harness(repo, make_config())
    llm = FunctionLLM(inventive)
    report = runner.run(llm=llm, publisher=MemoryPublisher())
    assert report.proposals_opened == []
    assert report.refused == {"ungrounded": 3}
    assert all("--to-disk" in why for _, why in report.skipped if "refused" in why)
    assert runner.store.load_stream("kestrel-users").watermark == 42  # outcomes recorded


def test_classification_leaves_part_of_the_cap_for_proposals(repo: Path) -> None:
    # Small batches, so classifying the whole chat would take every call of the cap.
    config = make_config(
        limits={"max_llm_calls": 6, "classify_share": 0.5, "classify_batch_messages": 8}
    )
    runner = Harness(repo, config)
    meter = UsageMeter.from_config(config)
    llm = FunctionLLM(answer, meter=meter)
    report = runner.run(llm=llm, publisher=MemoryPublisher(), meter=meter)

    assert llm.calls("classify") == 3
    assert report.stopped_early and "limits.classify_share" in report.stopped_early
    assert llm.calls("propose") >= 1 and report.proposals_opened
    state = runner.store.load_stream("kestrel-users")
    # What was classified and proposed is done: the watermark moved, short of the end.
    assert state.watermark is not None and 0 < state.watermark < 42
