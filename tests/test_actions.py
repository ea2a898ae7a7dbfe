"""The Actions runtime: event modes, workflow commands, outputs, summary and masking."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from pythia import actions
from pythia.models import RunReport, StageUsage, StreamReport


@pytest.mark.parametrize(
    ("event", "mode"),
    [
        ("schedule", "run"),
        ("workflow_dispatch", "run"),
        ("push", "index"),
        ("issue_comment", "command"),
        ("pull_request", "feedback"),
    ],
)
def test_auto_picks_the_mode_by_event(event: str, mode: str) -> None:
    assert actions.mode_for("auto", event) == mode


def test_an_explicit_mode_wins_and_unknown_events_say_what_to_do() -> None:
    assert actions.mode_for("index", "schedule") == "index"
    with pytest.raises(actions.UnknownEvent, match="set the action's `mode` input"):
        actions.mode_for("auto", "release")
    with pytest.raises(actions.UnknownEvent, match="not one of"):
        actions.mode_for("sometimes", "push")


def test_commands_escape_newlines_and_percent() -> None:
    out = io.StringIO()
    actions.command("warning", "50% done\nnext", out=out, file="docs/a:b.md")
    assert out.getvalue() == "::warning file=docs/a%3Ab.md::50%25 done%0Anext\n"


def test_mask_covers_each_line_of_a_multiline_secret() -> None:
    out = io.StringIO()
    actions.mask(["line-one\nline-two", ""], out=out)
    lines = set(out.getvalue().splitlines())
    assert "::add-mask::line-one" in lines
    assert "::add-mask::line-two" in lines
    assert "::add-mask::line-one%0Aline-two" in lines


def test_outputs_are_heredoc_delimited(tmp_path: Path) -> None:
    output = tmp_path / "out"
    env = {"GITHUB_OUTPUT": str(output)}
    actions.set_output("report", "a\nb", env)
    name, rest = output.read_text().split("<<", 1)
    delimiter, body = rest.split("\n", 1)
    assert name == "report"
    assert body == f"a\nb\n{delimiter}\n"


def test_outputs_outside_actions_do_nothing(tmp_path: Path) -> None:
    actions.set_output("x", "1", {})
    assert actions.add_summary("# hi", {}) is False


def sample_report() -> RunReport:
    return RunReport(
        streams=[StreamReport("tg", 12, 4, 3, 100, 112), StreamReport("zulip", error="HTTP 500")],
        prefiltered=1,
        classified={"troubleshooting": 2, "no-doc-value": 1},
        proposals_opened=["https://github.com/o/r/pull/7"],
        skipped=[("tg:101", "confidence 0.20 is too low")],
        failed=[("tg:105", "edits did not apply | twice")],
        usage={"classify": StageUsage(1, 1000, 200, 0, 0.0008)},
        stage_seconds={"ingest": 0.5},
    )


def test_summary_has_every_table() -> None:
    text = actions.render_summary(sample_report())
    for heading in (
        "### Read",
        "### Classified",
        "### Proposed",
        "### Skipped",
        "### Failed",
        "### Cost",
        "### Time",
    ):
        assert heading in text
    assert "| tg | 12 | 4 | 3 | 100 → 112 |  |" in text
    assert "| zulip | 0 | 0 | 0 | – → – | HTTP 500 |" in text
    assert "https://github.com/o/r/pull/7" in text
    assert "edits did not apply \\| twice" in text
    assert "$0.0008" in text


def test_write_outputs(tmp_path: Path) -> None:
    output = tmp_path / "out"
    actions.write_outputs(sample_report(), tmp_path / "report.json", {"GITHUB_OUTPUT": str(output)})
    text = output.read_text()
    for name in (
        "proposals-opened",
        "proposals-updated",
        "messages-read",
        "threads-classified",
        "report",
    ):
        assert f"{name}<<" in text
    assert "\n12\n" in text


def test_logged_secrets_are_replaced_and_warnings_annotated() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(actions.AnnotationFormatter("%(message)s"))
    handler.addFilter(actions.SecretFilter(["AIzaSyTopSecretValue"]))
    logger = logging.getLogger("pythia.test.secret")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling with key %s", "AIzaSyTopSecretValue")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "::warning::calling with key ***\n"
