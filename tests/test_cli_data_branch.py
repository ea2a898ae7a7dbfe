"""In a checkout with an `origin`, `pythia index` and `pythia status` use the pythia-data branch."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gitrepo import git
from pythia.app.cli import main

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in (
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "GITHUB_TOKEN",
        "PYTHIA_LOCAL",
        "GITHUB_ACTIONS",
    ):
        monkeypatch.delenv(name, raising=False)
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    repo = tmp_path / "docs-repo"
    shutil.copytree(FIXTURES / "sample-docs/docs", repo / "docs")
    (repo / ".github").mkdir()
    (repo / ".github/pythia.yml").write_text("docs: {root: docs}\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "docs")
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    return repo


def test_index_goes_to_the_data_branch_and_is_replaced_not_stacked(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["index", "--repo", str(checkout)]) == 0
    out = capsys.readouterr().out
    assert "pythia-data branch" in out and "(pushed)" in out
    origin = checkout.parent / "origin.git"
    files = git(origin, "ls-tree", "-r", "--name-only", "pythia-data").split()
    assert "index.sqlite" in files
    assert not (checkout / ".pythia").exists()  # nothing local, the user's tree untouched
    assert git(checkout, "status", "--porcelain") == ""

    (checkout / "docs/faq.md").write_text("# FAQ\n\n## New question\n\nA new answer here.\n")
    git(checkout, "commit", "-qam", "faq")
    assert main(["index", "--repo", str(checkout), "--json"]) == 0
    assert '"files_changed": 1' in capsys.readouterr().out
    versions = git(origin, "rev-list", "--all", "--objects")
    index_blobs = [line for line in versions.splitlines() if line.endswith(" index.sqlite")]
    assert len(index_blobs) == 1  # the old index commit was replaced


def test_search_and_status_read_the_data_branch(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["index", "--repo", str(checkout)]) == 0
    capsys.readouterr()
    assert main(["search", "--repo", str(checkout), "remote cache token", "-k", "2"]) == 0
    assert "docs/" in capsys.readouterr().out
    assert main(["status", "--repo", str(checkout)]) == 0
    assert "no state yet" in capsys.readouterr().out


def test_index_option_keeps_working_locally(
    checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "local.sqlite"
    assert main(["index", "--repo", str(checkout), "--index", str(target)]) == 0
    assert target.exists()
    assert "pythia-data" not in git(checkout, "ls-remote", str(checkout.parent / "origin.git"))


def test_run_without_streams_or_key_only_refreshes_the_index(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--repo", str(checkout)]) == 0
    captured = capsys.readouterr()
    assert "only the index is updated" in captured.err
    origin = checkout.parent / "origin.git"
    assert "index.sqlite" in git(origin, "ls-tree", "-r", "--name-only", "pythia-data")


def test_a_bad_log_level_is_one_line(checkout: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--repo", str(checkout), "--log-level", "loud"]) == 1
    assert capsys.readouterr().err == (
        "error: log level 'loud' is not one of debug, info, warning, error\n"
    )
