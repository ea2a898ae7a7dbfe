"""Writes the Batch API cassettes of tests/test_backfill.py.

The wire format is written out here by hand, as google-genai 3.x sends and reads it
(google/genai/batches.py): POST /v1beta/models/{model}:batchGenerateContent with the inlined
requests answers a long-running Operation whose `metadata` is the GenerateContentBatch (state
BATCH_STATE_PENDING); GET /v1beta/batches/{id} answers the same Operation, finished, with the
answers under `metadata.output.inlinedResponses.inlinedResponses`, each with the `metadata.key`
it was sent with (https://ai.google.dev/api/batch-api). Only the answers' JSON comes from the
rule-based Kestrel model, computed from the prompts a backfill of the sample sends: a local
stand-in for the Batch API takes the classify job of a first run and answers it, so that a
second run sends its propose job, whose prompts are answered in turn.

    .venv/bin/python tests/cassettes/record_backfill.py

To record the real Batch API instead, delete a cassette and run its test with
`--record-mode=once` and GEMINI_API_KEY set (a real job takes minutes to hours to finish, so
each later run of the test has to wait for it).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

FOLDER = TESTS / "cassettes/test_backfill"
HOST = "https://generativelanguage.googleapis.com/v1beta"
CLASSIFY_MODEL = "gemini-3.5-flash-lite"
PROPOSE_MODEL = "gemini-3.8-flash"
JOB = "batches/pythia-kestrel-backfill-0001"  # the classify job
PROPOSE_JOB = "batches/pythia-kestrel-backfill-0002"
TIMES = {  # each job's createTime and endTime
    "classify": ("2026-03-06T12:00:03.123456Z", "2026-03-06T14:41:10.654321Z"),
    "propose": ("2026-03-06T15:00:02.654321Z", "2026-03-06T17:12:45.123456Z"),
}
BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"
OUTPUT_TYPE = (
    "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput"
)
HEADERS = {"Content-Type": ["application/json; charset=UTF-8"], "Vary": ["Origin, X-Origin"]}


def sent_jobs() -> dict[str, dict[str, Any]]:
    """The requests of the jobs a backfill of the Kestrel sample sends, by job and key: the
    classify job of a first run, and the propose job of the run that collects it."""
    from datetime import timedelta

    from doubles import FunctionLLM
    from kestrel_model import answer
    from pythia.backfill import Backfill, JobResult
    from pythia.models import Usage
    from pythia.ports import Generation
    from pythia.usage import UsageMeter
    from test_pipeline import NOW, Harness, make_config

    class StandIn:
        """A local Batch API: keeps each job's requests, answers them with the Kestrel model."""

        def __init__(self) -> None:
            self.jobs: dict[str, dict[str, Any]] = {}

        def submit(self, requests: Any, *, model: str, label: str) -> str:
            name = [JOB, PROPOSE_JOB][len(self.jobs)]
            self.jobs[name] = dict(requests)
            return name

        def poll(self, name: str) -> JobResult:
            answers = {key: Generation(answer_text(request), Usage())
                       for key, request in self.jobs[name].items()}  # fmt: skip
            return JobResult("succeeded", answers)

    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder) / "repo"
        shutil.copytree(TESTS / "fixtures/sample-docs/docs", repo / "docs")
        config = make_config()
        runner = Harness(repo, config)
        api = StandIn()
        for hours in (0, 3):  # as the tests run: send, then collect and send the proposals
            backfill = Backfill(api, config=config, meter=UsageMeter(), always=True)
            runner.run(llm=FunctionLLM(answer), publisher=None, backfill=backfill,
                       now=NOW + timedelta(hours=hours))  # fmt: skip
    return api.jobs


def answer_text(request: Any) -> str:
    from kestrel_model import classify_reply, propose_reply

    reply = classify_reply if request.stage == "classify" else propose_reply
    return json.dumps(reply(request.prompt), indent=2)


