"""The "Pythia dashboard" issue: found by a hidden marker, created once, edited every run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import jinja2
from github import GithubException
from github.Issue import Issue
from github.Repository import Repository

from ..models import RunReport
from ..state import Ledger, StreamState, utcnow

log = logging.getLogger(__name__)

TITLE = "Pythia dashboard"
MARKER = "<!-- pythia:dashboard -->"
PIN_MUTATION = "mutation($id: ID!) { pinIssue(input: {issueId: $id}) { issue { number } } }"


def render_dashboard(
    *,
    report: RunReport,
    streams: Sequence[StreamState],
    ledger: Ledger,
    templates: jinja2.Environment,
    now: datetime | None = None,
    min_failures: int = 2,
) -> str:
    """The issue body; threads appear under failures once they failed `min_failures` times."""
    failing = [
        (stream.stream, key, failure)
        for stream in streams
        for key, failure in sorted(stream.failures.items())
        if failure.count >= min_failures
    ]
    return templates.get_template("dashboard.md.j2").render(
        marker=MARKER,
        now=now or utcnow(),
        report=report,
        streams=sorted(streams, key=lambda s: s.stream),
        open=ledger.with_status("open"),
        waiting=sorted(
            ledger.with_status("waiting", "failed"),
            key=lambda e: (len(e.thread_keys), len(e.people)),
            reverse=True,
        ),
        rejected=ledger.with_status("rejected", "ignored"),
        merged=ledger.with_status("merged"),
        failing=failing,
    )


def find_dashboard(repo: Repository, *, label: str = "pythia") -> Issue | None:
    """Our open dashboard issue, by label and marker (the search API lags and is rate-limited)."""
    for issue in repo.get_issues(state="open", labels=[label]):
        # PRs are issues too; `pull_request` is absent on plain issues, and reading an absent
        # attribute makes PyGithub fetch the issue again, so tell them apart by the URL.
        if MARKER in (issue.body or "") and "/pull/" not in issue.html_url:
            return issue
    return None


def update_dashboard(
    repo: Repository, body: str, *, label: str = "pythia", pin: bool = True
) -> Issue:
    """Edit the dashboard in place, or create (and try to pin) it on the first run."""
    issue = find_dashboard(repo, label=label)
    if issue is not None:
        if issue.body != body:
            issue.edit(body=body)
        return issue
    issue = repo.create_issue(title=TITLE, body=body, labels=[label])
    if pin:
        _pin(repo, issue)
    return issue


def _pin(repo: Repository, issue: Issue) -> None:
    # Pinning exists only in GraphQL (`pinIssue`); the REST API has no endpoint for it.
    try:
        repo.requester.graphql_query(PIN_MUTATION, {"id": issue.node_id})
    except GithubException as error:
        log.warning(
            "could not pin the dashboard issue #%s (GitHub answered %s); pin it by hand",
            issue.number,
            error.status,
        )
