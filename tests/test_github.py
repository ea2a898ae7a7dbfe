"""The publisher, commands and feedback: REST replayed from cassettes, branches pushed to a local
bare origin."""

from __future__ import annotations

import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from github import Github

from gitrepo import git
from pythia.config import Publish
from pythia.models import Edit, Evidence, Hit, Proposal
from pythia.ports import PublishError
from pythia.prompts import environment
from pythia.publish.commands import handle_comment, parse_command, record_closed_pr
from pythia.publish.dryrun import DryRunPublisher
from pythia.publish.github import GitHubPublisher, github_client
from pythia.publish.render import (
    MAX_BODY_CHARS,
    branch_name,
    fingerprint_in,
    render_evidence_comment,
    render_pr_body,
)
from pythia.state import Ledger, LedgerEntry

NOW = datetime(2025, 3, 4, 9, 30, tzinfo=timezone.utc)
FINGERPRINT = "3f9a1c7e5b2d4a60c18e"
BRANCH = "pythia/document-https-proxy-and-a-custom-ca-for-3f9a1c7e"
TROUBLESHOOTING = "# Troubleshooting\n\n## The remote cache is unreachable\n\nCheck the URL.\n"
PROXY_SECTION = (
    "\n## Behind a corporate proxy\n\nKestrel honours `HTTPS_PROXY` and `NO_PROXY` for the remote "
    "cache since 2.3. Point `KESTREL_CA_BUNDLE` at your company's CA (`/path/to/ca.pem`).\n"
)


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GITHUB_API_URL", raising=False)


@pytest.fixture
def docs_repo(tmp_path: Path) -> Path:
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(origin), str(work))
    (work / "docs").mkdir()
    (work / "docs" / "troubleshooting.md").write_text(TROUBLESHOOTING)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "docs")
    git(work, "push", "-q", "origin", "HEAD:main")
    return work


def proposal(thread: str = "kestrel_users:101", **changes: Any) -> Proposal:
    values: dict[str, Any] = {
        "fingerprint": FINGERPRINT,
        "stream": "kestrel_users",
        "thread_key": thread,
        "category": "troubleshooting",
        "title": "Document HTTPS_PROXY and a custom CA for the remote cache",
        "summary": "Users behind a corporate proxy cannot reach the remote cache.",
        "reasoning": "Two users hit this; a maintainer gave the answer in chat.",
        "confidence": 0.86,
        "edits": (
            Edit(
                path="docs/troubleshooting.md",
                search="Check the URL.\n",
                replace="Check the URL.\n" + PROXY_SECTION,
            ),
        ),
        "diff": "--- a/docs/troubleshooting.md\n+++ b/docs/troubleshooting.md\n",
        "files": (("docs/troubleshooting.md", TROUBLESHOOTING + PROXY_SECTION),),
        "evidence": (
            Evidence(
                message_id=int(thread.rsplit(":", 1)[1]),
                author="user-5e1f",
                sent_at=NOW,
                quote="kestrel run times out on the remote cache at work, we have a proxy",
                permalink=f"https://t.me/kestrel_users/{thread.rsplit(':', 1)[1]}",
            ),
        ),
        "sources": (
            Hit(
                path="docs/troubleshooting.md",
                heading="The remote cache is unreachable",
                anchor="the-remote-cache-is-unreachable",
                score=0.82,
                text="Check the URL.",
            ),
        ),
    }
    return Proposal(**(values | changes))


def client() -> Github:
    return github_client(
        "test-github-token",
        base_url="https://api.github.com",
        seconds_between_requests=0,
        seconds_between_writes=0,
    )


def publisher(docs_repo: Path, ledger: Ledger, **config: Any) -> GitHubPublisher:
    return GitHubPublisher(
        repo_path=docs_repo,
        repository="kestrel/docs",
        github=client(),
        ledger=ledger,
        config=Publish.model_validate(config),
        clock=lambda: NOW,
    )


def remote_branch_file(docs_repo: Path, branch: str, path: str) -> str:
    return git(docs_repo.parent / "origin.git", "show", f"{branch}:{path}")


# --- pure parts ------------------------------------------------------------------------------


def test_branch_name_is_a_slug_plus_the_fingerprint() -> None:
    assert branch_name("pythia/", proposal().title, FINGERPRINT) == BRANCH
    assert branch_name("pythia/", "¿¡!", "abcdef0123") == "pythia/docs-abcdef01"


