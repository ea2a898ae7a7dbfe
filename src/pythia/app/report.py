"""What a run leaves behind: the JSON report, the job summary, the outputs and the exit code."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from urllib.parse import unquote, urlparse

from .. import actions
from ..models import RunReport
from .options import Options


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
    for url in report.proposals_previewed:
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


def record(report: RunReport, options: Options) -> Path:
    """The JSON report and the action's outputs, which every mode leaves behind."""
    path = report_path(options)
    write_report(report, path)
    actions.write_outputs(report, path)
    return path


def finish(report: RunReport, options: Options) -> int:
    """Summary, outputs, annotations and the exit code: non-zero exactly when a problem is an
    error (a fatal one, no stream read, or not one proposal published)."""
    record(report, options)
    actions.add_summary(actions.render_summary(report) + _dry_run_changes(report))
    if options.json:
        print(report_json(report))
    else:
        _print_lines(report)
    found = actions.problems(report)
    actions.annotate(found, actions=options.in_actions)
    return 1 if any(problem.level == "error" for problem in found) else 0


def _print_lines(report: RunReport) -> None:
    for url in report.proposals_opened:
        print(f"proposed: {report.proposal_lines.get(url, '')} -> {url}")
    for url in report.proposals_previewed:
        print(f"would open: {report.proposal_lines.get(url, '')} -> {url}")
    for url in report.proposals_updated:
        print(f"new evidence: {report.proposal_lines.get(url, '')} -> {url}")
    print(actions.outcome_line(report))
