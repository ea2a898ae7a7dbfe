"""Backfills through the Gemini Batch API: sent by one run, collected by the next.

The cassettes hold the Batch API's wire format (batchGenerateContent, then batches.get) as
google-genai 3.x sends and reads it; tests/cassettes/record_backfill.py writes them and says
how to record the real API instead.
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from doubles import FunctionLLM, MemoryPublisher
from kestrel_model import answer
from pythia import gemini
from pythia.backfill import Backfill, JobResult
from pythia.config import Config
from pythia.gemini_batch import GeminiBatches
from pythia.models import Usage
from pythia.ports import Generation
from pythia.publish.dryrun import DryRunPublisher
from pythia.usage import UsageMeter, cost_usd
from test_pipeline import FIXTURES, NOW, Harness, make_config

JOB = "batches/pythia-kestrel-backfill-0001"
PROPOSE_JOB = "batches/pythia-kestrel-backfill-0002"
# What the sample's chat and the docs text its prompts quote say (headings are kept).
CHAT_AND_DOCS = ("proxy", "kestrel_cache_dir", "~/.cache", "filename too long", "certificate",
                 "relative", "own folder inside it")  # fmt: skip


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    monkeypatch.delenv("GOOGLE_GEMINI_BASE_URL", raising=False)
    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "sample-docs/docs", repo / "docs")
    return Harness(repo, make_config())


def batches(config: Config, meter: UsageMeter, *, always: bool = True) -> Backfill:
    client = gemini.make_client("test-gemini-key", api_version="v1beta")
    policy = gemini.RetryPolicy(attempts=2, sleep=lambda _: None)
    return Backfill(
        GeminiBatches(
            client, call=lambda send: gemini.call_with_retries(send, policy=policy, model="b")
        ),
        config=config,
        meter=meter,
        always=always,
    )


def state_text(runner: Harness) -> str:
    return (runner.store.directory / "kestrel-users.json").read_text(encoding="utf-8")


@pytest.mark.vcr
def test_a_backfill_round_trips_through_the_batch_api(runner: Harness, vcr: Any) -> None:
    llm = FunctionLLM(answer)
    sent = runner.run(
        llm=llm, publisher=MemoryPublisher(), backfill=batches(runner.config, UsageMeter())
    )

    # The first run sent every conversation to one batch job and paid for no classify call.
    assert llm.calls("classify") == 0 and llm.calls("propose") == 0
    waiting = [key for key, reason in sent.skipped if "waiting for its batch job" in reason]
    assert len(waiting) == 13 and sent.proposals_opened == []
    saved = json.loads(state_text(runner))
    [job] = saved["pending_batches"]
    assert job["name"] == JOB and sorted(job["digests"]) == sorted(waiting)
    assert job["requests"] == {"classify-1": job["requests"]["classify-1"]}
    assert "proxy" not in state_text(runner).lower()  # ids and hashes, never the chat
    # The waiting threads' messages are not done: the next run reads them again.
    first = min(int(key.rsplit(":", 1)[1]) for key in waiting)
    assert (saved["watermark"] or 0) < first
    assert not set(saved["done_ids"]) & {int(key.rsplit(":", 1)[1]) for key in waiting}

    meter = UsageMeter.from_config(runner.config)
    later = runner.run(
        llm=llm, publisher=MemoryPublisher(), meter=meter,
        backfill=batches(runner.config, meter, always=False), now=NOW + timedelta(hours=3),
    )  # fmt: skip

    # The next run took the verdicts from the job and wrote the proposals synchronously.
    assert llm.calls("classify") == 0 and llm.calls("propose") == 4
    assert len(later.proposals_opened) == 3
    assert later.classified == {"no-doc-value": 8, "question": 1, "troubleshooting": 3,
                                "update": 1}  # fmt: skip
    assert json.loads(state_text(runner))["pending_batches"] == []
    classify = meter.totals()["classify"]
    full_price = (classify.input_tokens * 0.30 + classify.output_tokens * 2.50) / 1_000_000
    assert classify.calls == 1 and classify.cost_usd == pytest.approx(full_price / 2)
    assert vcr.all_played


@pytest.mark.vcr
def test_an_expired_job_falls_back_to_the_normal_path(runner: Harness, vcr: Any) -> None:
    llm = FunctionLLM(answer)
    runner.run(llm=llm, publisher=MemoryPublisher(), backfill=batches(runner.config, UsageMeter()))
    assert llm.calls("classify") == 0

    later = runner.run(
        llm=llm, publisher=MemoryPublisher(),
        backfill=batches(runner.config, UsageMeter(), always=False), now=NOW + timedelta(days=2),
    )  # fmt: skip

    assert llm.calls("classify") == 1  # classified the usual way, in the same run
    assert len(later.proposals_opened) == 3
    assert json.loads(state_text(runner))["pending_batches"] == []
    assert vcr.all_played


class Pending:
    """A batch API whose job never finishes."""

    def __init__(self) -> None:
        self.polls = 0

    def submit(self, requests: Any, *, model: str, label: str) -> str:
        return "batches/slow"

    def poll(self, name: str) -> JobResult:
        self.polls += 1
        return JobResult("pending")


def test_threads_wait_for_a_running_job_and_are_not_sent_twice(runner: Harness) -> None:
    api, llm = Pending(), FunctionLLM(answer)
    backfill = Backfill(api, config=runner.config, meter=UsageMeter(), always=True)
    runner.run(llm=llm, publisher=MemoryPublisher(), backfill=backfill)
    report = runner.run(llm=llm, publisher=MemoryPublisher(), backfill=backfill)

    assert api.polls == 1 and llm.calls("classify") == 0
    assert len(json.loads(state_text(runner))["pending_batches"]) == 1
    assert sum("waiting for its batch job" in reason for _, reason in report.skipped) == 13


def test_a_job_older_than_the_api_keeps_them_is_given_up(runner: Harness) -> None:
    api, llm = Pending(), FunctionLLM(answer)
    backfill = Backfill(api, config=runner.config, meter=UsageMeter(), always=True)
    runner.run(llm=llm, publisher=MemoryPublisher(), backfill=backfill)
    backfill.always = False
    runner.run(llm=llm, publisher=MemoryPublisher(), backfill=backfill, now=NOW + timedelta(days=4))

    assert llm.calls("classify") == 1
    assert json.loads(state_text(runner))["pending_batches"] == []


def test_only_more_threads_than_the_threshold_go_to_a_batch_job(runner: Harness) -> None:
    backfill = Backfill(Pending(), config=runner.config, meter=UsageMeter())
    limit = runner.config.limits.backfill_threads
    assert not backfill.wanted(limit) and backfill.wanted(limit + 1)
    assert Backfill(Pending(), config=runner.config, meter=UsageMeter(), always=True).wanted(1)
    assert not backfill.wanted(0)


@pytest.mark.vcr(match_on=["method", "scheme", "host", "port", "path", "query", "body"])
def test_the_batch_request_is_what_the_api_documents(
    monkeypatch: pytest.MonkeyPatch, vcr: Any
) -> None:
    from pydantic import BaseModel

    from pythia.ports import GenerateRequest

    class Reply(BaseModel):
        answer: str

    monkeypatch.delenv("GOOGLE_GEMINI_BASE_URL", raising=False)
    client = gemini.make_client("test-gemini-key", api_version="v1beta")
    request = GenerateRequest(
        stage="classify", model="gemini-3.5-flash-lite", system="SYS", prompt="PROMPT",
        schema=Reply,
    )  # fmt: skip

    name = GeminiBatches(client, call=lambda send: send()).submit(
        {"classify-1": request}, model="gemini-3.5-flash-lite", label="pythia 2026-03-06 12:00"
    )

    assert name == "batches/hand-written-0001"
    assert vcr.all_played


# ---------------------------------------------------------------- proposals in batch jobs


def backfill_twice(runner: Harness, llm: FunctionLLM) -> Any:
    """A `--backfill` run that sends the classification, then one that collects it and sends
    the new groups' proposals; returns the second run's report."""
    runner.run(llm=llm, publisher=MemoryPublisher(), backfill=batches(runner.config, UsageMeter()))
    return runner.run(
        llm=llm, publisher=MemoryPublisher(), backfill=batches(runner.config, UsageMeter()),
        now=NOW + timedelta(hours=3),
    )  # fmt: skip


def waiting_keys(report: Any) -> list[str]:
    return sorted(key for key, reason in report.skipped if "waiting for its batch job" in reason)


@pytest.mark.vcr
def test_a_backfill_proposes_through_the_batch_api_too(
    runner: Harness, vcr: Any, tmp_path: Path
) -> None:
    llm = FunctionLLM(answer)
    sent = backfill_twice(runner, llm)

    # The run that collected the verdicts sent the four new groups' proposals as one job.
    assert llm.calls("classify") == 0 and llm.calls("propose") == 0
    assert sent.classified["troubleshooting"] == 3 and sent.proposals_opened == []
    saved = json.loads(state_text(runner))
    [job] = saved["pending_batches"]
    assert (job["name"], job["stage"], job["model"]) == (PROPOSE_JOB, "propose", "gemini-3.8-flash")
    assert sorted(job["requests"]) == ["propose-1", "propose-2", "propose-3", "propose-4"]
    members = sorted(key for keys in job["requests"].values() for key in keys)
    assert members == sorted(job["digests"]) == waiting_keys(sent)
    # Ids and hashes only: neither the chat nor the docs text the prompts quoted.
    assert not [word for word in CHAT_AND_DOCS if word in state_text(runner).lower()]
    numbered = [key for keys in job["numbered"].values() for key in keys]
    assert numbered and all(re.fullmatch(r"(kestrel-users:\d+)?", key) for key in numbered)
    # Their messages are not done, so the collecting run reads the threads again.
    first = min(int(key.rsplit(":", 1)[1]) for key in members)
    assert (saved["watermark"] or 0) < first
    assert not set(saved["done_ids"]) & {int(key.rsplit(":", 1)[1]) for key in members}

    meter = UsageMeter.from_config(runner.config)
    out = tmp_path / "pythia-out"
    previewed = runner.run(
        llm=llm, publisher=DryRunPublisher(out), dry_run=True, meter=meter,
        backfill=batches(runner.config, meter, always=False), now=NOW + timedelta(hours=6),
    )  # fmt: skip

    # A dry run collects the job: its answers become proposals without a call, at half price.
    assert llm.calls("propose") == 0 and llm.calls("classify") == 0
    assert len(previewed.proposals_previewed) == 3
    assert any("no change" in reason for _, reason in previewed.skipped)  # the Windows gap
    patches = [path.read_text() for path in out.glob("*/change.patch")]
    assert any("+Since 2.3 Kestrel honours `HTTPS_PROXY`" in patch for patch in patches)
    propose = meter.totals()["propose"]
    full = cost_usd(meter.price("gemini-3.8-flash"),
                    Usage(input_tokens=propose.input_tokens, output_tokens=propose.output_tokens))
    assert propose.calls == 4 and propose.cost_usd == pytest.approx(full / 2) and full > 0

    opened = runner.run(
        llm=llm, publisher=MemoryPublisher(),
        backfill=batches(runner.config, UsageMeter(), always=False), now=NOW + timedelta(hours=7),
    )  # fmt: skip

    # The first real run after it opens them; the job is forgotten and the watermark moves.
    assert len(opened.proposals_opened) == 3 and llm.calls("propose") == 0
    saved = json.loads(state_text(runner))
    assert saved["pending_batches"] == [] and saved["judged"] == {}
    assert saved["watermark"] == 42
    assert vcr.all_played


@pytest.mark.vcr
def test_a_changed_thread_is_proposed_the_normal_way(
    runner: Harness, vcr: Any, tmp_path: Path
) -> None:
    llm = FunctionLLM(answer)
    backfill_twice(runner, llm)
    # The proxy conversation's last message is edited while its proposal waits in the job.
    chat = json.loads((FIXTURES / "sample-chat/result.json").read_text(encoding="utf-8"))
    [thanks] = [message for message in chat["messages"] if message["id"] == 9]
    thanks["text"] = "Good point, proxies are not documented anywhere. Thanks a lot!"
    edited = tmp_path / "result.json"
    edited.write_text(json.dumps(chat), encoding="utf-8")
    stream = runner.config.streams[0].model_copy(update={"path": str(edited)})
    runner.config = runner.config.model_copy(update={"streams": [stream]})

    later = runner.run(
        llm=llm, publisher=MemoryPublisher(),
        backfill=batches(runner.config, UsageMeter(), always=False), now=NOW + timedelta(hours=6),
    )  # fmt: skip

    # It was judged and proposed again, synchronously; the other three came from the job.
    assert llm.calls("classify") == 1 and llm.calls("propose") == 1
    [classified] = [r.prompt for r in llm.requests if r.stage == "classify"]
    assert "Thanks a lot!" in classified and "KESTREL_CACHE_DIR" not in classified
    assert len(later.proposals_opened) == 3
    assert json.loads(state_text(runner))["pending_batches"] == []
    assert vcr.all_played


@pytest.mark.vcr
def test_a_failed_proposal_job_falls_back_to_the_normal_path(runner: Harness, vcr: Any) -> None:
    llm = FunctionLLM(answer)
    backfill_twice(runner, llm)

    later = runner.run(
        llm=llm, publisher=MemoryPublisher(), backfill=batches(runner.config, UsageMeter()),
        now=NOW + timedelta(hours=6),
    )  # fmt: skip

    # Proposed the usual way in the same run, even with --backfill: never a second job.
    assert llm.calls("propose") == 4
    assert len(later.proposals_opened) == 3 and waiting_keys(later) == []
    assert json.loads(state_text(runner))["pending_batches"] == []
    assert vcr.all_played


class Local:
    """A Batch API in memory: answers each job with the Kestrel model once `finished`, and
    refuses to create jobs of the stages in `refuse`."""

    def __init__(self, *, refuse: tuple[str, ...] = ()) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.finished = True
        self.refuse = refuse

    def submit(self, requests: Any, *, model: str, label: str) -> str:
        if any(request.stage in self.refuse for request in requests.values()):
            raise RuntimeError("429 RESOURCE_EXHAUSTED: too many batch jobs")
        name = f"batches/local-{len(self.jobs) + 1}"
        self.jobs[name] = dict(requests)
        return name

    def poll(self, name: str) -> JobResult:
        if not self.finished:
            return JobResult("pending")
        usage = Usage(input_tokens=100, output_tokens=20)
        return JobResult("succeeded", {key: Generation(answer(request), usage)
                                       for key, request in self.jobs[name].items()})  # fmt: skip


def test_threads_wait_for_a_running_proposal_job(runner: Harness) -> None:
    api, llm = Local(), FunctionLLM(answer)
    backfill = Backfill(api, config=runner.config, meter=UsageMeter(), always=True)
    runner.run(llm=llm, publisher=MemoryPublisher(), backfill=backfill)
    sent = runner.run(llm=llm, publisher=MemoryPublisher(), backfill=backfill)
    api.finished = False
    report = runner.run(llm=llm, publisher=MemoryPublisher(), backfill=backfill)

    assert len(api.jobs) == 2 and llm.calls("propose") == 0 and llm.calls("classify") == 0
    assert waiting_keys(report) == waiting_keys(sent) != []
    assert report.proposals_opened == []
    [job] = runner.store.load_stream("kestrel-users").pending_batches
    assert job.stage == "propose"


def test_a_proposal_job_that_cannot_be_created_leaves_them_to_the_normal_path(
    runner: Harness,
) -> None:
    api, llm = Local(refuse=("propose",)), FunctionLLM(answer)
    backfill = Backfill(api, config=runner.config, meter=UsageMeter(), always=True)
    runner.run(llm=llm, publisher=MemoryPublisher(), backfill=backfill)
    report = runner.run(llm=llm, publisher=MemoryPublisher(), backfill=backfill)

    assert llm.calls("propose") == 4 and len(report.proposals_opened) == 3
    assert waiting_keys(report) == []
    assert runner.store.load_stream("kestrel-users").pending_batches == []


def test_a_proposal_job_older_than_the_api_keeps_it_is_given_up(runner: Harness) -> None:
    api, llm = Local(), FunctionLLM(answer)
    backfill = Backfill(api, config=runner.config, meter=UsageMeter(), always=True)
    runner.run(llm=llm, publisher=MemoryPublisher(), backfill=backfill)
    runner.run(llm=llm, publisher=MemoryPublisher(), backfill=backfill)
    api.finished = False
    report = runner.run(
        llm=llm, publisher=MemoryPublisher(), backfill=backfill, now=NOW + timedelta(days=4)
    )

    assert llm.calls("propose") == 4 and len(report.proposals_opened) == 3
    assert runner.store.load_stream("kestrel-users").pending_batches == []