def test_pr_body_carries_marker_evidence_sources_and_commands() -> None:
    body = render_pr_body(proposal(), templates=environment())
    assert fingerprint_in(body) == FINGERPRINT
    assert "> kestrel run times out on the remote cache" in body
    assert "(https://t.me/kestrel_users/101)" in body
    assert "`docs/troubleshooting.md` › The remote cache is unreachable" in body
    assert "/pythia revise <instruction>" in body
    assert "86 %" in body
    quiet = render_pr_body(proposal(), templates=environment(), quotes=False)
    assert "times out" not in quiet and "https://t.me/kestrel_users/101" in quiet


def test_pr_body_stays_under_the_limit_by_dropping_evidence() -> None:
    many = tuple(
        Evidence(message_id=i, author="user-1", sent_at=NOW, quote="x" * 2000) for i in range(400)
    )
    body = render_pr_body(proposal(evidence=many), templates=environment())
    assert len(body) <= MAX_BODY_CHARS
    assert "more messages, left out" in body
    assert fingerprint_in(body) == FINGERPRINT


def test_dry_run_writes_files_and_honours_the_ledger(tmp_path: Path) -> None:
    ledger = Ledger()
    dry = DryRunPublisher(tmp_path / "pythia-out", ledger=ledger)
    published = dry.publish(proposal())
    assert published.action == "previewed"  # a dry run opens nothing
    folder = tmp_path / "pythia-out" / FINGERPRINT
    assert (folder / "proposal.md").read_text().startswith("# Document HTTPS_PROXY")
    assert (folder / "change.patch").read_text() == proposal().diff
    ledger.put(LedgerEntry(fingerprint=FINGERPRINT, status="rejected"))
    assert dry.publish(proposal()).action == "skipped"


def test_parse_command() -> None:
    assert parse_command("/pythia revise  keep it short\nthanks") == ("revise", "keep it short")
    assert parse_command("LGTM\n/pythia explain") == ("explain", "")
    assert parse_command("we use pythia /pythia for docs") is None


# --- publishing against recorded REST --------------------------------------------------------


@pytest.mark.vcr
def test_publishing_twice_opens_one_pr(docs_repo: Path, secrets_env: dict[str, str]) -> None:
    ledger = Ledger()
    first = publisher(docs_repo, ledger).publish(proposal())
    assert (first.action, first.number) == ("opened", 42)
    assert first.url == "https://github.com/kestrel/docs/pull/42"
    assert PROXY_SECTION.strip() in remote_branch_file(docs_repo, BRANCH, "docs/troubleshooting.md")
    assert git(docs_repo, "branch", "--show-current") == "main"
    assert git(docs_repo, "status", "--porcelain") == ""
    entry = ledger.get(FINGERPRINT)
    assert entry is not None
    assert (entry.status, entry.pr_number, entry.branch) == ("open", 42, BRANCH)
    # The same run again (say after a crash before state was saved): no second PR.
    again = publisher(docs_repo, Ledger()).publish(proposal())
    assert (again.action, again.number, again.reason) == ("skipped", 42, "already in the PR")


@pytest.mark.vcr
def test_new_evidence_goes_into_one_comment_edited_in_place(
    docs_repo: Path, secrets_env: dict[str, str]
) -> None:
    ledger = Ledger()
    ledger.put(
        LedgerEntry(
            fingerprint=FINGERPRINT,
            status="open",
            pr_number=42,
            branch=BRANCH,
            thread_keys=["kestrel_users:101"],
        )
    )
    second = publisher(docs_repo, ledger).publish(proposal("kestrel_users:230"))
    assert (second.action, second.number) == ("updated", 42)
    assert second.url == "https://github.com/kestrel/docs/pull/42#issuecomment-2690001"
    third = publisher(docs_repo, ledger).publish(proposal("kestrel_users:377"))
    assert third.action == "updated"
    entry = ledger.get(FINGERPRINT)
    assert entry is not None
    assert entry.evidence_comment_id == 2690001
    assert entry.thread_keys == ["kestrel_users:101", "kestrel_users:230", "kestrel_users:377"]


def test_a_closed_fingerprint_is_not_proposed_again(docs_repo: Path) -> None:
    ledger = Ledger()
    ledger.put(LedgerEntry(fingerprint=FINGERPRINT, status="rejected", pr_number=40))
    published = publisher(docs_repo, ledger).publish(proposal())
    assert published.action == "skipped"
    assert "rejected" in published.reason


