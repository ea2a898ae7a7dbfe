"""The GitHub Actions runtime: masking, groups, annotations, outputs and the job summary."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from .models import RunReport

MODES = ("auto", "run", "index", "command", "feedback")
EVENT_MODES = {
    "schedule": "run",
    "workflow_dispatch": "run",
    "push": "index",
    "issue_comment": "command",
    "pull_request": "feedback",
    "pull_request_target": "feedback",
}


class UnknownEvent(Exception):
    """`mode: auto` met an event it has no mode for."""


def in_actions(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("GITHUB_ACTIONS") == "true"


def mode_for(mode: str, event_name: str) -> str:
    """The mode to run: the one asked for, or the one `auto` picks for the event."""
    if mode not in MODES:
        raise UnknownEvent(f"mode '{mode}' is not one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    try:
        return EVENT_MODES[event_name]
    except KeyError:
        known = ", ".join(EVENT_MODES)
        raise UnknownEvent(
            f"mode 'auto' does not handle the '{event_name or 'unknown'}' event "
            f"(it handles {known}); set the action's `mode` input"
        ) from None


def _escape_data(value: str) -> str:
    # https://github.com/actions/toolkit/blob/main/packages/core/src/command.ts
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(value: str) -> str:
    return _escape_data(value).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str = "", out: TextIO | None = None, **props: str) -> None:
    """Print one workflow command, escaped."""
    stream = out or sys.stdout
    properties = ",".join(f"{k}={_escape_property(v)}" for k, v in props.items() if v)
    stream.write(f"::{name}{' ' + properties if properties else ''}::{_escape_data(message)}\n")
    stream.flush()


def mask(values: Iterable[str], out: TextIO | None = None) -> None:
    """Ask the runner to hide each secret (and each of its lines) from the logs."""
    for value in values:
        for line in {value, *value.splitlines()}:
            if line.strip():
                command("add-mask", line, out=out)


@contextmanager
def group(title: str, *, enabled: bool, out: TextIO | None = None) -> Iterator[None]:
    if enabled:
        command("group", title, out=out)
    try:
        yield
    finally:
        if enabled:
            command("endgroup", out=out)


def set_output(name: str, value: str, environ: Mapping[str, str] | None = None) -> None:
    """Append an output to $GITHUB_OUTPUT (multi-line safe); no-op outside Actions."""
    env = os.environ if environ is None else environ
    path = env.get("GITHUB_OUTPUT")
    if not path:
        return
    delimiter = f"pythia_{uuid.uuid4().hex}"
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def add_summary(markdown: str, environ: Mapping[str, str] | None = None) -> bool:
    """Append to $GITHUB_STEP_SUMMARY; returns whether there was one to write to."""
    env = os.environ if environ is None else environ
    path = env.get("GITHUB_STEP_SUMMARY")
    if not path:
        return False
    with Path(path).open("a", encoding="utf-8") as handle:
        handle.write(markdown)
    return True


class AnnotationFormatter(logging.Formatter):
    """Warnings and errors become annotations; the rest are plain lines."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"::error::{_escape_data(message)}"
        if record.levelno >= logging.WARNING:
            return f"::warning::{_escape_data(message)}"
        return message


