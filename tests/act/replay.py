"""A local stand-in for the Gemini API that answers from a vcrpy cassette, in recorded order.

Reached through GOOGLE_GEMINI_BASE_URL, which google-genai reads when no base URL is set in
code (google/genai/_base_url.py), so a process we do not control (here: a workflow step under
act) talks to it without patching anything.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from localhost import serving

# Hop-by-hop or length headers are recomputed for the body actually sent.
SKIPPED_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass
class Recorded:
    method: str
    path: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class Replay:
    """Recorded answers queued per (method, path); what was asked and what was missing."""

    queues: dict[tuple[str, str], deque[Recorded]]
    total: int
    served: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_cassette(cls, path: Path) -> Replay:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        queues: dict[tuple[str, str], deque[Recorded]] = defaultdict(deque)
        for interaction in data["interactions"]:
            request, response = interaction["request"], interaction["response"]
            body = response["body"]["string"]
            recorded = Recorded(
                method=request["method"],
                path=urlsplit(request["uri"]).path,
                status=int(response["status"]["code"]),
                headers=[
                    (name, value)
                    for name, values in response["headers"].items()
                    if name.lower() not in SKIPPED_HEADERS
                    for value in values
                ],
                body=body.encode("utf-8") if isinstance(body, str) else bytes(body),
            )
            queues[(recorded.method, recorded.path)].append(recorded)
        return cls(queues=queues, total=len(data["interactions"]))

    def next(self, method: str, path: str) -> Recorded | None:
        with self.lock:
            queue = self.queues.get((method, path))
            if not queue:
                self.unexpected.append(f"{method} {path}")
                return None
            self.served.append(f"{method} {path}")
            return queue.popleft()

    @property
    def all_served(self) -> bool:
        return len(self.served) == self.total


@contextmanager
def serve(replay: Replay) -> Iterator[str]:
    """Serves `replay` on 127.0.0.1 on a free port; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self._answer("POST")

        def do_GET(self) -> None:
            self._answer("GET")

        def _answer(self, method: str) -> None:
            recorded = replay.next(method, urlsplit(self.path).path)
            if recorded is None:
                self._error(f"no recorded answer left for {method} {self.path}")
                return
            self.send_response(recorded.status)
            for name, value in recorded.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(recorded.body)))
            self.end_headers()
            self.wfile.write(recorded.body)

        def _error(self, message: str) -> None:
            # 400, not 5xx: the client must fail at once rather than retry with backoff.
            body = (
                '{"error": {"code": 400, "status": "FAILED_PRECONDITION", "message": "replay: '
                + message
                + '"}}'
            ).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(Handler) as url:
        yield url