@pytest.mark.vcr
def test_limits_leave_proposals_waiting(docs_repo: Path, secrets_env: dict[str, str]) -> None:
    ledger = Ledger()
    busy = publisher(docs_repo, ledger, max_open_prs=1)
    waiting = busy.publish(proposal(fingerprint="77aa00bb11cc22dd"))
    assert waiting.action == "waiting"
    assert "max_open_prs" in waiting.reason
    low = busy.publish(proposal(fingerprint="88aa00bb11cc22dd", confidence=0.2))
    assert (low.action, ledger.proposals["88aa00bb11cc22dd"].status) == ("waiting", "waiting")
    none_per_run = publisher(docs_repo, ledger, max_prs_per_run=0)
    assert none_per_run.publish(proposal(fingerprint="99aa00bb11cc22dd")).action == "waiting"
    assert sorted(e.status for e in ledger.proposals.values()) == ["waiting"] * 3
    # waiting proposals are parked whole (minus quotes) so a later run can publish them
    parked = ledger.proposals["77aa00bb11cc22dd"].parked
    assert parked is not None
    assert parked.fingerprint == "77aa00bb11cc22dd" and parked.files == proposal().files
    assert next(p.fingerprint for p in ledger.parked()) == "77aa00bb11cc22dd"


# --- feedback and commands -------------------------------------------------------------------


def closed_event(
    *, merged: bool, body: str = f"<!-- pythia:fingerprint={FINGERPRINT} -->"
) -> dict[str, Any]:
    return {
        "action": "closed",
        "number": 42,
        "pull_request": {
            "number": 42,
            "html_url": "https://github.com/kestrel/docs/pull/42",
            "merged": merged,
            "body": body,
            "title": "Document HTTPS_PROXY",
            "head": {"ref": BRANCH, "repo": {"full_name": "kestrel/docs"}},
            "base": {"ref": "main", "repo": {"full_name": "kestrel/docs"}},
        },
    }


def test_a_forks_pr_with_a_copied_marker_cannot_reject_a_proposal() -> None:
    ledger = Ledger()
    ledger.put(LedgerEntry(fingerprint=FINGERPRINT, status="open", pr_number=42, branch=BRANCH))
    forged = closed_event(merged=False)
    forged["pull_request"]["head"] = {"ref": BRANCH, "repo": {"full_name": "mallory/docs"}}
    assert record_closed_pr(forged, ledger, now=NOW) is None
    other_branch = closed_event(merged=False)
    other_branch["pull_request"]["head"]["ref"] = "feature/x"
    assert record_closed_pr(other_branch, ledger, now=NOW) is None
    assert ledger.proposals[FINGERPRINT].status == "open"


def test_closed_prs_teach_the_ledger() -> None:
    ledger = Ledger()
    ledger.put(LedgerEntry(fingerprint=FINGERPRINT, status="open", pr_number=42, branch=BRANCH))
    entry = record_closed_pr(closed_event(merged=False), ledger, now=NOW)
    assert entry is not None and entry.status == "rejected"
    lost = Ledger()
    entry = record_closed_pr(closed_event(merged=True), lost, now=NOW)
    assert entry is not None and (entry.status, entry.pr_number) == ("merged", 42)
    by_branch = Ledger()
    by_branch.put(LedgerEntry(fingerprint=FINGERPRINT, status="open", branch=BRANCH))
    assert record_closed_pr(closed_event(merged=False, body="edited"), by_branch) is not None
    assert record_closed_pr(closed_event(merged=False, body="not ours"), Ledger()) is None


def comment_event(body: str, login: str, comment_id: int | None = None) -> dict[str, Any]:
    # Each distinct comment has its own id, as on GitHub.
    comment_id = (
        comment_id if comment_id is not None else 2690100 + zlib.crc32(body.encode()) % 10**6
    )
    return {
        "action": "created",
        "issue": {
            "number": 42,
            "body": f"<!-- pythia:fingerprint={FINGERPRINT} -->",
            "pull_request": {"url": "https://api.github.com/repos/kestrel/docs/pulls/42"},
        },
        "comment": {"id": comment_id, "body": body, "user": {"login": login, "type": "User"}},
    }


