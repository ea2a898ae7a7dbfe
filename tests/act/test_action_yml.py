"""action.yml against the CLI, the README and the workflows: every input reaches Pythia."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from pythia import actions
from pythia.app.cli import build_parser
from pythia.config import Secrets
from pythia.models import RunReport

ROOT = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
INPUTS: dict[str, dict[str, Any]] = ACTION["inputs"]
STEPS: list[dict[str, Any]] = ACTION["runs"]["steps"]
RUN_STEP = next(step for step in STEPS if step.get("id") == "pythia")
EXPRESSION = re.compile(r"^\$\{\{\s*inputs\.([\w-]+)\s*\}\}$")
# What `mode: auto` does for each event the docs-repo workflow listens to (issue 6).
EVENT_MODES = {
    "schedule": "run",
    "workflow_dispatch": "run",
    "push": "index",
    "issue_comment": "command",
    "pull_request": "feedback",
}


def inputs_in_env(step: dict[str, Any]) -> dict[str, str]:
    """env variable -> the input it carries, for `NAME: ${{ inputs.x }}` entries."""
    found = {}
    for name, value in (step.get("env") or {}).items():
        match = EXPRESSION.match(str(value))
        if match:
            found[name] = match.group(1)
    return found


def cli_arguments(env: dict[str, str]) -> Any:
    """The run step's command line with each env variable replaced by a marker, parsed."""
    script = RUN_STEP["run"].replace("\\\n", " ")
    for name, value in env.items():
        script = script.replace(f'"${name}"', shlex.quote(value))
    words = shlex.split(script)
    assert words[0] == "$PYTHIA_BIN", words[0]
    return build_parser().parse_args(words[1:])


def test_every_input_is_mapped_explicitly_and_reaches_the_cli() -> None:
    env = inputs_in_env(RUN_STEP)
    python_step = next(s for s in STEPS if str(s.get("uses", "")).startswith("actions/setup-py"))
    assert python_step["with"] == {
        "python-version": "${{ inputs.python-version }}",
        "update-environment": False,
    }
    # Each input goes somewhere exactly once; python-version is setup-python's.
    assert sorted([*env.values(), "python-version"]) == sorted(INPUTS)

    secrets = {name for name in env if name.lower() in Secrets.model_fields}
    flags = {name: f"<{input_name}>" for name, input_name in env.items() if name not in secrets}
    args = cli_arguments(flags)
    assert args.command == "action"
    for name, input_name in env.items():
        if name in secrets:
            continue
        assert str(getattr(args, input_name.replace("-", "_"))) == f"<{input_name}>", input_name

    # Secrets travel by environment, under the names Secrets.from_env reads.
    placeholders = {"TELEGRAM_API_ID": "12345"}
    loaded = Secrets.from_env({name: placeholders.get(name, "s3cr3t-value") for name in secrets})
    assert all(getattr(loaded, name.lower()) is not None for name in secrets)
    assert {"GEMINI_API_KEY", "GITHUB_TOKEN"} <= secrets


def test_inputs_are_kebab_case_with_a_one_line_description_and_an_example() -> None:
    for name, spec in INPUTS.items():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", name), name
        description = spec["description"]
        assert "\n" not in description and "e.g." in description, name
    assert INPUTS["github-token"]["default"] == "${{ github.token }}"
    assert INPUTS["mode"]["default"] == "auto"
    assert all(mode in INPUTS["mode"]["description"] for mode in actions.MODES)


def test_descriptions_hold_no_expressions() -> None:
    # GitHub evaluates ${{ }} in action.yml descriptions and refuses to load the action
    # ("Unrecognized named-value: 'secrets'"); act refuses it too.
    for section in ("inputs", "outputs"):
        for name, spec in ACTION[section].items():
            assert "${{" not in spec["description"], f"{section}.{name}"


def test_remote_actions_are_pinned_by_commit_with_their_release_named() -> None:
    text = (ROOT / "action.yml").read_text(encoding="utf-8")
    pins = re.findall(r"^\s+uses: ([\w./-]+)@(\S+) # (v\d+\.\d+\.\d+)$", text, re.MULTILINE)
    assert len(pins) == len([step for step in STEPS if "uses" in step])
    assert all(re.fullmatch(r"[0-9a-f]{40}", sha) for _, sha, _ in pins), pins
    assert {name for name, _, _ in pins} == {
        "actions/setup-python", "actions/cache/restore", "actions/cache/save",
        "actions/upload-artifact",
    }
    # One repository, one pin: restore and save come from the same actions/cache commit.
    assert len({sha for name, sha, _ in pins if name.startswith("actions/cache/")}) == 1


def test_the_callers_python_and_path_are_left_alone() -> None:
    python_step = next(s for s in STEPS if str(s.get("uses", "")).startswith("actions/setup-py"))
    assert python_step["with"]["update-environment"] is False
    for step in STEPS:
        assert "GITHUB_PATH" not in step.get("run", ""), step.get("name")
        assert "GITHUB_ENV" not in step.get("run", ""), step.get("name")


def step_named(name: str) -> dict[str, Any]:
    return next(step for step in STEPS if step.get("name") == name)


