"""A small fake of GitHub's REST API on 127.0.0.1, for the publisher, the dashboard and the
`/pythia` commands: the same paths and JSON fields as api.github.com, and GitHub's rules that
a PR needs its head branch on the origin and a branch has at most one open PR.

Used in-process by tests/test_reliability.py and, through GITHUB_API_URL, by the act tests.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pythia.publish.render import fingerprint_in

REPOSITORY = "kestrel/docs"


@dataclass
class FakeGitHub:
    """The REST endpoints GitHubPublisher uses, with GitHub's semantics: a PR needs its head
    branch on the origin, and one branch has at most one open PR (422 otherwise)."""

    origin: Path
    base: str = ""
    repository: str = REPOSITORY
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    labels: set[str] = field(default_factory=set)
    # (method, path) -> status to answer instead, or None; requests counts every request
    fail: Callable[[str, str], int | None] = lambda method, path: None
    requests: int = 0
    failures: int = 0
    forbid_pulls: bool = False
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)
    permissions: dict[str, str] = field(default_factory=dict)  # login -> admin, write, read
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def error(self, status: int) -> dict[str, Any]:
        if status == 403 and self.forbid_pulls:
            # The answer GitHub gives when the repository setting forbids bot PRs.
            return {
                "message": "GitHub Actions is not permitted to create or approve pull requests.",
                "documentation_url": "https://docs.github.com/rest",
            }
        return {"message": "Server Error" if status >= 500 else "API rate limit exceeded"}

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        repo = f"/repos/{self.repository}"
        answer = self.handle_issues(method, path, body)
        if answer is not None:
            return answer
        if path == repo:
            return 200, {
                "id": 1,
                "name": self.repository.split("/")[1],
                "full_name": self.repository,
                "default_branch": "main",
                "url": self.base + repo,
            }
        if path == f"{repo}/pulls" and method == "GET":
            return 200, [pr for pr in self.pulls.values() if pr["state"] == "open"]
        if path == f"{repo}/pulls" and method == "POST":
            return self.create_pull(body)
        if match := re.fullmatch(rf"{repo}/pulls/(\d+)", path):
            number = int(match.group(1))
            return (200, self.pulls[number]) if number in self.pulls else (404, not_found())
        if match := re.fullmatch(rf"{repo}/labels/(.+)", path):
            name = unquote(match.group(1))
            if name in self.labels:
                return 200, {"name": name, "color": "c5def5", "url": self.base + path}
            return 404, not_found()
        if path == f"{repo}/labels" and method == "POST":
            self.labels.add(body["name"])
            return 201, {"name": body["name"], "color": body["color"], "url": self.base + path}
        if match := re.fullmatch(rf"{repo}/issues/(\d+)/labels", path):
            names = body if isinstance(body, list) else body["labels"]
            return 200, [{"name": n, "color": "c5def5"} for n in names]
        if match := re.fullmatch(rf"{repo}/issues/(\d+)/comments", path):
            number = int(match.group(1))
            if method == "GET":
                return 200, self.comments.get(number, [])
            comment_id = 1000 + sum(len(c) for c in self.comments.values())
            comment = {
                "id": comment_id,
                "body": body["body"],
                "url": f"{self.base}{repo}/issues/comments/{comment_id}",
                "html_url": (
                    f"https://github.com/{self.repository}/pull/{number}#issuecomment-{comment_id}"
                ),
            }
            self.comments.setdefault(number, []).append(comment)
            return 201, comment
        if match := re.fullmatch(rf"{repo}/issues/comments/(\d+)", path):
            for comment in itertools.chain.from_iterable(self.comments.values()):
                if comment["id"] == int(match.group(1)):
                    comment["body"] = body["body"]
                    return 200, comment
        return 404, not_found()

    def create_pull(self, body: dict[str, Any]) -> tuple[int, Any]:
        head = body["head"]
        if any(pr["head"]["ref"] == head and pr["state"] == "open" for pr in self.pulls.values()):
            return 422, _invalid(f"A pull request already exists for {self.owner}:{head}.")
        listed = subprocess.run(
            [
                "git",
                "--git-dir",
                str(self.origin),
                "rev-parse",
                "--verify",
                "-q",
                f"refs/heads/{head}",
            ],
            capture_output=True,
            text=True,
        )
        if listed.returncode != 0:
            return 422, _invalid("head invalid")
        number = next(self._numbers)
        self.pulls[number] = {
            "id": number,
            "number": number,
            "state": "open",
            "merged": False,
            "title": body["title"],
            "body": body["body"],
            "draft": body.get("draft", False),
            "html_url": f"https://github.com/{self.repository}/pull/{number}",
            "url": f"{self.base}/repos/{self.repository}/pulls/{number}",
            "issue_url": f"{self.base}/repos/{self.repository}/issues/{number}",
            "head": {"ref": head, "label": f"{self.owner}:{head}", "sha": listed.stdout.strip()},
            "base": {"ref": body["base"], "label": f"{self.owner}:{body['base']}"},
        }
        return 201, self.pulls[number]

    @property
    def owner(self) -> str:
        return self.repository.split("/")[0]

    def handle_issues(self, method: str, path: str, body: Any) -> tuple[int, Any] | None:
        """The dashboard issue, a PR read as an issue, and who may run `/pythia` commands."""
        repo = f"/repos/{self.repository}"
        if path == "/graphql":  # pinIssue
            return 200, {"data": {"pinIssue": {"issue": {"number": 0}}}}
        if match := re.fullmatch(rf"{repo}/collaborators/([^/]+)/permission", path):
            login = unquote(match.group(1))
            permission = self.permissions.get(login, "read")
            return 200, {"permission": permission, "user": {"login": login}}
        if path == f"{repo}/issues" and method == "GET":
            return 200, [issue for issue in self.issues.values() if issue["state"] == "open"]
        if path == f"{repo}/issues" and method == "POST":
            number = next(self._numbers)
            self.issues[number] = {
                "id": number,
                "number": number,
                "node_id": f"I_{number}",
                "state": "open",
                "title": body["title"],
                "body": body.get("body", ""),
                "labels": [{"name": name} for name in body.get("labels", [])],
                "url": f"{self.base}{repo}/issues/{number}",
                "html_url": f"https://github.com/{self.repository}/issues/{number}",
            }
            return 201, self.issues[number]
        if match := re.fullmatch(rf"{repo}/issues/(\d+)", path):
            number = int(match.group(1))
            if number in self.issues:
                if method == "PATCH":
                    self.issues[number].update(body)
                return 200, self.issues[number]
            if number in self.pulls:
                pr = self.pulls[number]
                return 200, {
                    **{k: pr[k] for k in ("id", "number", "state", "title", "body", "html_url")},
                    "url": pr["issue_url"],
                    "pull_request": {"url": pr["url"]},
                }
            return 404, not_found()
        return None

    # -- what the tests look at --

    def open_fingerprints(self) -> list[str | None]:
        return [fingerprint_in(pr["body"]) for pr in self.pulls.values() if pr["state"] == "open"]

    def thread_mentions(self) -> list[str]:
        """Every conversation a PR body or evidence comment carries, once per appearance."""
        texts = [pr["body"] for pr in self.pulls.values()]
        texts += [c["body"] for cs in self.comments.values() for c in cs]
        return [key for text in texts for key in re.findall(r"<!-- pythia:thread=(\S+) -->", text)]


def not_found() -> dict[str, str]:
    return {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}


def _invalid(message: str) -> dict[str, Any]:
    return {
        "message": "Validation Failed",
        "errors": [{"resource": "PullRequest", "code": "custom", "message": message}],
        "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
    }


class AppHandler(BaseHTTPRequestHandler):
    """Routes each request to `server.app.handle`, unless `server.app.fail` says to fail it."""

    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        app = self.server.app
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        with self.server.lock:
            app.requests += 1
            status = app.fail(self.command, path)
            if status is not None:
                app.failures += 1
                payload: Any = app.error(status)
                headers = {"Retry-After": "0"} if status == 429 else {}
            else:
                headers = {}
                try:
                    status, payload = app.handle(
                        self.command, path, json.loads(raw) if raw else None
                    )
                except Exception as error:  # a bug in the fake: fail the test, not hang it
                    self.server.errors.append(repr(error))
                    status, payload = 400, {"message": repr(error)}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer


def start(app: Any, errors: list[str]) -> tuple[ThreadingHTTPServer, str]:
    """Serve `app` on a free loopback port; a request it cannot handle lands in `errors`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), AppHandler)
    server.app = app  # type: ignore[attr-defined]
    server.lock = threading.Lock()  # type: ignore[attr-defined]
    server.errors = errors  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` on 127.0.0.1 for the length of a `with` block; yields its base URL."""
    errors: list[str] = []
    server, url = start(app, errors)
    app.base = url
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()
    assert errors == [], f"the fake server met requests it does not understand: {errors}"

