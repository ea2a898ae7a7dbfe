"""A repository's own docs check command: run in a scratch copy of the repository with the edit
applied, with no secrets in its environment, stopped at its time limit."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest

from pythia.checkcommand import (
    build_scratch,
    command_environment,
    run_check_command,
    scratch_copy,
)
from pythia.edits import PathRefused

# ---------------------------------------------------------------- the check command


SECRETS = {
    "GITHUB_TOKEN": "ghs_secret1",
    "GEMINI_API_KEY": "gem_secret2",
    "TELEGRAM_SESSION": "tg_secret3",
    "TELEGRAM_API_ID": "12345",
    "ZULIP_API_KEY": "zu_secret4",
    "ZULIP_EMAIL": "bot@example.com",
    "NPM_TOKEN": "npm_secret5",
    "AWS_SECRET_ACCESS_KEY": "aws_secret6",
    "DEPLOY_KEY": "deploy_secret7",
    "ACTIONS_RUNTIME_TOKEN": "rt_secret8",
    "INPUT_GEMINI-API-KEY": "input_secret9",
}
PLAIN = {"PATH": "/usr/bin:/bin", "HOME": "/home/runner", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def test_the_command_environment_keeps_path_home_locale_and_drops_secrets() -> None:
    environment = command_environment({**PLAIN, **SECRETS, "OTHER": "x", "GITHUB_WORKSPACE": "/w"})
    assert environment == PLAIN


def test_variables_kept_by_name_still_lose_secrets() -> None:
    environ = {**PLAIN, **SECRETS, "MKDOCS_SITE": "x"}
    keep = ["MKDOCS_SITE", "GITHUB_TOKEN", "NPM_TOKEN", "DEPLOY_KEY"]
    assert command_environment(environ, keep=keep) == {**PLAIN, "MKDOCS_SITE": "x"}


def python(code: str) -> str:
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def environ_with_secrets() -> dict[str, str]:
    import os

    return {**os.environ, **SECRETS}


def test_a_passing_command_is_ok(tmp_path: Path) -> None:
    result = run_check_command(
        python("print('built')"), cwd=tmp_path, environ=environ_with_secrets()
    )
    assert result.ok and result.exit_code == 0 and not result.timed_out
    assert result.tail == "built"
    assert result.feedback() == ""


def test_a_failing_command_gives_its_last_lines(tmp_path: Path) -> None:
    code = "import sys\nfor i in range(50): print(f'line {i}')\nsys.exit(3)"
    result = run_check_command(python(code), cwd=tmp_path, environ=environ_with_secrets())
    assert not result.ok and result.exit_code == 3
    assert result.tail.splitlines() == [f"line {i}" for i in range(30, 50)]
    feedback = result.feedback()
    assert "failed (exit 3)" in feedback and "line 49" in feedback and "line 29" not in feedback


def test_sh_exit_1_fails_with_nothing_printed(tmp_path: Path) -> None:
    result = run_check_command("sh -c 'exit 1'", cwd=tmp_path, environ=environ_with_secrets())
    assert not result.ok and result.exit_code == 1 and result.tail == ""
    assert result.feedback().endswith("It printed nothing.")


def test_stderr_counts_and_long_lines_are_clipped(tmp_path: Path) -> None:
    code = "import sys; sys.stderr.write('E' * 5000 + '\\nWARNING boom\\n'); sys.exit(1)"
    result = run_check_command(python(code), cwd=tmp_path, environ=environ_with_secrets())
    first, second = result.tail.splitlines()
    assert len(first) == 300 and first.endswith("…")
    assert second == "WARNING boom"


def test_the_command_sees_no_secrets(tmp_path: Path) -> None:
    result = run_check_command(
        "env; exit 1", cwd=tmp_path, environ=environ_with_secrets(), max_lines=1000
    )
    for secret in SECRETS.values():
        assert secret not in result.tail
    assert "PATH=" in result.tail


def test_the_command_runs_in_the_scratch_directory(tmp_path: Path) -> None:
    (tmp_path / "mkdocs.yml").write_text("site_name: x\n")
    result = run_check_command(
        python("import os; print(sorted(os.listdir('.')))"),
        cwd=tmp_path,
        environ=environ_with_secrets(),
    )
    assert result.tail == "['mkdocs.yml']"


def test_a_command_that_runs_too_long_is_stopped_with_its_children(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_check_command(
        "echo starting; sleep 30 & sleep 30",
        cwd=tmp_path,
        environ=environ_with_secrets(),
        timeout=0.5,
    )
    assert time.monotonic() - started < 10
    assert result.timed_out and not result.ok and result.exit_code is None
    assert result.tail == "starting"
    assert "did not finish within 0.5 s" in result.feedback()


# ---------------------------------------------------------------- the scratch copy


def make_repo(root: Path) -> Path:
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "index.md").write_text("# Home\n")
    (root / "docs" / "cache.md").write_text("# Cache\n")
    (root / "mkdocs.yml").write_text("site_name: x\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[http]\nextraheader = AUTHORIZATION: basic secret\n")
    (root / "node_modules" / "pkg").mkdir(parents=True)
    (root / "node_modules" / "pkg" / "index.js").write_text("")
    return root


def test_the_scratch_copy_has_the_edit_and_no_git(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    copy = build_scratch(
        repo,
        {"docs/cache.md": "# Cache\n\nNew.\n", "docs/guides/new.md": "# New\n"},
        tmp_path / "scratch",
    )
    assert (copy / "docs" / "cache.md").read_text() == "# Cache\n\nNew.\n"
    assert (copy / "docs" / "guides" / "new.md").read_text() == "# New\n"
    assert (copy / "docs" / "index.md").read_text() == "# Home\n"
    assert (copy / "mkdocs.yml").is_file()
    assert not (copy / ".git").exists()
    assert (copy / "node_modules").is_symlink()
    assert (copy / "node_modules" / "pkg" / "index.js").is_file()
    assert (repo / "docs" / "cache.md").read_text() == "# Cache\n"  # the original is untouched


def test_the_scratch_copy_keeps_line_endings(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    copy = build_scratch(repo, {"docs/cache.md": "# Cache\r\n"}, tmp_path / "scratch")
    assert (copy / "docs" / "cache.md").read_bytes() == b"# Cache\r\n"


@pytest.mark.parametrize("path", ["../escape.md", "/etc/passwd.md", "docs/../../escape.md"])
def test_the_scratch_copy_refuses_paths_that_leave_it(tmp_path: Path, path: str) -> None:
    repo = make_repo(tmp_path / "repo")
    with pytest.raises(PathRefused):
        build_scratch(repo, {path: "x"}, tmp_path / "scratch")
    assert not (tmp_path / "escape.md").exists()


def test_the_scratch_copy_does_not_write_through_a_symlinked_folder(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    outside = tmp_path / "outside"
    outside.mkdir()
    (repo / "docs" / "linked").symlink_to(outside)
    with pytest.raises(ValueError, match="outside the scratch copy"):
        build_scratch(repo, {"docs/linked/page.md": "x"}, tmp_path / "scratch")
    assert not (outside / "page.md").exists()


def test_a_check_runs_on_the_edited_copy_and_the_copy_is_removed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    check = python(
        "import pathlib, sys\n"
        "text = pathlib.Path('docs/cache.md').read_text()\n"
        "print('docs/cache.md: WARNING unclosed block') if '```' in text else print('ok')\n"
        "sys.exit(1 if '```' in text else 0)"
    )
    environ = environ_with_secrets()
    with scratch_copy(repo, {"docs/cache.md": "# Cache\n\n```\nopen\n"}) as copy:
        failed = run_check_command(check, cwd=copy, environ=environ)
        kept = copy
    assert not kept.exists()
    assert not failed.ok and "WARNING unclosed block" in failed.tail
    with scratch_copy(repo, {"docs/cache.md": "# Cache\n\nFine.\n"}) as copy:
        assert run_check_command(check, cwd=copy, environ=environ).ok
