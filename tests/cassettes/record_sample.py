"""Writes the Gemini traffic of `pythia run --dry-run` on the Kestrel sample into a cassette.

The real CLI runs with the real Gemini adapter (google-genai); only the far end is fake: a
local HTTP server that answers like the Gemini API, with the replies of the rule-based Kestrel
model (tests/kestrel_model.py) and hashed bag-of-words vectors. vcrpy records what the SDK
really sent and got, then the host is rewritten to generativelanguage.googleapis.com, so the
cassette is exactly the wire format a real run produces, minus the key.

    .venv/bin/python tests/cassettes/record_sample.py

It writes the dry run's cassette and the one of `pythia index` + `pythia search`.

Run it again after a change to the prompts, the chunker or the sample fixtures. To record
against the real Gemini API instead, see the top of tests/test_cli.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import yaml

TESTS = Path(__file__).resolve().parents[1]
FIXTURES = TESTS / "fixtures"
CASSETTE = TESTS / "cassettes/test_cli/test_dry_run_writes_the_three_sample_proposals.yaml"
SEARCH_CASSETTE = (
    TESTS / "cassettes/test_cli/test_search_with_a_key_is_hybrid_and_without_one_falls_back.yaml"
)
GEMINI_HOST = "generativelanguage.googleapis.com"
# Pinned, so the recorded URLs do not move when the config's default models do; small
# vectors keep the cassette readable, and the pipeline does not care about their size.
MODELS = {
    "classify": "gemini-3.5-flash-lite",
    "propose": "gemini-3.8-flash",
    "embedding": "gemini-embedding-001",
    "embedding_dimensions": 8,
}
# A fixed Date header, so that re-recording unchanged traffic gives an unchanged file.
RECORDED_AT = "Mon, 02 Nov 2026 09:31:07 GMT"
GOOGLE_HEADERS = {
    "Content-Type": "application/json; charset=UTF-8",
    "Vary": "Origin, X-Origin, Referer",
    "Server-Timing": "gfet4t7; dur=1834",
    "X-XSS-Protection": "0",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Alt-Svc": 'h3=":443"; ma=2592000,h3-29=":443"; ma=2592000',
}


def sample_repo(root: Path, *, chat: str = "../sample-chat/result.json") -> Path:
    """Copies the sample docs repository (and the chat export beside it) under `root`.

    The config names the models and asks for 8-dimensional embeddings, as recorded.
    `chat` is where the stream's export lives, relative to the repository.
    """
    repo = root / "sample-docs"
    # Leaves out what a local run of the quickstart leaves behind in the fixture.
    shutil.copytree(
        FIXTURES / "sample-docs", repo, ignore=shutil.ignore_patterns(".pythia", "pythia-out")
    )
    export = (repo / chat).resolve()
    export.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / "sample-chat/result.json", export)
    config_path = repo / ".github/pythia.yml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    config["models"] = dict(MODELS)
    config["streams"][0]["path"] = chat
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return repo


# ---------------------------------------------------------------- the fake far end


def _vector(text: str, dimensions: int) -> list[float]:
    sys.path.insert(0, str(TESTS))
    from doubles import HashEmbedder

    # Scaled like gemini-embedding-001's truncated outputs: not unit length, so the
    # adapter's re-normalisation is exercised on replay.
    return [round(v * 0.3, 9) for v in HashEmbedder(dimensions=dimensions).vector(text)]


def _response_id(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=14).hexdigest()[:27]


def gemini_answer(path: str, body: bytes, *, classify_model: str) -> dict[str, Any]:
    """What the Gemini API would answer, computed by the Kestrel model."""
    sys.path.insert(0, str(TESTS))
    from kestrel_model import classify_reply, propose_reply

    request = json.loads(body)
    model = path.rsplit("/", 1)[-1].split(":", 1)[0]
    if path.endswith(":batchEmbedContents"):
        return {
            "embeddings": [
                {
                    "values": _vector(
                        item["content"]["parts"][0]["text"], item["outputDimensionality"]
                    )
                }
                for item in request["requests"]
            ]
        }
    prompt = "".join(part.get("text", "") for part in request["contents"][0]["parts"])
    reply = classify_reply(prompt) if model == classify_model else propose_reply(prompt)
    text = json.dumps(reply, indent=2)
    prompt_tokens = max(1, len(prompt) // 4)
    output_tokens = max(1, len(text) // 4)
    return {
        "candidates": [
            {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        },
        "modelVersion": model,
        "responseId": _response_id(body),
    }


@contextmanager
def fake_gemini(*, classify_model: str) -> Iterator[str]:
    """A local server answering like the Gemini API; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            payload = json.dumps(
                gemini_answer(self.path, body, classify_model=classify_model), indent=2
            ).encode()
            self.send_response(200)
            for name, value in GOOGLE_HEADERS.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def version_string(self) -> str:
            return "scaffolding on HTTPServer2"

        def date_time_string(self, timestamp: float | None = None) -> str:
            return RECORDED_AT

        def log_message(self, format: str, *args: Any) -> None:
            pass

    sys.path.insert(0, str(TESTS))
    from localhost import serving

    with serving(Handler) as url:
        yield url


# ---------------------------------------------------------------- recording


def record(cassette: Path = CASSETTE, commands: list[list[str]] | None = None) -> int:
    """Runs `commands` (each followed by --repo; `{out}` is a scratch folder) and records them."""
    import vcr

    from pythia.app import cli

    classify_model = str(MODELS["classify"])
    cassette.unlink(missing_ok=True)
    saved = {name: os.environ.get(name) for name in _ENVIRONMENT}
    with tempfile.TemporaryDirectory() as folder, fake_gemini(
        classify_model=classify_model
    ) as base_url:
        local = base_url.split("://", 1)[1]

        def as_google(request: Any) -> Any:
            request.uri = request.uri.replace(base_url, f"https://{GEMINI_HOST}")
            request.headers["host"] = GEMINI_HOST
            return request

        recorder = vcr.VCR(
            record_mode="all",
            filter_headers=["authorization", "x-goog-api-key", "cookie", "set-cookie"],
            filter_query_parameters=["key"],
            before_record_request=as_google,
            decode_compressed_response=True,
        )
        for name in _ENVIRONMENT:
            os.environ.pop(name, None)
        os.environ.update(GEMINI_API_KEY="test-gemini-key", GOOGLE_GEMINI_BASE_URL=base_url)
        try:
            repo = sample_repo(Path(folder))
            logging.getLogger("vcr").setLevel(logging.WARNING)
            out = str(Path(folder) / "out")
            code = 0
            with recorder.use_cassette(str(cassette)) as recorded:
                for command in commands or [["run", "--dry-run", "--out", "{out}"]]:
                    argv = [arg.replace("{out}", out) for arg in command]
                    code = code or cli.main([*argv, "--repo", str(repo)])
            print(f"recorded {len(recorded)} interactions into {cassette} (exit {code})")
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    text = cassette.read_text(encoding="utf-8")
    if local in text or "test-gemini-key" in text:
        raise SystemExit("the cassette still names the local server or the key; not keeping it")
    return code


_ENVIRONMENT = (
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GEMINI_BASE_URL",
    "GOOGLE_GENAI_API_VERSION",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GITHUB_ACTIONS",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_OUTPUT",
    "RUNNER_TEMP",
)


if __name__ == "__main__":
    raise SystemExit(
        record()
        or record(
            SEARCH_CASSETTE,
            [["index", "--json"], ["search", "remote cache proxy", "--json", "-k", "3"]],
        )
    )