class SecretFilter(logging.Filter):
    """Removes known secret values from every record, whatever the runner masks."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in self.secrets:
            message = message.replace(secret, "***")
        record.msg, record.args = message, None
        return True


def configure_logging(*, level: str, secrets: Iterable[str], actions: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter = (
        AnnotationFormatter("%(message)s")
        if actions
        else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    handler.setFormatter(formatter)
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpx2", "telethon", "urllib3", "github", "git", "google_genai"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


@dataclass(frozen=True)
class Problem:
    """Something a maintainer should see: an error fails the job, a warning does not."""

    level: Literal["error", "warning"]
    message: str


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def problems(report: RunReport) -> list[Problem]:
    """What went wrong in a run, one entry per cause; the job fails when any is an error.

    Fatal errors, and streams that could none of them be read, are errors. Publishing that
    failed for every proposal handed to it is an error per cause; when some got through, the
    causes are warnings. A stream that failed among others, a run that stopped early and
    conversations that failed are warnings.
    """
    found: list[Problem] = []
    if report.fatal:
        found.append(Problem("error", report.fatal))
    unread = bool(report.streams) and all(
        stream.error and not stream.messages_read for stream in report.streams
    )
    for stream in report.streams:
        if stream.error:
            level: Literal["error", "warning"] = "error" if unread else "warning"
            found.append(Problem(level, f"stream {stream.stream}: {stream.error}"))
    if unread:
        found.append(Problem("error", "no stream could be read"))
    causes = Counter(cause for _, cause in report.publish_failed)
    level = "error" if report.nothing_published else "warning"
    for cause, count in causes.items():
        found.append(Problem(level, f"{_count(count, 'proposal')} could not be published: {cause}"))
    if report.stopped_early and report.stopped_early not in causes:
        found.append(Problem("warning", f"stopped early: {report.stopped_early}"))
    publishing = {key for key, _ in report.publish_failed}
    others = [key for key, _ in report.failed if key not in publishing]
    if others:
        found.append(
            Problem(
                "warning",
                f"{_count(len(others), 'conversation')} failed and will be retried next run "
                "(the job summary's Failed table says why)",
            )
        )
    return found


def annotate(
    found: Sequence[Problem], *, actions: bool, out: TextIO | None = None
) -> None:
    """Each problem as an `::error::`/`::warning::` annotation in Actions, else on stderr."""
    for problem in found:
        if actions:
            command(problem.level, problem.message, out=out)
        else:
            print(f"{problem.level}: {problem.message}", file=out or sys.stderr)


def fail(messages: Sequence[str], *, title: str = "Pythia", out: TextIO | None = None) -> None:
    """A fatal error before any report: annotations and a job summary in Actions (so the run's
    page says what to fix), `error:` lines on stderr elsewhere."""
    actions = in_actions()
    annotate([Problem("error", message) for message in messages], actions=actions, out=out)
    if actions:
        quoted = "\n".join(f"> {message}" for message in messages)
        add_summary(f"## {title}\n\n> [!CAUTION]\n{quoted}\n")


def _mark(watermark: int | None) -> str:
    return "–" if watermark is None else str(watermark)


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(headers: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_summary(report: RunReport) -> str:
    """The job summary: what was read, classified, proposed, skipped, failed, and the cost."""
    title = "## Pythia run" + (" (dry run)" if report.dry_run else "")
    parts = [title + "\n"]
    if report.fatal:
        parts.append(f"> [!CAUTION]\n> {report.fatal}\n")
    if report.stopped_early:
        parts.append(f"> [!WARNING]\n> Stopped early: {report.stopped_early}\n")
    parts.append("### Read\n")
    parts.append(
        table(
            ["stream", "messages", "threads", "settled", "watermark", "error"],
            [
                [
                    s.stream,
                    s.messages_read,
                    s.threads,
                    s.threads_settled,
                    f"{_mark(s.watermark_before)} → {_mark(s.watermark_after)}",
                    s.error or "",
                ]
                for s in report.streams
            ]
            or [["(no streams)", 0, 0, 0, "", ""]],
        )
    )
    parts.append("### Classified\n")
    rows: list[list[object]] = [[k, v] for k, v in sorted(report.classified.items())]
    rows.append(["dropped by the prefilter", report.prefiltered])
    parts.append(table(["category", "threads"], rows))
    parts.append("### Proposed\n")
    lines = report.proposal_lines
    proposed: list[list[object]] = [
        ["opened", lines.get(url, ""), url] for url in report.proposals_opened
    ]
    proposed += [["would open", lines.get(url, ""), url] for url in report.proposals_previewed]
    proposed += [
        ["updated with new evidence", lines.get(url, ""), url] for url in report.proposals_updated
    ]
    parts.append(
        table(["what", "proposal", "where"], proposed) if proposed else "No proposals.\n"
    )
    if report.refused:
        parts.append("### Refused by the checks\n")
        parts.append(
            table(["check", "proposals"], [[k, v] for k, v in sorted(report.refused.items())])
        )
    if report.publish_failed:
        parts.append("### Could not publish\n")
        causes = Counter(cause for _, cause in report.publish_failed)
        parts.append(table(["cause", "proposals"], [[c, n] for c, n in causes.items()]))
    if report.skipped:
        parts.append("### Skipped\n")
        parts.append(table(["thread", "why"], [list(item) for item in report.skipped]))
    if report.failed:
        parts.append("### Failed\n")
        parts.append(table(["thread", "error"], [list(item) for item in report.failed]))
    parts.append("### Cost\n")
    usage_rows: list[list[object]] = [
        [
            stage,
            u.calls,
            u.input_tokens,
            u.output_tokens,
            u.thinking_tokens,
            f"${u.cost_usd:.4f}",
        ]
        for stage, u in sorted(report.usage.items())
    ]
    total = sum(u.cost_usd for u in report.usage.values())
    usage_rows.append(["total", "", "", "", "", f"${total:.4f}"])
    parts.append(table(["stage", "LLM calls", "input", "output", "thinking", "cost"], usage_rows))
    parts.append("### Time\n")
    parts.append(time_table(report))
    if report.embeddings_computed or report.embeddings_cached:
        parts.append(
            f"Docs index: {_count(report.embeddings_computed, 'chunk')} embedded by the model, "
            f"{report.embeddings_cached} taken from the embedding cache.\n"
        )
    return "\n".join(parts)


def time_table(report: RunReport) -> str:
    """Every stage's seconds, in the order they ran, and their total."""
    rows: list[list[object]] = [[k, f"{v:.1f}"] for k, v in report.stage_seconds.items()]
    rows.append(["total", f"{sum(report.stage_seconds.values()):.1f}"])
    return table(["stage", "seconds"], rows)


def outcome_line(report: RunReport) -> str:
    """The run in one line, as the CLI prints it and the `outcome` output carries it."""
    if report.outcome:
        return report.outcome
    opened = (
        f"would open {len(report.proposals_previewed)}"
        if report.dry_run
        else f"opened {len(report.proposals_opened)}"
    )
    return (
        f"read {report.messages_read} messages, classified {report.threads_classified} "
        f"threads, {opened}, updated {len(report.proposals_updated)}, skipped "
        f"{len(report.skipped)}, failed {len(report.failed)}"
    )


def outputs(report: RunReport, report_path: Path) -> dict[str, str]:
    """The action's outputs, in every mode: numbers are "0" where a mode does not do that."""
    return {
        "mode": report.mode,
        "outcome": outcome_line(report),
        "proposals-opened": str(len(report.proposals_opened)),
        "proposals-previewed": str(len(report.proposals_previewed)),
        "proposals-updated": str(len(report.proposals_updated)),
        "messages-read": str(report.messages_read),
        "threads-classified": str(report.threads_classified),
        "embeddings-computed": str(report.embeddings_computed),
        "answers-stored": str(report.answers_stored),
        "report": str(report_path),
    }


def write_outputs(
    report: RunReport, report_path: Path, environ: Mapping[str, str] | None = None
) -> None:
    for name, value in outputs(report, report_path).items():
        set_output(name, value, environ)
