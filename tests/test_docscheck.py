"""The docs check: what an edit breaks in Markdown structure and links, and a repository's own
check command run in a scratch copy with no secrets."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest

from pythia.docscheck import (
    Problem,
    build_scratch,
    check_docs,
    command_environment,
    docs_feedback,
    run_check_command,
    scratch_copy,
)
from pythia.edits import PathRefused

CACHE = """\
# Caching

uv caches downloads.

## Cache directory

Set `UV_CACHE_DIR` to move it. See [storage](../reference/storage.md).

## Clearing the cache

Run `uv cache clean`.

```console
$ uv cache clean ruff
```
"""

STORAGE = """\
# Storage

## Cache directory

Where the cache lives.

<a id="legacy-anchor"></a>
"""

INDEX = """\
# uv

Read about [clearing](concepts/cache.md#clearing-the-cache) and the
[cache directory](concepts/cache.md#cache-directory).
"""

TREE = {
    "index.md": INDEX,
    "concepts/cache.md": CACHE,
    "reference/storage.md": STORAGE,
    "assets/logo.png": "",
}


def read(path: str) -> str | None:
    return TREE.get(path)


def check(after: str, *, path: str = "concepts/cache.md", before: str | None = CACHE) -> list:
    befores = {path: before} if before is not None else {}
    return check_docs(befores, {path: after}, read=read, paths=TREE)


def kinds(problems: list[Problem]) -> list[str]:
    return [problem.kind for problem in problems]


# ---------------------------------------------------------------- structure


def test_an_unchanged_page_has_no_problems() -> None:
    assert check(CACHE) == []


def test_an_unclosed_fence_is_a_new_problem() -> None:
    after = CACHE + "\nAlso:\n\n```console\n$ uv cache prune\n"
    problems = check(after)
    assert kinds(problems) == ["unclosed-fence"]
    assert problems[0].line == after.split("\n").index("```console", 14) + 1
    assert "never closed" in problems[0].message


def test_a_fence_left_open_before_the_edit_is_not_blamed_on_it() -> None:
    before = CACHE + "\n```console\n$ uv cache prune\n"
    after = before.replace("uv caches downloads.", "uv caches every download.")
    assert check(after, before=before) == []


def test_a_closing_fence_with_more_backticks_closes() -> None:
    assert check(CACHE + "\n````toml\n[tool.uv]\n`````\n") == []


def test_front_matter_that_stops_being_yaml_is_a_problem() -> None:
    before = "---\ntitle: Cache\ntags: [a, b]\n---\n\n# Cache\n"
    after = before.replace("tags: [a, b]", "tags: [a, b")
    problems = check(after, before=before)
    assert kinds(problems) == ["front-matter"]
    assert "not valid YAML" in problems[0].message or "no longer valid YAML" in problems[0].message


def test_front_matter_whose_closing_line_is_removed_is_a_problem() -> None:
    before = "---\ntitle: Cache\n---\n\n# Cache\n"
    after = "---\ntitle: Cache\n\n# Cache\n"
    assert kinds(check(after, before=before)) == ["front-matter"]


def test_a_leading_rule_is_not_front_matter() -> None:
    text = "---\n\n# Cache\n\nText.\n"
    assert check(text + "More.\n", before=text) == []


def test_an_unclosed_html_comment_is_a_problem_but_not_in_code_or_mdx() -> None:
    assert kinds(check(CACHE + "\n<!-- TODO\n")) == ["unclosed-comment"]
    assert check(CACHE + "\n```html\n<!-- in code\n```\n") == []
    mdx_before = "# Page\n\nText.\n"
    assert check(mdx_before + "\n<!-- x\n", path="p.mdx", before=mdx_before) == []


def test_rst_pages_get_no_markdown_checks() -> None:
    before = "Title\n=====\n\nText.\n"
    after = before + "\n.. note::\n\n   See `this <nowhere.html>`_ and ```weird``.\n\n::\n\n"
    assert check(after, path="page.rst", before=before) == []


def test_mdx_imports_and_components_are_not_problems() -> None:
    before = "import Tabs from '@theme/Tabs';\n\n# Page\n\n<Tabs>\nText\n</Tabs>\n"
    after = before + "\nSee [the cache](/docs/cache) and [this](./page#page).\n"
    assert check(after, path="page.mdx", before=before) == []


# ---------------------------------------------------------------- links


def test_a_new_link_to_a_missing_page_is_reported_with_its_line() -> None:
    after = CACHE.replace("uv caches downloads.", "uv caches downloads ([more](./nowhere.md)).")
    problems = check(after)
    assert kinds(problems) == ["broken-link"]
    assert problems[0].line == 3
    assert "concepts/nowhere.md, which does not exist" in problems[0].message


def test_an_old_broken_link_in_a_touched_paragraph_is_not_new() -> None:
    before = CACHE.replace("uv caches downloads.", "uv caches downloads ([x](gone.md)).")
    after = before.replace("uv caches downloads", "uv caches all downloads")
    assert check(after, before=before) == []


def test_links_that_resolve_in_the_forms_site_tools_accept() -> None:
    added = (
        "\n[a](../reference/storage.md) [b](../reference/storage) [c](../) [d](../index.md)"
        " [e](../assets/logo.png) [f](../reference/)"
        " [g](../reference/storage.md?x=1#cache-directory)"
        " [h](#clearing-the-cache) [i](https://example.com/x.md) [j](/abs/path.md)"
        " [k](mailto:a@example.com) [l](../../../outside.md) [m](<../reference/storage.md>)\n"
    )
    assert check(CACHE + added) == []


def test_a_missing_anchor_names_the_page_and_suggests_headings() -> None:
    after = CACHE + "\nSee [storage](../reference/storage.md#cache-dir).\n"
    problems = check(after)
    assert kinds(problems) == ["missing-anchor"]
    assert "reference/storage.md has no heading" in problems[0].message
    assert "#cache-directory" in problems[0].message


def test_an_anchor_on_the_same_page_is_checked_against_the_edited_page() -> None:
    after = (
        CACHE.replace("## Clearing the cache", "## Cleaning the cache")
        + "\n[x](#cleaning-the-cache)\n"
    )
    problems = check(after)
    # The renamed heading breaks index.md's link, the new link to it is fine.
    assert kinds(problems) == ["removed-anchor"]
    assert problems[0].path == "index.md"
    assert problems[0].line == 3
    assert "#clearing-the-cache" in problems[0].message


def test_an_anchor_link_to_a_page_that_cannot_be_read_is_not_guessed() -> None:
    paths = {*TREE, "reference/settings.md"}  # listed by git, generated at build time
    after = CACHE + "\nSee [keys](../reference/settings.md#cache-keys).\n"
    assert (
        check_docs(
            {"concepts/cache.md": CACHE}, {"concepts/cache.md": after}, read=read, paths=paths
        )
        == []
    )


def test_a_new_page_is_checked_whole() -> None:
    page = "# Guide\n\n[ok](../concepts/cache.md#cache-directory) [bad](../concepts/cach.md)\n"
    problems = check(page, path="guides/new.md", before=None)
    assert kinds(problems) == ["broken-link"]
    assert problems[0].path == "guides/new.md"


def test_images_and_html_links_are_checked() -> None:
    after = CACHE + '\n![diagram](../assets/diagram.png)\n\n<a href="../reference/nope.md">x</a>\n'
    assert [p.message.split("`")[1] for p in check(after)] == [
        "../assets/diagram.png",
        "../reference/nope.md",
    ]


def test_links_inside_code_are_not_links() -> None:
    assert check(CACHE + "\n```markdown\n[x](nowhere.md)\n```\n\nUse `[x](gone.md)`.\n") == []


def test_docs_feedback_lists_every_problem() -> None:
    after = CACHE + "\n[x](gone.md)\n\n```console\n$ uv\n"
    message = docs_feedback(check(after))
    assert message.startswith("Your edit breaks the docs:")
    assert "gone.md" in message and "never closed" in message
    assert docs_feedback([]) == ""


def test_the_uv_docs_take_an_edit_to_a_page_with_upstream_broken_links() -> None:
    """uv links to generated pages (settings.md) that are not in the tree; old links are not new."""
    root = Path("/work/shared/corpora/uv-docs")
    if not root.is_dir():
        pytest.skip("the uv docs corpus is not on this machine")
    paths = {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}

    def read_uv(path: str) -> str | None:
        file = root / path
        return file.read_text(encoding="utf-8") if file.is_file() else None

    before = read_uv("concepts/cache.md")
    assert before is not None
    after = before.replace(
        "## Dynamic metadata",
        "## Dynamic metadata\n\nSee also [cache versioning](#cache-versioning).",
    )
    assert (
        check_docs(
            {"concepts/cache.md": before}, {"concepts/cache.md": after}, read=read_uv, paths=paths
        )
        == []
    )


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
