"""Writes the traffic of `pythia run --dry-run` on the Kestrel sample, with `models.provider:
openai` pointed at a local OpenAI-compatible server, into a cassette.

The far end is a local HTTP server that answers in the OpenAI wire format (POST
/v1/chat/completions, POST /v1/embeddings) like a small self-hosted server does: it refuses a
`json_schema` response_format with a 400 (so Pythia falls back to JSON mode), its first chat
request gets a 429 with `Retry-After: 1`, and its replies come from the rule-based Kestrel
model (tests/kestrel_model.py) with hashed bag-of-words vectors. vcrpy records what the
`openai` package really sent and got; the address is rewritten to Ollama's usual
http://localhost:11434, so the cassette replays against the config the test writes.

    .venv/bin/python tests/cassettes/record_openai_sample.py

To record a real server instead (say Ollama with the models below pulled), delete the cassette
and run the test with `--record-mode=once`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import yaml

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from cassettes.record_sample import _vector, sample_repo  # noqa: E402

CASSETTE = TESTS / "cassettes/test_cli_openai/test_a_dry_run_against_a_local_openai_server.yaml"
SERVER = "http://localhost:11434"
MODELS = {
    "provider": "openai",
    "base_url": f"{SERVER}/v1",
    "classify": "llama3.2:3b",
    "propose": "qwen3:14b",
    "embedding": "nomic-embed-text",
    "embedding_dimensions": 8,
}
RECORDED_AT = "Mon, 02 Nov 2026 09:31:07 GMT"


def openai_repo(root: Path) -> Path:
    """The Kestrel sample, its config pointed at the local server."""
    repo = sample_repo(root)
    config_path = repo / ".github/pythia.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["models"] = dict(MODELS)
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return repo


def chat_answer(
    request: dict[str, Any], number: int, *, picky: bool = True
) -> tuple[int, dict[str, Any]]:
    from kestrel_model import classify_reply, propose_reply

    if picky and request.get("response_format", {}).get("type") == "json_schema":
        return 400, {
            "error": {
                "message": "response_format type json_schema is not supported by this server",
                "type": "invalid_request_error",
                "param": "response_format",
                "code": None,
            }
        }
    prompt = request["messages"][-1]["content"]
    model = request["model"]
    reply = classify_reply(prompt) if model == MODELS["classify"] else propose_reply(prompt)
    text = json.dumps(reply, indent=2)
    system = request["messages"][0]["content"] if len(request["messages"]) > 1 else ""
    prompt_tokens = max(1, (len(system) + len(prompt)) // 4)
    completion_tokens = max(1, len(text) // 4)
    return 200, {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "created": 1793611867,
        "model": model,
        "system_fingerprint": "fp_ollama",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def embeddings_answer(request: dict[str, Any]) -> dict[str, Any]:
    texts = request["input"]
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": n, "embedding": _vector(text, request["dimensions"])}
            for n, text in enumerate(texts)
        ],
        "model": request["model"],
        "usage": {
            "prompt_tokens": sum(len(t) // 4 for t in texts),
            "total_tokens": sum(len(t) // 4 for t in texts),
        },
    }


@contextmanager
def fake_server(*, picky: bool = True) -> Iterator[str]:
    from localhost import serving

    chats: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            headers = {"Content-Type": "application/json"}
            if self.path.endswith("/embeddings"):
                status, payload = 200, embeddings_answer(body)
            else:
                chats.append(1)
                if picky and len(chats) == 1:
                    status, payload = 429, {
                        "error": {
                            "message": "server busy: too many parallel requests",
                            "type": "rate_limit_error",
                        }
                    }
                    headers["Retry-After"] = "1"
                else:
                    status, payload = chat_answer(body, len(chats), picky=picky)
            data = json.dumps(payload, indent=2).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def date_time_string(self, timestamp: float | None = None) -> str:
            return RECORDED_AT

        def version_string(self) -> str:
            return "fake-openai-compatible"

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(Handler) as url:
        yield url


def record(cassette: Path = CASSETTE, command: tuple[str, ...] = (), *, picky: bool = True) -> int:
    import vcr

    from pythia.app import cli

    cassette.unlink(missing_ok=True)
    cassette.parent.mkdir(parents=True, exist_ok=True)
    saved = {name: os.environ.get(name) for name in _ENVIRONMENT}
    with tempfile.TemporaryDirectory() as folder, fake_server(picky=picky) as base_url:

        def as_local_server(request: Any) -> Any:
            request.uri = request.uri.replace(base_url, SERVER)
            return request

        recorder = vcr.VCR(
            record_mode="all",
            filter_headers=["authorization", "api-key", "cookie", "set-cookie"],
            before_record_request=as_local_server,
            decode_compressed_response=True,
        )
        for name in _ENVIRONMENT:
            os.environ.pop(name, None)
        try:
            repo = openai_repo(Path(folder))
            config_path = repo / ".github/pythia.yml"
            config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
            config["models"]["base_url"] = f"{base_url}/v1"  # the real address while recording
            config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
            logging.getLogger("vcr").setLevel(logging.WARNING)
            out = str(Path(folder) / "out")
            with recorder.use_cassette(str(cassette)) as recorded:
                argv = [a.replace("{repo}", str(repo)) for a in command] or [
                    "run", "--dry-run", "--out", out,
                ]
                code = cli.main([*argv, "--no-cache", "--repo", str(repo)])
            print(f"recorded {len(recorded)} interactions into {cassette} (exit {code})")
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return code


_ENVIRONMENT = (
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "GITHUB_ACTIONS",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_OUTPUT",
    "RUNNER_TEMP",
    "PYTHIA_CACHE",
)


EVAL_CASSETTE = TESTS / "cassettes/test_model_eval/test_eval_models_prints_its_table.yaml"
EVAL_SET = TESTS / "fixtures/eval/kestrel-conversations.jsonl"


if __name__ == "__main__":
    # The eval's server takes JSON Schema and never rate-limits: that is the run's to show.
    raise SystemExit(
        record()
        or record(
            EVAL_CASSETTE,
            ("eval", "models", "--set", str(EVAL_SET), "--docs", "{repo}/docs"),
            picky=False,
        )
    )
