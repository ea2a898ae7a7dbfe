"""The dashboard issue: rendered from state and the last run, created once, then edited in place."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from github.Repository import Repository

from pythia.models import RunReport, StreamReport
from pythia.prompts import environment
from pythia.publish.dashboard import MARKER, TITLE, render_dashboard, update_dashboard
from pythia.publish.github import github_client
from pythia.state import Failure, Ledger, LedgerEntry, StreamState

NOW = datetime(2025, 3, 4, 9, 45, tzinfo=timezone.utc)


def repo() -> Repository:
    client = github_client(
        "test-github-token",
        base_url="https://api.github.com",
        seconds_between_requests=0,
        seconds_between_writes=0,
    )
    return client.withLazy(True).get_repo("kestrel/docs")


def body() -> str:
    ledger = Ledger()
    ledger.put(
        LedgerEntry(
            fingerprint="3f9a1c7e",
            status="open",
            pr_number=42,
            title="Document HTTPS_PROXY and a custom CA for the remote cache",
            category="troubleshooting",
            thread_keys=["kestrel_users:101", "kestrel_users:230"],
        )
    )
    ledger.put(
        LedgerEntry(
            fingerprint="77aa00bb",
            status="waiting",
            title="Explain the Windows long-path error",
            reason="publish.max_prs_per_run (2) reached in this run",
        )
    )
    ledger.put(
        LedgerEntry(fingerprint="1b2c3d4e", status="rejected", pr_number=38, title="Rename --jobs")
    )
    streams = [
        StreamState(
            stream="kestrel_users",
            watermark=377,
            last_read_at=NOW,
            messages_read_total=412,
            failures={
                "kestrel_users:300": Failure(count=3, last_error="model reply was not valid JSON"),
                "kestrel_users:310": Failure(count=1, last_error="timeout"),
            },
        ),
        StreamState(stream="zulip-help"),
    ]
    report = RunReport(
        streams=[StreamReport(stream="kestrel_users", messages_read=37)],
        classified={"troubleshooting": 2, "no-doc-value": 5},
        proposals_opened=["https://github.com/kestrel/docs/pull/42"],
        skipped=[("kestrel_users:120", "maintainers already rejected this proposal #38")],
    )
    return render_dashboard(
        report=report, streams=streams, ledger=ledger, templates=environment(), now=NOW
    )


def test_dashboard_shows_streams_runs_proposals_and_failures() -> None:
    text = body()
    assert text.startswith(MARKER)
    assert "| 37 | 7 | 1 | 0 | 1 | 0 |" in text
    assert "| `kestrel_users` | 377 | 2025-03-04 09:45 UTC | 412 | 2 |" in text
    assert "| `zulip-help` | — | never | 0 | 0 |" in text
    assert "- #42 Document HTTPS_PROXY and a custom CA for the remote cache" in text
    assert "publish.max_prs_per_run (2) reached" in text
    assert "#38 Rename --jobs (rejected; not proposed again)" in text
    assert "`kestrel_users:300` failed 3 times: model reply was not valid JSON" in text
    assert "kestrel_users:310" not in text  # one failure is not "repeatedly"


@pytest.mark.vcr
def test_first_run_creates_and_pins_the_dashboard(secrets_env: dict[str, str]) -> None:
    issue = update_dashboard(repo(), body())
    assert (issue.number, issue.title) == (43, TITLE)


@pytest.mark.vcr
def test_later_runs_edit_the_dashboard_in_place(secrets_env: dict[str, str]) -> None:
    issue = update_dashboard(repo(), body())
    assert issue.number == 43
    assert issue.body == body()
