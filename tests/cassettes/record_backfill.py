"""Writes the Batch API cassettes of tests/test_backfill.py.

The wire format is written out here by hand, as google-genai 3.x sends and reads it
(google/genai/batches.py): POST /v1beta/models/{model}:batchGenerateContent with the inlined
requests answers a long-running Operation whose `metadata` is the GenerateContentBatch (state
BATCH_STATE_PENDING); GET /v1beta/batches/{id} answers the same Operation, finished, with the
answers under `metadata.output.inlinedResponses.inlinedResponses`, each with the `metadata.key`
it was sent with (https://ai.google.dev/api/batch-api). Only the classify answers' JSON comes
from the rule-based Kestrel model, computed from the prompts a backfill of the sample sends.

    .venv/bin/python tests/cassettes/record_backfill.py

To record the real Batch API instead, delete a cassette and run its test with
`--record-mode=once` and GEMINI_API_KEY set (a real job takes minutes to hours to finish, so
the second run of the test has to wait for it).
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
MODEL = "gemini-3.5-flash-lite"
JOB = "batches/pythia-kestrel-backfill-0001"
BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch"
OUTPUT_TYPE = (
    "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput"
)
HEADERS = {"Content-Type": ["application/json; charset=UTF-8"], "Vary": ["Origin, X-Origin"]}


def sent_requests() -> dict[str, Any]:
    """The classify requests a backfill of the Kestrel sample sends, by key."""
    from doubles import FunctionLLM
    from kestrel_model import answer
    from pythia.backfill import Backfill, JobResult
    from pythia.usage import UsageMeter
    from test_pipeline import Harness, make_config

    class Capture:
        def __init__(self) -> None:
            self.requests: dict[str, Any] = {}

        def submit(self, requests: Any, *, model: str, label: str) -> str:
            self.requests = dict(requests)
            return JOB

        def poll(self, name: str) -> JobResult:
            return JobResult("pending")

    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder) / "repo"
        shutil.copytree(TESTS / "fixtures/sample-docs/docs", repo / "docs")
        config = make_config()
        runner = Harness(repo, config)
        capture = Capture()
        backfill = Backfill(capture, config=config, meter=UsageMeter(), always=True)
        runner.run(llm=FunctionLLM(answer), publisher=None, backfill=backfill)
    return capture.requests


def operation(state: str, output: dict[str, Any] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "@type": BATCH_TYPE,
        "model": f"models/{MODEL}",
        "displayName": "pythia 2026-03-06 12:00",
        "createTime": "2026-03-06T12:00:03.123456Z",
        "updateTime": "2026-03-06T12:00:03.123456Z",
        "batchStats": {"requestCount": "1", "pendingRequestCount": "1"},
        "state": state,
        "name": JOB,
    }
    body: dict[str, Any] = {"name": JOB, "metadata": metadata}
    if output is not None:
        metadata["endTime"] = "2026-03-06T14:41:10.654321Z"
        metadata["updateTime"] = "2026-03-06T14:41:10.654321Z"
        metadata["batchStats"] = {"requestCount": "1", "successfulRequestCount": "1"}
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


def main() -> None:
    yaml.SafeDumper.add_representer(str, _literal)
    from kestrel_model import classify_reply

    requests = sent_requests()
    answers = []
    for key, request in requests.items():
        text = json.dumps(classify_reply(request.prompt), indent=2)
        prompt_tokens = (len(request.system) + len(request.prompt)) // 4
        answers.append(
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
                    "modelVersion": MODEL,
                },
                "metadata": {"key": key},
            }
        )
    create = interaction(
        "POST", f"{HOST}/models/{MODEL}:batchGenerateContent", 200,
        operation("BATCH_STATE_PENDING"),
    )  # fmt: skip
    done = interaction(
        "GET", f"{HOST}/{JOB}", 200,
        operation("BATCH_STATE_SUCCEEDED", {"inlinedResponses": {"inlinedResponses": answers}}),
    )  # fmt: skip
    expired = interaction("GET", f"{HOST}/{JOB}", 200, operation("BATCH_STATE_EXPIRED"))
    FOLDER.mkdir(parents=True, exist_ok=True)
    for name, interactions in [
        ("test_a_backfill_round_trips_through_the_batch_api", [create, done]),
        ("test_an_expired_job_falls_back_to_the_normal_path", [create, expired]),
    ]:
        text = yaml.safe_dump({"interactions": interactions, "version": 1}, sort_keys=False)
        (FOLDER / f"{name}.yaml").write_text(
            "# Written by tests/cassettes/record_backfill.py; see there.\n" + text,
            encoding="utf-8",
        )
        print(f"wrote {name}.yaml ({len(requests)} requests in the job)")


if __name__ == "__main__":
    main()