def open_ledger() -> Ledger:
    ledger = Ledger()
    ledger.put(
        LedgerEntry(
            fingerprint=FINGERPRINT,
            status="open",
            pr_number=42,
            branch=BRANCH,
            category="troubleshooting",
            confidence=0.86,
            thread_keys=["kestrel_users:101"],
            paths=["docs/troubleshooting.md"],
            sources=[
                {
                    "path": "docs/troubleshooting.md",
                    "heading": "The remote cache is unreachable",
                    "score": 0.82,
                }
            ],
        )
    )
    return ledger


@pytest.mark.vcr
def test_only_writers_may_command(docs_repo: Path, secrets_env: dict[str, str]) -> None:
    ledger = open_ledger()
    outcome = handle_comment(
        comment_event("/pythia ignore", "drive-by"), publisher=publisher(docs_repo, ledger)
    )
    assert outcome.status == "denied"
    assert ledger.proposals[FINGERPRINT].status == "open"


@pytest.mark.vcr
def test_ignore_closes_and_explain_answers(docs_repo: Path, secrets_env: dict[str, str]) -> None:
    ledger = open_ledger()
    pub = publisher(docs_repo, ledger)
    explained = handle_comment(comment_event("/pythia explain", "maintainer-ana"), publisher=pub)
    assert explained.status == "done"
    assert "`docs/troubleshooting.md` › The remote cache is unreachable" in explained.reply
    ignored = handle_comment(comment_event("/pythia ignore", "maintainer-ana"), publisher=pub)
    assert ignored.status == "done"
    assert ledger.proposals[FINGERPRINT].status == "ignored"
    assert pub.publish(proposal()).action == "skipped"


@pytest.mark.vcr
def test_revise_pushes_to_the_same_branch(docs_repo: Path, secrets_env: dict[str, str]) -> None:
    ledger = open_ledger()
    pub = publisher(docs_repo, ledger)
    parent = pub.branches.fetch("main")
    first = pub.branches.commit(parent, proposal().files, "docs: Document HTTPS_PROXY")
    pub.branches.push(first, BRANCH, expected=None)
    asked: list[tuple[str, str]] = []

    def revise(fingerprint: str, instruction: str) -> Proposal:
        asked.append((fingerprint, instruction))
        shorter = TROUBLESHOOTING + "\n## Behind a proxy\n\nSet `HTTPS_PROXY`.\n"
        return proposal(files=(("docs/troubleshooting.md", shorter),))

    event = comment_event("/pythia revise make it one sentence", "maintainer-ana")
    outcome = handle_comment(event, publisher=pub, revise=revise)
    assert outcome.status == "done", outcome.reply
    assert asked == [(FINGERPRINT, "make it one sentence")]
    text = remote_branch_file(docs_repo, BRANCH, "docs/troubleshooting.md")
    assert text.endswith("Set `HTTPS_PROXY`.")
    log = git(docs_repo.parent / "origin.git", "log", "--format=%an|%s", BRANCH).splitlines()
    assert log[:2] == [
        "github-actions[bot]|docs: revise as asked in review",
        "github-actions[bot]|docs: Document HTTPS_PROXY",
    ]
    # A re-run of the same job (same comment) neither replies nor pushes again.
    again = handle_comment(event, publisher=pub, revise=revise)
    assert again.status == "ignored" and len(asked) == 1
    assert git(docs_repo.parent / "origin.git", "log", "--format=%s", BRANCH).count("revise") == 1


def test_evidence_comment_keeps_earlier_reports_and_replaces_a_rerun() -> None:
    first = render_evidence_comment(
        proposal("kestrel_users:230"), previous_body=None, templates=environment()
    )
    second = render_evidence_comment(
        proposal("kestrel_users:377"), previous_body=first, templates=environment()
    )
    assert second.count("<!-- pythia:evidence fingerprint=") == 1
    assert second.index("thread=kestrel_users:230") < second.index("thread=kestrel_users:377")
    rerun = render_evidence_comment(
        proposal("kestrel_users:377"), previous_body=second, templates=environment()
    )
    assert rerun == second


@pytest.mark.vcr
def test_a_pr_closed_while_no_workflow_listened_is_learned(
    docs_repo: Path, secrets_env: dict[str, str]
) -> None:
    ledger = open_ledger()
    published = publisher(docs_repo, ledger).publish(proposal())
    assert (published.action, published.number) == ("skipped", 42)
    assert ledger.proposals[FINGERPRINT].status == "rejected"


