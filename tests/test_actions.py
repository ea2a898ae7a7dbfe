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
        "answers-stored",
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


# ---------------------------------------------------------------- annotations and exit code


def publishing(attempts: int, failed: list[tuple[str, str]], **fields: object) -> RunReport:
    report = RunReport(streams=[StreamReport("tg", 5)], **fields)  # type: ignore[arg-type]
    report.publish_attempts, report.publish_failed = attempts, failed
    return report


def test_publishing_that_failed_for_every_proposal_is_one_error_per_cause() -> None:
    not_found = "GitHub answered 404 for o/r: Not Found"
    report = publishing(3, [("tg:1", not_found), ("tg:2", not_found), ("tg:3", "git push failed")])
    assert actions.problems(report) == [
        actions.Problem("error", f"2 proposals could not be published: {not_found}"),
        actions.Problem("error", "1 proposal could not be published: git push failed"),
    ]
    assert "### Could not publish" in actions.render_summary(report)


def test_publishing_that_failed_for_some_proposals_is_a_warning() -> None:
    report = publishing(
        2, [("tg:1", "git push failed")], proposals_opened=["https://github.com/o/r/pull/7"]
    )
    assert actions.problems(report) == [
        actions.Problem("warning", "1 proposal could not be published: git push failed")
    ]


def test_fatal_errors_unread_streams_and_partial_failures() -> None:
    assert actions.problems(RunReport(fatal="fix the setting")) == [
        actions.Problem("error", "fix the setting")
    ]
    unread = RunReport(streams=[StreamReport("tg", error="HTTP 500")])
    assert [p.level for p in actions.problems(unread)] == ["error", "error"]
    partial = sample_report()  # zulip broke, tg was read; one thread failed
    assert actions.problems(partial) == [
        actions.Problem("warning", "stream zulip: HTTP 500"),
        actions.Problem(
            "warning",
            "1 conversation failed and will be retried next run (the job summary's Failed "
            "table says why)",
        ),
    ]
    assert actions.problems(RunReport()) == []


def test_annotations_are_workflow_commands_in_actions_and_lines_elsewhere() -> None:
    found = [actions.Problem("error", "a\nb"), actions.Problem("warning", "c")]
    out = io.StringIO()
    actions.annotate(found, actions=True, out=out)
    assert out.getvalue() == "::error::a%0Ab\n::warning::c\n"
    out = io.StringIO()
    actions.annotate(found, actions=False, out=out)
    assert out.getvalue() == "error: a\nb\nwarning: c\n"


def test_a_fatal_error_in_a_workflow_is_an_annotation_and_a_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = io.StringIO()
    actions.fail(["GITHUB_REPOSITORY is 'x', not owner/name"], out=out)
    assert out.getvalue() == "::error::GITHUB_REPOSITORY is 'x', not owner/name\n"
    assert summary.read_text() == (
        "## Pythia\n\n> [!CAUTION]\n> GITHUB_REPOSITORY is 'x', not owner/name\n"
    )


def test_a_dry_run_says_would_open_and_counts_previews_not_opened_prs(tmp_path: Path) -> None:
    report = RunReport(
        dry_run=True,
        proposals_previewed=["file:///tmp/pythia-out/abc"],
        proposal_lines={"file:///tmp/pythia-out/abc": "[update] Cache moved (docs/cache.md)"},
    )
    text = actions.render_summary(report)
    assert "| would open | [update] Cache moved (docs/cache.md) | file:///tmp/pythia-out/abc |" in (
        text
    )
    assert "| opened |" not in text
    values = actions.outputs(report, tmp_path / "report.json")
    assert values["proposals-opened"] == "0" and values["proposals-previewed"] == "1"
    assert values["outcome"].startswith("read 0 messages, classified 0 threads, would open 1,")


def test_every_stage_is_timed_and_totalled() -> None:
    report = RunReport(stage_seconds={"start": 1.0, "index": 900.0, "ingest": 0.5})
    text = actions.render_summary(report)
    assert "| index | 900.0 |" in text
    assert "| total | 901.5 |" in text


def test_every_mode_sets_every_output(tmp_path: Path) -> None:
    for report in (
        RunReport(mode="index", outcome="9 files changed", embeddings_computed=46),
        RunReport(mode="command", outcome="/pythia explain: done"),
        RunReport(mode="feedback", outcome="recorded proposal 1234abcd as merged"),
    ):
        values = actions.outputs(report, tmp_path / "report.json")
        assert all(values.values()), values  # no empty strings
        assert values["mode"] == report.mode and values["outcome"] == report.outcome
        assert values["proposals-opened"] == "0"