def test_the_environment_is_installed_from_the_lock_and_cached_on_it() -> None:
    find = step_named("Find Pythia's environment")["run"]
    assert "uv.lock" in find and "py$PYTHON_VERSION" in find  # the key covers lock and Python
    restore, save = step_named("Restore Pythia's environment"), step_named(
        "Save Pythia's environment"
    )
    assert restore["with"] == save["with"] == {
        "path": "${{ steps.env.outputs.venv }}",
        "key": "${{ steps.env.outputs.key }}",
    }
    install = step_named("Install Pythia")
    assert "steps.restore.outputs.cache-hit != 'true'" in install["if"]
    assert save["if"] == install["if"]
    assert "--frozen" in install["run"] and '"uv==$UV_VERSION"' in install["run"]
    assert install["env"]["UV_COMPILE_BYTECODE"] == "1"
    # One uv version everywhere: the action, CI, and the lock's own required-version.
    pinned = install["env"]["UV_VERSION"]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'required-version = "=={pinned}"' in pyproject
    assert f"UV_VERSION={pinned} " in (ROOT / ".ci/run").read_text(encoding="utf-8")
    assert "version = 1" in (ROOT / "uv.lock").read_text(encoding="utf-8")[:200]


def test_docs_embeddings_are_cached_and_dry_runs_upload_their_proposals() -> None:
    restore, save = step_named("Restore the docs embeddings"), step_named(
        "Save the docs embeddings"
    )
    assert restore["with"]["path"] == save["with"]["path"] == "${{ runner.temp }}/pythia-cache"
    assert restore["with"]["key"] == save["with"]["key"]
    assert restore["with"]["restore-keys"] == "pythia-embeddings-"
    assert RUN_STEP["env"]["PYTHIA_EMBEDDING_CACHE"].startswith(save["with"]["path"] + "/")
    assert "embeddings-computed != '0'" in save["if"]
    upload = step_named("Upload the dry run's proposals")
    assert "inputs.dry-run == 'true'" in upload["if"]
    assert upload["with"]["path"] == "${{ runner.temp }}/pythia-out"  # Options.from_action


def test_outputs_are_the_ones_pythia_writes(tmp_path: Path) -> None:
    for name, spec in ACTION["outputs"].items():
        assert spec["value"] == f"${{{{ steps.pythia.outputs.{name} }}}}"
    output_file = tmp_path / "output"
    actions.write_outputs(
        RunReport(), tmp_path / "report.json", environ={"GITHUB_OUTPUT": str(output_file)}
    )
    written = re.findall(r"^([\w-]+)<<", output_file.read_text(encoding="utf-8"), re.MULTILINE)
    assert sorted(written) == sorted(ACTION["outputs"])


def readme_table(heading: str, first_column: str) -> dict[str, list[str]] | None:
    """name -> the other cells, from the table under README's `heading` whose first column is
    `first_column`, if it is there."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(rf"^{heading}\n(.*?)(?=^## )", readme, re.MULTILINE | re.DOTALL)
    if section is None:
        return None
    table = re.search(rf"^\| {first_column} \|.*?(?=\n\n)", section.group(1), re.M | re.S)
    if table is None:
        return None
    rows = re.findall(r"^\| `([\w-]+)` \|(.*)\|$", table.group(0), re.MULTILINE)
    return {name: [cell.strip() for cell in rest.split(" | ")] for name, rest in rows}


def test_every_input_is_in_the_readme_table_with_its_default() -> None:
    table = readme_table("## Action inputs", "input")
    assert table is not None, "README.md has no '## Action inputs' table (was it renamed?)"
    assert sorted(table) == sorted(INPUTS)
    for name, spec in INPUTS.items():
        default, description = table[name][0].strip("`"), table[name][-1]
        assert default == str(spec.get("default", "")), name
        # The declaration and the docs agree: "required" in the docs only if declared so.
        assert ("required" in description.lower()) == bool(spec.get("required")), name


def test_every_output_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = re.search(r"^\| output \|.*?(?=\n\n)", readme, re.MULTILINE | re.DOTALL)
    assert table is not None, "README.md has no outputs table (| output | what it is |)"
    first_cells = re.findall(r"^\| ([^|]+) \|", table.group(0), re.MULTILINE)[1:]
    documented = {name.strip(" `") for cell in first_cells for name in cell.split(",")}
    assert documented == set(ACTION["outputs"])


def workflow_events(path: Path, *, text: str | None = None) -> set[str]:
    loaded = yaml.safe_load(text if text is not None else path.read_text(encoding="utf-8"))
    triggers = loaded.get("on", loaded.get(True))  # YAML 1.1 reads a bare `on` as true
    return set(triggers)


def readme_workflow() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return next(
        block
        for block in re.findall(r"```yaml\n(.*?)```", readme, re.DOTALL)
        if "uses: OWNER/pythia@v1" in block
    )


@pytest.mark.parametrize(("event", "mode"), sorted(EVENT_MODES.items()))
def test_auto_mode_follows_the_event_table(event: str, mode: str) -> None:
    assert actions.mode_for("auto", event) == mode


@pytest.mark.parametrize("workflow", ["README.md", ".github/workflows/pythia.yml"])
def test_every_event_the_workflows_listen_to_has_a_mode(workflow: str) -> None:
    path = ROOT / workflow
    text = readme_workflow() if workflow == "README.md" else None
    events = workflow_events(path, text=text)
    assert events == set(EVENT_MODES)
    for event in events:
        assert actions.mode_for("auto", event) == EVENT_MODES[event]