def test_a_pr_is_built_on_the_base_as_it_is_now_and_never_reverts_later_merges(
    docs_repo: Path, tmp_path: Path
) -> None:
    # A maintainer merges a new section after this run checked the docs out.
    other = tmp_path / "maintainer"
    git(tmp_path, "clone", "-q", str(tmp_path / "origin.git"), str(other))
    merged = TROUBLESHOOTING + "\n## Maintainer section\n\nAdded after the checkout.\n"
    (other / "docs" / "troubleshooting.md").write_text(merged)
    git(other, "commit", "-qam", "maintainer edit")
    git(other, "push", "-q", "origin", "HEAD:main")

    pub = publisher(docs_repo, Ledger())
    parent = pub.branches.fetch("main")
    files = dict(pub._rebased(proposal(), parent, "main"))
    text = files["docs/troubleshooting.md"]
    assert "## Maintainer section" in text and "## Behind a corporate proxy" in text

    # When the lines the edit needs are gone, publishing refuses instead of reverting.
    (other / "docs" / "troubleshooting.md").write_text("# Troubleshooting\n\nRewritten.\n")
    git(other, "commit", "-qam", "rewrite")
    git(other, "push", "-q", "origin", "HEAD:main")
    with pytest.raises(Exception, match="changed since the docs were read"):
        pub._rebased(proposal(), pub.branches.fetch("main"), "main")

    # A proposal parked under the limits meets the same check when its turn comes: it is
    # marked failed with the reason, not published over the maintainers' rewrite.
    ledger = Ledger()
    pub = publisher(docs_repo, ledger, base_branch="main")
    entry = ledger.put(
        LedgerEntry(fingerprint=FINGERPRINT, status="waiting", parked=proposal(), created_at=NOW)
    )
    with pytest.raises(PublishError, match="no longer apply"):
        pub._open(proposal(), entry)
    failed = ledger.get(FINGERPRINT)
    assert failed is not None and failed.status == "failed" and failed.parked is None
    assert "no longer apply" in failed.reason


def test_a_command_on_a_pr_with_a_copied_marker_touches_nothing(docs_repo: Path) -> None:
    # Someone copied the fingerprint marker into their own PR #99; a writer's `/pythia ignore`
    # there must neither close #99 nor bury the real proposal (#42). No API call is needed to
    # tell: the ledger knows the proposal under #42.
    ledger = open_ledger()
    pub = publisher(docs_repo, ledger)
    event = comment_event("/pythia ignore", "maintainer-ana")
    event["issue"]["number"] = 99
    outcome = handle_comment(event, publisher=pub)
    assert outcome.status == "ignored"
    assert ledger.proposals[FINGERPRINT].status == "open"
    assert ledger.proposals[FINGERPRINT].pr_number == 42


@pytest.mark.vcr
def test_a_lost_entry_counts_only_on_a_pythia_branch_of_this_repository(
    docs_repo: Path, secrets_env: dict[str, str]
) -> None:
    ledger = open_ledger()
    ledger.put(ledger.proposals[FINGERPRINT].model_copy(update={"pr_number": None}))
    pub = publisher(docs_repo, ledger)
    fork = comment_event("/pythia explain", "maintainer-ana")
    fork["issue"]["number"] = 99
    assert handle_comment(fork, publisher=pub).status == "ignored"
    assert ledger.proposals[FINGERPRINT].pr_number is None
    own = handle_comment(comment_event("/pythia explain", "maintainer-ana"), publisher=pub)
    assert own.status == "done"
    assert ledger.proposals[FINGERPRINT].pr_number == 42


def test_a_dry_run_keeps_every_report_of_one_fingerprint(tmp_path: Path) -> None:
    # Two conversations about one section: a real run opens one PR and adds the second as
    # evidence; the dry run shows the same, and the first proposal's files stay as written.
    dry = DryRunPublisher(tmp_path / "pythia-out")
    first = dry.publish(proposal("kestrel_users:101"))
    second = dry.publish(proposal("kestrel_users:230"))
    assert (first.action, second.action) == ("previewed", "updated")
    folder = tmp_path / "pythia-out" / FINGERPRINT
    assert "kestrel_users:101" in (folder / "proposal.md").read_text()
    evidence = (folder / "evidence.md").read_text()
    assert "kestrel_users:230" in evidence
    assert dry.publish(proposal("kestrel_users:101")).action == "skipped"  # a rerun
