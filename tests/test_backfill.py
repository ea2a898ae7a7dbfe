"""Backfills through the Gemini Batch API: sent by one run, collected by the next.

The cassettes hold the Batch API's wire format (batchGenerateContent, then batches.get) as
google-genai 3.x sends and reads it; tests/cassettes/record_backfill.py writes them and says
how to record the real API instead.
"""

from __future__ import annotations

import json
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
from pythia.usage import UsageMeter
from test_pipeline import FIXTURES, NOW, Harness, make_config

JOB = "batches/pythia-kestrel-backfill-0001"


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
