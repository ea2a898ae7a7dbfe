"""What a run leaves behind: the JSON report, the job summary, the outputs and the exit code."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from urllib.parse import unquote, urlparse

from .. import actions
from ..models import RunReport
from .options import Options

log = logging.getLogger("pythia")


def report_path(options: Options) -> Path:
    return (options.runner_temp or Path(tempfile.gettempdir())) / "pythia-report.json"


def report_json(report: RunReport) -> str:
    """The run report as JSON, with the totals the outputs carry (properties, not fields)."""
    data = {
        **asdict(report),
        "messages_read": report.messages_read,
        "threads_classified": report.threads_classified,
    }
    return json.dumps(data, indent=2, default=str)


def write_report(report: RunReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_json(report), encoding="utf-8")


def _dry_run_changes(report: RunReport) -> str:
    """In a dry run, the proposed diffs themselves, folded, so reviewers see them in the job."""
    if not report.dry_run:
        return ""
    parts = []
    for url in report.proposals_opened:
        if not url.startswith("file://"):
            continue
        patch = Path(unquote(urlparse(url).path)) / "change.patch"
        if patch.is_file():
            title = report.proposal_lines.get(url, patch.parent.name)
            diff = patch.read_text(encoding="utf-8").replace("```", "`​``")
            parts.append(
                f"<details><summary>{title}</summary>\n\n```diff\n{diff}```\n\n</details>\n"
            )
    return "\n### Proposed changes\n\n" + "\n".join(parts) if parts else ""


def finish(report: RunReport, options: Options) -> int:
    """Summary, outputs and the exit code: non-zero only when nothing could run."""
    path = report_path(options)
    write_report(report, path)
    actions.add_summary(actions.render_summary(report) + _dry_run_changes(report))
    actions.write_outputs(report, path)
    if options.json:
        print(report_json(report))
    else:
        _print_lines(report)
    for stream in report.streams:
        if stream.error:
            log.warning("stream %s: %s", stream.stream, stream.error)
    if report.fatal:
        print(f"error: {report.fatal}", file=sys.stderr)
        return 1
    if report.streams and all(
        stream.error and not stream.messages_read for stream in report.streams
    ):
        print("error: no stream could be read", file=sys.stderr)
        return 1
    return 0


def _print_lines(report: RunReport) -> None:
    for url in report.proposals_opened:
        print(f"proposed: {report.proposal_lines.get(url, '')} -> {url}")
    for url in report.proposals_updated:
        print(f"new evidence: {report.proposal_lines.get(url, '')} -> {url}")
    print(
        f"read {report.messages_read} messages, classified {report.threads_classified} "
        f"threads, opened {len(report.proposals_opened)}, updated "
        f"{len(report.proposals_updated)}, skipped {len(report.skipped)}, "
        f"failed {len(report.failed)}"
    )
    if report.stopped_early:
        print(f"stopped early: {report.stopped_early}")
