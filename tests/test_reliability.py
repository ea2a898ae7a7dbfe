"""Crash-safe reruns, transient failures and bad input, on the Kestrel sample.

The real pieces run: the export source, the index, the pipeline, `StateStore` on a
`DataBranch` pushed to a local bare origin, `GitHubPublisher` with its branches pushed to that
origin and its REST calls answered by a small fake GitHub on 127.0.0.1 (same paths and JSON
fields as api.github.com, and GitHub's rule that a branch has at most one open PR), and, for
transient failures, the real `GeminiLLM` against a fake Gemini endpoint
(GOOGLE_GEMINI_BASE_URL). A crash is a `BaseException` raised at a stage boundary, so no
`except Exception` in the code under test can swallow it, like a killed process. Nothing
sleeps: Gemini's and Zulip's sleeps are injected, PyGithub's backoff is zero.
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import fakegithub
import harness
from doubles import FunctionLLM, HashEmbedder
from fakegithub import REPOSITORY, FakeGitHub, not_found
from gitrepo import git
from kestrel_model import answer
from pythia import actions, gemini, pipeline, prompts
from pythia.config import Config, ConfigError, load_config, parse_config
from pythia.databranch import DataBranch
from pythia.models import RunReport
from pythia.ports import LLM
from pythia.publish.branches import ProposalBranches
from pythia.publish.github import GitHubPublisher, github_client
from pythia.sources.zulip import ZulipSource
from pythia.state import StateStore
from pythia.usage import UsageMeter

FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 3, 6, 12, 0, tzinfo=timezone.utc)
LAST_ID = 42  # the sample chat's last message id
PROPOSALS = 3  # proxy, relative cache dir, cache moved: what a clean run opens


class Crash(BaseException):
    """The process died here (injected)."""


@pytest.fixture
def serve() -> Iterator[Callable[[Any], str]]:
    """Serve an app (with `handle`-like routing through `AppHandler`) on 127.0.0.1."""
    servers: list[ThreadingHTTPServer] = []
    errors: list[str] = []

    def serve_app(app: Any) -> str:
        server, url = fakegithub.start(app, errors)
        servers.append(server)
        return url

    yield serve_app
    for server in servers:
        server.shutdown()
        server.server_close()
    assert errors == [], "the fake server met a request it does not understand"


def every(n: int, status: int | Callable[[int], int]) -> Callable[[str, str], int | None]:
    """Fail every n-th request (n=5 is a 20 % failure rate), deterministically."""
    counter = itertools.count(1)

    def fail(method: str, path: str) -> int | None:
        number = next(counter)
        if number % n:
            return None
        return status(number) if callable(status) else status

    return fail


# ---------------------------------------------------------------- the docs repo and a run


@dataclass
class Env:
    work: Path
    origin: Path
    config: Config
    index_path: Path
    embedder: HashEmbedder
    github: FakeGitHub
    api: str

    def data(self) -> DataBranch:
        return DataBranch(self.work, branch=self.config.publish.data_branch)


def sample_config(**overrides: Any) -> Config:
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
        "publish": {"max_prs_per_run": 10, "max_open_prs": 10},
        "privacy": {"salt": "test-salt"},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(data)


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GITHUB_API_URL", raising=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs repo, its bare origin and the index, built once and copied per test."""
    root = tmp_path_factory.mktemp("template")
    origin = root / "origin.git"
    git(root, "init", "-q", "--bare", "-b", "main", str(origin))
    work = root / "work"
    git(root, "clone", "-q", str(origin), str(work))
    shutil.copytree(FIXTURES / "sample-docs/docs", work / "docs")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "docs")
    git(work, "push", "-q", "origin", "HEAD:main")
    harness.index_docs(
        harness.workspace(work, sample_config()), root / "index.sqlite", HashEmbedder()
    )
    return root


@pytest.fixture
def make_env(template: Path, tmp_path: Path, serve: Callable[..., str]) -> Callable[..., Env]:
    def make(config: Config | None = None) -> Env:
        root = tmp_path / "env"
        shutil.copytree(template, root, symlinks=True)
        git(root / "work", "remote", "set-url", "origin", str(root / "origin.git"))
        github = FakeGitHub(origin=root / "origin.git")
        github.base = serve(github)
        return Env(
            root / "work",
            root / "origin.git",
            config or sample_config(),
            root / "index.sqlite",
            HashEmbedder(),
            github,
            github.base,
        )

    return make