def operation(
    state: str,
    output: dict[str, Any] | None = None,
    *,
    name: str = JOB,
    model: str = CLASSIFY_MODEL,
    count: int = 1,
) -> dict[str, Any]:
    stage = "propose" if name == PROPOSE_JOB else "classify"
    created, ended = TIMES[stage]
    metadata: dict[str, Any] = {
        "@type": BATCH_TYPE,
        "model": f"models/{model}",
        "displayName": f"pythia {stage} 2026-03-06 {created[11:16]}",
        "createTime": created,
        "updateTime": created,
        "batchStats": {"requestCount": str(count), "pendingRequestCount": str(count)},
        "state": state,
        "name": name,
    }
    body: dict[str, Any] = {"name": name, "metadata": metadata}
    if output is not None:
        metadata["endTime"] = ended
        metadata["updateTime"] = ended
        metadata["batchStats"] = {"requestCount": str(count), "successfulRequestCount": str(count)}
        metadata["output"] = output
        body["done"] = True
        body["response"] = {"@type": OUTPUT_TYPE, **output}
    elif state != "BATCH_STATE_PENDING":
        body["done"] = True
    return body


def interaction(method: str, uri: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "request": {"body": None, "headers": {}, "method": method, "uri": uri},
        "response": {
            "body": {"string": json.dumps(body, indent=2) + "\n"},
            "headers": {name: list(values) for name, values in HEADERS.items()},
            "status": {"code": status, "message": "OK"},
        },
    }


def _literal(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


def answers(requests: dict[str, Any]) -> list[dict[str, Any]]:
    """Each request's answer as an inlined response, with usage counted from its length."""
    found = []
    for key, request in requests.items():
        text = answer_text(request)
        prompt_tokens = (len(request.system) + len(request.prompt)) // 4
        found.append(
            {
                "response": {
                    "candidates": [
                        {
                            "content": {"parts": [{"text": text}], "role": "model"},
                            "finishReason": "STOP",
                            "index": 0,
                        }
                    ],
                    "usageMetadata": {
                        "promptTokenCount": prompt_tokens,
                        "candidatesTokenCount": len(text) // 4,
                        "totalTokenCount": prompt_tokens + len(text) // 4,
                    },
                    "modelVersion": request.model,
                },
                "metadata": {"key": key},
            }
        )
    return found


def main() -> None:
    yaml.SafeDumper.add_representer(str, _literal)
    jobs = sent_jobs()
    classify, propose = jobs[JOB], jobs[PROPOSE_JOB]

    def job(name: str, model: str, requests: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The job's creation, and its lookup in each of the states a test meets."""
        count = len(requests)

        def get(state: str, output: dict[str, Any] | None = None) -> dict[str, Any]:
            body = operation(state, output, name=name, model=model, count=count)
            return interaction("GET", f"{HOST}/{name}", 200, body)

        created = operation("BATCH_STATE_PENDING", name=name, model=model, count=count)
        output = {"inlinedResponses": {"inlinedResponses": answers(requests)}}
        return {
            "create": interaction(
                "POST", f"{HOST}/models/{model}:batchGenerateContent", 200, created
            ),
            "done": get("BATCH_STATE_SUCCEEDED", output),
            "expired": get("BATCH_STATE_EXPIRED"),
            "failed": get("BATCH_STATE_FAILED"),
        }

    first = job(JOB, CLASSIFY_MODEL, classify)
    second = job(PROPOSE_JOB, PROPOSE_MODEL, propose)
    sent = [first["create"], first["done"], second["create"]]
    FOLDER.mkdir(parents=True, exist_ok=True)
    for name, interactions in [
        ("test_a_backfill_round_trips_through_the_batch_api", [first["create"], first["done"]]),
        ("test_an_expired_job_falls_back_to_the_normal_path",
         [first["create"], first["expired"]]),
        ("test_a_backfill_proposes_through_the_batch_api_too",
         [*sent, second["done"], second["done"]]),
        ("test_a_changed_thread_is_proposed_the_normal_way", [*sent, second["done"]]),
        ("test_a_failed_proposal_job_falls_back_to_the_normal_path", [*sent, second["failed"]]),
    ]:  # fmt: skip
        text = yaml.safe_dump({"interactions": interactions, "version": 1}, sort_keys=False)
        (FOLDER / f"{name}.yaml").write_text(
            "# Written by tests/cassettes/record_backfill.py; see there.\n" + text,
            encoding="utf-8",
        )
        print(f"wrote {name}.yaml ({len(classify)} classify, {len(propose)} propose requests)")


if __name__ == "__main__":
    main()