def run_once(env: Env, *, llm: LLM | None = None, meter: UsageMeter | None = None) -> RunReport:
    """One scheduled run, wired the way `pythia run` wires it."""
    config = env.config
    meter = meter or UsageMeter.from_config(config)
    with env.data() as data:
        store = data.store
        ledger = store.load_ledger()
        publisher = GitHubPublisher(
            repo_path=env.work,
            repository=REPOSITORY,
            github=github_client(
                "test-github-token",
                base_url=env.api,
                seconds_between_requests=None,
                seconds_between_writes=None,
            ),
            ledger=ledger,
            config=config.publish,
            templates=prompts.environment(env.work),
            clock=lambda: NOW,
        )
        report = harness.run_pipeline(
            harness.workspace(env.work, config, repository=REPOSITORY),
            index_path=env.index_path,
            store=store,
            ledger=ledger,
            llm=llm or FunctionLLM(answer, meter=meter),
            embedder=env.embedder,
            publisher=publisher,
            meter=meter,
            now=NOW,
        )
        store.save_ledger(ledger)
        data.save(f"pythia: run of {NOW:%Y-%m-%d %H:%M} UTC")
    return report


def saved_state(env: Env) -> tuple[Any, Any]:
    """The stream state and the ledger as the origin's data branch holds them."""
    with env.data() as data:
        return data.store.load_stream("kestrel-users"), data.store.load_ledger()


JUDGED = re.compile(r'role="message"[^>]*>\n(.*?)\n</message>', re.DOTALL)


def judged_messages(llm: FunctionLLM) -> set[str]:
    return {
        text for r in llm.requests if r.stage == "classify" for text in JUDGED.findall(r.prompt)
    }


def assert_exactly_once(env: Env, reference: set[str], judged: set[str]) -> None:
    """One PR per proposal, every conversation in exactly one place, state complete."""
    fingerprints = env.github.open_fingerprints()
    assert len(fingerprints) == PROPOSALS == len(set(fingerprints)), fingerprints
    threads = env.github.thread_mentions()
    assert len(threads) == len(set(threads)) == PROPOSALS, threads
    state, ledger = saved_state(env)
    assert state.watermark == LAST_ID and state.done_ids == [] and state.failures == {}
    entries = list(ledger.proposals.values())
    assert sorted(e.pr_number for e in entries) == sorted(env.github.pulls)
    assert all(e.status == "open" for e in entries)
    keys = [key for e in entries for key in e.thread_keys]
    assert sorted(keys) == sorted(threads)
    assert reference <= judged, "a message was never judged"


# ---------------------------------------------------------------- crash-safe reruns


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The messages a clean run judges; every crashed-and-rerun history must judge them all."""
    root = tmp_path_factory.mktemp("reference")
    config = sample_config()
    shutil.copytree(FIXTURES / "sample-docs/docs", root / "docs")
    space = harness.workspace(root, config)
    embedder = HashEmbedder()
    harness.index_docs(space, root / "index.sqlite", embedder)
    llm = FunctionLLM(answer)
    harness.run_pipeline(
        space,
        index_path=root / "index.sqlite",
        store=StateStore(root / "state"),
        llm=llm,
        embedder=embedder,
        publisher=_Null(),
        now=NOW,
    )
    judged = judged_messages(llm)
    assert len(judged) > 20
    return judged


class _Null:
    def publish(self, proposal: Any) -> Any:
        from pythia.ports import Published

        return Published(action="opened", url=proposal.fingerprint)


def once(real: Callable[..., Any], *, before: bool) -> Callable[..., Any]:
    """`real`, except that its first call crashes, before or after doing its work."""
    calls = itertools.count()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        first = next(calls) == 0
        if first and before:
            raise Crash
        result = real(*args, **kwargs)
        if first:
            raise Crash
        return result

    return wrapper


FAULTS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "after ingest": lambda mp: mp.setattr(
        pipeline, "classify", once(pipeline.classify, before=True)
    ),
    "after classify": lambda mp: mp.setattr(
        pipeline, "classify", once(pipeline.classify, before=False)
    ),
    "after proposal": lambda mp: mp.setattr(
        pipeline, "propose_for", once(pipeline.propose_for, before=False)
    ),
    "after branch push": lambda mp: mp.setattr(
        ProposalBranches, "push", once(ProposalBranches.push, before=False)
    ),
    "after PR creation": lambda mp: mp.setattr(
        GitHubPublisher, "_create_pull", once(GitHubPublisher._create_pull, before=False)
    ),
    "before state save": lambda mp: mp.setattr(
        StateStore, "save_stream", once(StateStore.save_stream, before=True)
    ),
    "before the data branch is pushed": lambda mp: mp.setattr(
        DataBranch, "save", once(DataBranch.save, before=True)
    ),
    "during state push (not landed)": lambda mp: mp.setattr(
        DataBranch, "_push", once(DataBranch._push, before=True)
    ),
    "during state push (landed, no answer)": lambda mp: mp.setattr(
        DataBranch, "_push", once(DataBranch._push, before=False)
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_run_that_dies_is_completed_by_the_next_without_duplicates_or_losses(
    make_env: Callable[..., Env],
    fault: str,
    tmp_path: Path,
    serve: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    reference: set[str],
) -> None:
    env = make_env()
    llm = FunctionLLM(answer)
    with monkeypatch.context() as patched:
        FAULTS[fault](patched)
        with pytest.raises(Crash):
            run_once(env, llm=llm)
    second = run_once(env, llm=llm)
    assert second.failed == [] and second.stopped_early is None
    assert_exactly_once(env, reference, judged_messages(llm))
    third = run_once(env, llm=llm)  # and the run after that has nothing left to do
    assert third.messages_read == 0 and len(env.github.pulls) == PROPOSALS


def test_two_crashes_in_a_row_still_end_in_one_pr_each(
    make_env: Callable[..., Env],
    tmp_path: Path,
    serve: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    reference: set[str],
) -> None:
    env = make_env()
    llm = FunctionLLM(answer)
    for fault in ("after PR creation", "during state push (landed, no answer)"):
        with monkeypatch.context() as patched:
            FAULTS[fault](patched)
            with pytest.raises(Crash):
                run_once(env, llm=llm)
    run_once(env, llm=llm)
    assert_exactly_once(env, reference, judged_messages(llm))


# ---------------------------------------------------------------- transient failures


@dataclass
class FakeGemini:
    """`models/{model}:generateContent` answering like Gemini, from the Kestrel model."""

    fail: Callable[[str, str], int | None] = lambda method, path: None
    requests: int = 0
    failures: int = 0

    def error(self, status: int) -> dict[str, Any]:
        reason = {429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}.get(status, "INTERNAL")
        return {"error": {"code": status, "message": "Please try again later.", "status": reason}}

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        prompt = "".join(p.get("text", "") for c in body["contents"] for p in c["parts"])
        stage = "classify" if '<conversation id="T' in prompt else "propose"
        text = answer(SimpleNamespace(stage=stage, prompt=prompt))  # type: ignore[arg-type]
        return 200, {
            "candidates": [
                {
                    "content": {"parts": [{"text": text}], "role": "model"},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 900,
                "candidatesTokenCount": 120,
                "totalTokenCount": 1020,
            },
            "modelVersion": "gemini-3.5-flash-lite",
        }


def gemini_llm(
    serve: Callable[..., str],
    app: FakeGemini,
    monkeypatch: pytest.MonkeyPatch,
    *,
    meter: UsageMeter,
    sleeps: list[float],
) -> LLM:
    """The real adapter, its client pointed at the fake (google-genai reads the variable)."""
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", serve(app))
    return gemini.GeminiLLM(
        gemini.make_client("test-gemini-key", timeout_seconds=10),
        meter=meter,
        retry=gemini.RetryPolicy(sleep=sleeps.append, random=lambda: 0.0),
    )


def test_429_and_5xx_from_gemini_and_github_at_20_percent_are_retried(
    make_env: Callable[..., Env],
    tmp_path: Path,
    serve: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    reference: set[str],
) -> None:
    env = make_env()
    env.github.fail = every(5, lambda n: (502, 503, 500)[n % 3])
    gemini_app = FakeGemini(fail=every(5, lambda n: (429, 503, 500)[n % 3]))
    meter = UsageMeter.from_config(env.config)
    sleeps: list[float] = []
    llm = gemini_llm(serve, gemini_app, monkeypatch, meter=meter, sleeps=sleeps)
    spy = FunctionLLM(lambda request: llm.generate(request).text)
    report = run_once(env, llm=spy, meter=meter)
    assert report.failed == [] and report.stopped_early is None
    assert len(report.proposals_opened) == PROPOSALS
    assert gemini_app.failures >= 1 and len(sleeps) == gemini_app.failures
    assert env.github.failures >= 3
    assert_exactly_once(env, reference, judged_messages(spy))


def test_a_gemini_outage_stops_the_stage_with_state_kept_and_a_warning(
    make_env: Callable[..., Env],
    tmp_path: Path,
    serve: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    reference: set[str],
) -> None:
    env = make_env()
    down = FakeGemini(fail=lambda method, path: 503)
    meter = UsageMeter.from_config(env.config)
    sleeps: list[float] = []
    llm = gemini_llm(serve, down, monkeypatch, meter=meter, sleeps=sleeps)
    spy = FunctionLLM(lambda request: llm.generate(request).text)
    report = run_once(env, llm=spy, meter=meter)
    assert report.stopped_early and "Gemini" in report.stopped_early
    assert "\n" not in report.stopped_early
    assert actions.problems(report) == [
        actions.Problem("warning", f"stopped early: {report.stopped_early}")
    ]
    assert len(sleeps) == gemini.RetryPolicy().attempts - 1  # one call, retried, then given up
    state, _ = saved_state(env)
    assert state.last_read_at is not None  # the run's state was saved ...
    assert (state.watermark or 0) < LAST_ID  # ... without passing anything unjudged
    assert env.github.pulls == {}

    down.fail = lambda method, path: None  # the service is back
    report = run_once(env, llm=spy, meter=UsageMeter.from_config(env.config))
    assert report.stopped_early is None
    assert_exactly_once(env, reference, judged_messages(spy))


def test_a_github_outage_stops_publishing_with_state_kept_and_fails_the_job(
    make_env: Callable[..., Env],
    tmp_path: Path,
    serve: Callable[..., str],
    reference: set[str],
) -> None:
    env = make_env()
    env.github.fail = lambda method, path: 502
    llm = FunctionLLM(answer)
    report = run_once(env, llm=llm)
    assert report.proposals_opened == [] and report.failed == []  # an outage is no failure
    assert report.stopped_early and report.stopped_early.startswith("GitHub is not answering")
    # Not one proposal got through: an error annotation, and the job fails.
    assert actions.problems(report) == [
        actions.Problem("error", f"1 proposal could not be published: {report.stopped_early}")
    ]
    assert llm.calls("propose") == 1  # nothing more was tried against a dead GitHub
    state, _ = saved_state(env)
    assert state.last_read_at is not None and (state.watermark or 0) < LAST_ID
    assert state.failures == {}
    env.github.fail = lambda method, path: None
    run_once(env, llm=llm)
    assert_exactly_once(env, reference, judged_messages(llm))


def test_a_repo_that_forbids_bot_prs_parks_the_proposal_and_fails_loudly(
    make_env: Callable[..., Env], reference: set[str]
) -> None:
    env = make_env()
    env.github.forbid_pulls = True
    env.github.fail = lambda method, path: (
        403 if method == "POST" and path.endswith("/pulls") else None
    )
    llm = FunctionLLM(answer)
    report = run_once(env, llm=llm)
    assert (
        report.fatal and "Allow GitHub Actions to create and approve pull requests" in report.fatal
    )
    assert report.failed == []
    assert actions.problems(report) == [actions.Problem("error", report.fatal)]
    _, ledger = saved_state(env)
    parked = [e for e in ledger.proposals.values() if e.status == "waiting" and e.parked]
    assert len(parked) == 1  # the proposal is kept, not given up

    env.github.fail = lambda method, path: None  # the maintainer fixed the setting
    run_once(env, llm=llm)
    assert_exactly_once(env, reference, judged_messages(llm))


def test_a_repository_github_does_not_know_fails_the_job_naming_it(
    make_env: Callable[..., Env],
) -> None:
    env = make_env()
    env.github.fail = lambda method, path: 404  # a wrong GITHUB_REPOSITORY, or no access
    env.github.error = lambda status: not_found()  # type: ignore[method-assign]
    report = run_once(env, llm=FunctionLLM(answer))
    assert report.proposals_opened == [] and report.fatal is None
    assert report.publish_attempts == PROPOSALS == len(report.publish_failed)
    problems = actions.problems(report)
    # One error for the one cause, not one per proposal; it names the repository.
    assert [p.level for p in problems] == ["error"]
    assert problems[0].message.startswith(
        f"{PROPOSALS} proposals could not be published: GitHub answered 404 for {REPOSITORY}: "
        f"Not Found (is GITHUB_REPOSITORY '{REPOSITORY}' the owner/name"
    )


# ---------------------------------------------------------------- Zulip


class FlakyZulip:
    """Answers `get_messages` the way zulip.Client 0.9 returns them: the JSON body, also for a
    429 (`RATE_LIMIT_HIT` with `retry-after`); a 5xx whose body is not JSON becomes
    `{"result": "http-error", "status_code": ...}` (zulip/__init__.py, do_api_query) once its
    own retries are off (`retry_on_errors=False`, as Pythia builds it)."""

    feature_level = 300

    def __init__(self, count: int, fail: Callable[[str, str], int | None]) -> None:
        self.messages = [
            {
                "id": 100 + n,
                "sender_id": 7 + n % 3,
                "sender_email": f"u{n % 3}@chat.kestrel.dev",
                "timestamp": 1772442000 + 600 * n,
                "subject": f"topic {n // 4}",
                "display_recipient": "help",
                "stream_id": 9,
                "content": f"message {n}: kestrel run build fails when the cache is cold",
            }
            for n in range(count)
        ]
        self.fail = fail
        self.calls = 0

    def get_messages(self, request: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        status = self.fail("GET", "/api/v1/messages")
        if status == 429:
            return {
                "result": "error",
                "code": "RATE_LIMIT_HIT",
                "msg": "API usage exceeded rate limit",
                "retry-after": 0.5,
            }
        if status is not None:
            return {
                "msg": "Unexpected error from the server",
                "result": "http-error",
                "status_code": status,
            }
        after = int(request["anchor"])
        newer = [m for m in self.messages if m["id"] > after]
        page = newer[: request["num_after"]]
        return {"result": "success", "messages": page, "found_newest": len(newer) <= len(page)}


def zulip_run(tmp_path: Path, client: FlakyZulip, sleeps: list[float]) -> tuple[RunReport, Any]:
    config = sample_config()
    stream = parse_config(
        {
            "streams": [
                {
                    "id": "zulip-help",
                    "kind": "zulip",
                    "site": "https://chat.kestrel.dev",
                    "email": "pythia-bot@chat.kestrel.dev",
                    "channel": "help",
                    "start": "oldest",
                    "batch_size": 5,
                }
            ]
        }
    ).streams[0]
    config = config.model_copy(update={"streams": [stream]})
    source = ZulipSource(
        stream,  # type: ignore[arg-type]
        client_factory=lambda: client,
        salt="test-salt",
        sleep=sleeps.append,
    )
    shutil.copytree(FIXTURES / "sample-docs/docs", tmp_path / "docs")
    space = harness.workspace(tmp_path, config)
    embedder = HashEmbedder()
    harness.index_docs(space, tmp_path / "index.sqlite", embedder)
    store = StateStore(tmp_path / "state")
    report = harness.run_pipeline(
        space,
        index_path=tmp_path / "index.sqlite",
        store=store,
        llm=FunctionLLM(answer),
        embedder=embedder,
        publisher=_Null(),
        sources=[source],
        now=NOW,
    )
    return report, store.load_stream("zulip-help")


def test_zulip_rate_limits_at_20_percent_are_waited_out(tmp_path: Path) -> None:
    client = FlakyZulip(30, every(5, 429))
    sleeps: list[float] = []
    report, state = zulip_run(tmp_path, client, sleeps)
    assert report.streams[0].error is None
    assert report.streams[0].messages_read == 30
    assert sleeps and all(s == 0.5 for s in sleeps)
    assert state.watermark == 129


def test_zulip_5xx_at_20_percent_are_retried(tmp_path: Path) -> None:
    client = FlakyZulip(30, every(5, lambda n: (502, 503)[n % 2]))
    report, state = zulip_run(tmp_path, client, [])
    assert report.streams[0].error is None
    assert report.streams[0].messages_read == 30 and state.watermark == 129


def test_a_long_zulip_outage_stops_the_stream_keeping_what_was_read(
    tmp_path: Path
) -> None:
    calls = itertools.count(1)
    client = FlakyZulip(30, lambda method, path: 429 if next(calls) > 2 else None)
    sleeps: list[float] = []
    report, state = zulip_run(tmp_path, client, sleeps)
    stream = report.streams[0]
    assert stream.error and "429" in stream.error and "\n" not in stream.error
    assert stream.messages_read == 10  # the two pages read before the outage
    assert actions.problems(report) == [
        actions.Problem("warning", f"stream zulip-help: {stream.error}")
    ]
    assert state.watermark is not None and state.watermark <= 109  # nothing unread passed


# ---------------------------------------------------------------- bad input


def test_a_malformed_config_is_one_clear_line(tmp_path: Path) -> None:
    broken = tmp_path / "pythia.yml"
    broken.write_text("streams:\n  - id: chat\n    kind: export\n   path: x.json\n")
    with pytest.raises(ConfigError) as yaml_error:
        load_config(broken)
    broken.write_text(
        "streams:\n  - {id: chat, kind: export, path: x.json}\nlimits: {max_prs: 3}\n"
    )
    with pytest.raises(ConfigError) as key_error:
        load_config(broken)
    for error in (yaml_error.value, key_error.value):
        message = str(error)
        assert "\n" not in message and "Traceback" not in message
    assert "not valid YAML at line 4" in str(yaml_error.value)
    assert "limits.max_prs: is not a known key" in str(key_error.value)


def test_a_malformed_export_fails_its_stream_only_and_loses_nothing(
    make_env: Callable[..., Env], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x", "messages": [{"id": 1, "type": "message", "text": 5}')
    config = sample_config()
    bad = parse_config(
        {"streams": [{"id": "broken", "kind": "export", "path": str(broken), "start": "oldest"}]}
    ).streams[0]
    env = make_env(config.model_copy(update={"streams": [*config.streams, bad]}))
    report = run_once(env)
    by_stream = {s.stream: s for s in report.streams}
    assert by_stream["broken"].error and "broken.json: line 1" in by_stream["broken"].error
    assert "\n" not in by_stream["broken"].error
    assert len(report.proposals_opened) == PROPOSALS
    with env.data() as data:
        assert data.store.load_stream("broken").watermark is None  # retried from the start


def test_corrupt_state_on_the_data_branch_is_rebuilt_with_a_warning_and_nothing_doubles(
    make_env: Callable[..., Env], caplog: pytest.LogCaptureFixture, reference: set[str]
) -> None:
    env = make_env()
    llm = FunctionLLM(answer)
    run_once(env, llm=llm)
    with env.data() as data:  # someone (or a bad merge) breaks both state files
        (data.state_dir / "ledger.json").write_text("{not json")
        (data.state_dir / "kestrel-users.json").write_text('{"watermark": "soon", "done_ids": 3}')
        data.save("corrupt")
    caplog.clear()
    report = run_once(env, llm=llm)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("ledger.json was not valid JSON" in w for w in warnings)
    assert any("kestrel-users.json had invalid" in w for w in warnings)
    # The ledger is rebuilt from nothing, yet the open PRs are found again by branch and marker.
    assert report.proposals_opened == [] and report.proposals_updated == []
    assert [why for _, why in report.skipped].count("already in the PR") == PROPOSALS
    assert_exactly_once(env, reference, judged_messages(llm))


def test_a_malformed_llm_reply_fails_its_batch_with_one_line_and_loses_nothing(
    make_env: Callable[..., Env], reference: set[str]
) -> None:
    env = make_env()
    broken = FunctionLLM(lambda request: '{"verdicts": [{"thread": 1}]')
    report = run_once(env, llm=broken)
    assert report.failed and all(
        "\n" not in why and "did not match the ClassifyReply schema" in why
        for _, why in report.failed
    )
    state, _ = saved_state(env)
    assert (state.watermark or 0) < LAST_ID and state.failures
    llm = FunctionLLM(answer)
    run_once(env, llm=llm)
    assert_exactly_once(env, reference, judged_messages(llm))
