"""The edit applier against the quirks of real model output, and its diffs against real git."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pythia.config import Docs
from pythia.diffs import changed_lines, unified_diff
from pythia.edits import (
    AmbiguousSearch,
    EditError,
    FileCreationRefused,
    OverlappingEdits,
    PathPolicy,
    PathRefused,
    SearchNotFound,
    apply_edits,
)
from pythia.globs import glob_match
from pythia.models import Edit

CACHE = """\
# Cache

Kestrel caches task results by a hash of their inputs.

## Where the cache lives

The cache lives in `~/.kestrel/cache`.
Set `KESTREL_CACHE_DIR` to put it elsewhere.

## Clearing the cache

Run `kestrel clean` to remove every cached result.
"""

CONFIG = """\
# Configuration

```toml
[tasks.build]
run = "make"
deps = ["fetch"]

[tasks.test]
run = "pytest"
deps = ["build"]
```

- Tasks:
    - `run` is the command.
    - `deps` lists tasks to run first.
"""

POLICY = PathPolicy(root="docs", include=("**/*.md",), new_file_dirs=("guides",))
TEXTS = {"docs/cache.md": CACHE, "docs/configuration.md": CONFIG}


def apply(*edits: Edit, texts: dict[str, str] | None = None) -> dict[str, str]:
    return apply_edits(TEXTS if texts is None else texts, edits, allowed=POLICY)


# ---------------------------------------------------------------- matching ladder


def test_exact_match_replaces_only_that_line() -> None:
    result = apply(
        Edit(
            "docs/cache.md",
            "The cache lives in `~/.kestrel/cache`.\n",
            "The cache lives in `~/.cache/kestrel` (before 3.0: `~/.kestrel/cache`).\n",
        )
    )
    assert result == {
        "docs/cache.md": CACHE.replace(
            "The cache lives in `~/.kestrel/cache`.",
            "The cache lives in `~/.cache/kestrel` (before 3.0: `~/.kestrel/cache`).",
        )
    }


def test_only_changed_files_are_returned() -> None:
    result = apply(Edit("docs/cache.md", "## Clearing the cache", "## Clearing the local cache"))
    assert list(result) == ["docs/cache.md"]


def test_search_without_final_newline_matches_whole_lines() -> None:
    result = apply(Edit("docs/cache.md", "## Clearing the cache", "## Clearing the local cache"))
    assert "## Clearing the local cache\n\nRun" in result["docs/cache.md"]


def test_trailing_whitespace_the_model_added_is_forgiven() -> None:
    result = apply(
        Edit(
            "docs/cache.md",
            "The cache lives in `~/.kestrel/cache`.   \n"
            "Set `KESTREL_CACHE_DIR` to put it elsewhere.\t\n",
            "The cache lives in `~/.cache/kestrel`.\n"
            "Set `KESTREL_CACHE_DIR` (an absolute path) to put it elsewhere.\n",
        )
    )
    assert (
        "`~/.cache/kestrel`.\nSet `KESTREL_CACHE_DIR` (an absolute path)" in result["docs/cache.md"]
    )


def test_trailing_whitespace_in_the_file_is_forgiven() -> None:
    texts = {"docs/faq.md": "# FAQ\n\nDoes Kestrel run on Windows?  \nYes.\n"}
    result = apply(
        Edit(
            "docs/faq.md",
            "Does Kestrel run on Windows?\nYes.",
            "Does Kestrel run on Windows?\nYes, 10+.",
        ),
        texts=texts,
    )
    assert result["docs/faq.md"] == "# FAQ\n\nDoes Kestrel run on Windows?\nYes, 10+.\n"


def test_indentation_shift_is_applied_to_the_replacement() -> None:
    # The model dropped the list's four-space indentation from both blocks.
    result = apply(
        Edit(
            "docs/configuration.md",
            "- `run` is the command.\n- `deps` lists tasks to run first.\n",
            "- `run` is the command.\n- `deps` lists tasks to run first.\n"
            "- `inputs` lists files whose hash keys the cache.\n",
        )
    )
    assert result["docs/configuration.md"].endswith(
        "    - `run` is the command.\n"
        "    - `deps` lists tasks to run first.\n"
        "    - `inputs` lists files whose hash keys the cache.\n"
    )


def test_indentation_shift_also_works_when_the_model_over_indents() -> None:
    result = apply(
        Edit(
            "docs/cache.md",
            "        Run `kestrel clean` to remove every cached result.",
            "        Run `kestrel clean` to remove every cached result of this project.",
        )
    )
    assert (
        "\nRun `kestrel clean` to remove every cached result of this project.\n"
        in (result["docs/cache.md"])
    )


def test_fenced_search_and_replace_are_unwrapped_when_the_file_has_no_fence() -> None:
    result = apply(
        Edit(
            "docs/cache.md",
            "```markdown\nRun `kestrel clean` to remove every cached result.\n```\n",
            "```markdown\nRun `kestrel clean` to remove every cached result.\n"
            "Add `--remote` to clear the remote cache too.\n```\n",
        )
    )
    assert result["docs/cache.md"].endswith(
        "Run `kestrel clean` to remove every cached result.\n"
        "Add `--remote` to clear the remote cache too.\n"
    )
    assert "```" not in result["docs/cache.md"]


def test_a_fence_that_is_really_in_the_file_is_kept() -> None:
    result = apply(
        Edit(
            "docs/configuration.md",
            '[tasks.test]\nrun = "pytest"\ndeps = ["build"]\n```\n',
            '[tasks.test]\nrun = "pytest -q"\ndeps = ["build"]\n```\n',
        )
    )
    assert 'run = "pytest -q"\ndeps = ["build"]\n```\n\n- Tasks:' in result["docs/configuration.md"]


def test_blank_lines_around_the_search_text_are_ignored() -> None:
    result = apply(
        Edit(
            "docs/cache.md",
            "\n\n## Clearing the cache\n\n\n",
            "\n\n## Clearing the cache (kestrel clean)\n\n\n",
        )
    )
    assert "\n## Clearing the cache (kestrel clean)\n\nRun" in result["docs/cache.md"]


def test_no_fuzzy_matching_beyond_whitespace() -> None:
    with pytest.raises(SearchNotFound) as caught:
        apply(Edit("docs/cache.md", "The cache lives in ~/.kestrel/cache.", "x"))
    message = str(caught.value)
    assert message.startswith("SEARCH block failed to exactly match lines in docs/cache.md.")
    assert (
        "Did you mean to match some of these actual lines:\nThe cache lives in `~/.kestrel/cache`."
        in (message)
    )


def test_partial_line_search_gets_a_whole_line_hint() -> None:
    with pytest.raises(SearchNotFound, match="only part of this line") as caught:
        apply(Edit("docs/cache.md", "`~/.kestrel/cache`", "`~/.cache/kestrel`"))
    assert caught.value.path == "docs/cache.md"
    assert "The cache lives in `~/.kestrel/cache`." in str(caught.value)


def test_unrelated_search_text_shows_no_misleading_lines() -> None:
    with pytest.raises(SearchNotFound, match="No part of the file resembles it"):
        apply(Edit("docs/cache.md", "Kestrel honours HTTPS_PROXY for downloads.", "x"))


def test_partial_line_found_in_several_lines_lists_them() -> None:
    with pytest.raises(SearchNotFound, match="only part of these lines") as caught:
        apply(Edit("docs/configuration.md", 'deps = ["', "x"))
    assert 'deps = ["fetch"]\ndeps = ["build"]' in str(caught.value)


def test_ambiguous_line_match_asks_for_context() -> None:
    texts = {"docs/faq.md": "# FAQ\n\nSee below.\n\n## Install\n\nSee below.\n"}
    with pytest.raises(AmbiguousSearch, match=r"matches 2 places in docs/faq\.md") as caught:
        apply(Edit("docs/faq.md", "See below.", "See the next section."), texts=texts)
    assert "add a few more lines" in str(caught.value)
    result = apply(
        Edit("docs/faq.md", "## Install\n\nSee below.", "## Install\n\nSee the next section."),
        texts=texts,
    )
    assert result["docs/faq.md"] == "# FAQ\n\nSee below.\n\n## Install\n\nSee the next section.\n"


def test_a_no_op_edit_is_an_error() -> None:
    with pytest.raises(EditError, match="changes nothing"):
        apply(Edit("docs/cache.md", "## Clearing the cache", "## Clearing the cache"))


def test_unknown_file_suggests_a_close_name() -> None:
    with pytest.raises(SearchNotFound, match=r"Did you mean docs/cache\.md\?"):
        apply(Edit("docs/caches.md", "# Cache", "# Caches"))


# ---------------------------------------------------------------- line endings


def test_crlf_file_is_matched_and_written_back_with_crlf() -> None:
    texts = {"docs/cli.md": "# CLI\r\n\r\nRun `kestrel run TASK`.\r\nUse `--jobs N`.\r\n"}
    result = apply(
        Edit(
            "docs/cli.md",
            "Run `kestrel run TASK`.\nUse `--jobs N`.\n",
            "Run `kestrel run TASK`.\nUse `--jobs N` (default: number of CPUs).\n",
        ),
        texts=texts,
    )
    assert result["docs/cli.md"] == (
        "# CLI\r\n\r\nRun `kestrel run TASK`.\r\nUse `--jobs N` (default: number of CPUs).\r\n"
    )


def test_crlf_in_the_search_text_matches_an_lf_file() -> None:
    result = apply(
        Edit("docs/cache.md", "## Clearing the cache\r\n", "## Clearing the local cache\r\n")
    )
    assert "\r" not in result["docs/cache.md"]


def test_file_without_final_newline_keeps_it_that_way() -> None:
    texts = {"docs/faq.md": "# FAQ\n\nAsk in the chat."}
    result = apply(
        Edit("docs/faq.md", "Ask in the chat.\n", "Ask in the Kestrel Users chat.\n"), texts=texts
    )
    assert result["docs/faq.md"] == "# FAQ\n\nAsk in the Kestrel Users chat."


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (".github/workflows/pythia.yml", "under .github/"),
        (".github/pythia/prompts/propose.md", "under .github/"),
        ("../escape.md", r"leaves the repository"),
        ("docs/../../escape.md", r"leaves the repository"),
        ("/etc/passwd.md", "absolute path"),
        ("C:\\docs\\cache.md", "absolute path"),
        ("docs/kestrel.toml", "not a documentation file"),
        ("docs/script.js", "not a documentation file"),
        ("README.md", "outside the docs folder docs/"),
        ("docs/CHANGELOG.txt", "not one of the docs files"),
    ],
)
def test_forbidden_paths_are_refused_whatever_the_model_says(path: str, reason: str) -> None:
    with pytest.raises(PathRefused, match=reason):
        apply(Edit(path, "anything", "something"))


def test_github_path_is_refused_even_when_the_callable_allows_everything() -> None:
    with pytest.raises(PathRefused, match=r"\.github/"):
        apply_edits({}, [Edit(".github/workflows/x.yml", "", "on: push\n")], allowed=lambda p: True)
    with pytest.raises(PathRefused, match=r"\.github/"):
        apply_edits({}, [Edit(".GitHub/README.md", "", "hi\n")], allowed=lambda p: True)


def test_callable_policy_can_refuse() -> None:
    with pytest.raises(PathRefused, match="not one of the docs files"):
        apply_edits(
            TEXTS, [Edit("docs/cache.md", "# Cache", "# The cache")], allowed=lambda p: False
        )


def test_windows_and_dotted_paths_are_normalised() -> None:
    result = apply(Edit("docs\\.\\cache.md", "# Cache", "# The cache"))
    assert list(result) == ["docs/cache.md"]


def test_policy_from_config_applies_include_and_exclude() -> None:
    policy = PathPolicy.from_config(
        Docs(root="docs", include=["**/*.md"], exclude=["**/CHANGELOG.md", "drafts/**"])
    )
    assert policy.allows("docs/cache.md")
    assert policy.allows("docs/guides/proxy.md")
    assert not policy.allows("docs/CHANGELOG.md")
    assert not policy.allows("docs/drafts/new.md")
    assert not policy.allows("docs/page.mdx")  # not included
    assert not policy.allows("site/cache.md")
    assert not policy.allows("docs/../README.md")


def test_glob_double_star_spans_zero_or_more_folders() -> None:
    assert glob_match("**/*.md", "cache.md")
    assert glob_match("**/*.md", "a/b/cache.md")
    assert not glob_match("*.md", "a/cache.md")
    assert glob_match("guides/**", "guides/a/b.md")


# ---------------------------------------------------------------- new files


def test_empty_search_creates_a_page_under_a_new_file_dir() -> None:
    result = apply(Edit("docs/guides/proxy.md", "", "# Behind a proxy\n\nSet `HTTPS_PROXY`."))
    assert result == {"docs/guides/proxy.md": "# Behind a proxy\n\nSet `HTTPS_PROXY`.\n"}


def test_empty_search_outside_new_file_dirs_is_refused() -> None:
    with pytest.raises(FileCreationRefused, match=r"only go under docs/guides/"):
        apply(Edit("docs/proxy.md", "", "# Behind a proxy\n"))


def test_empty_search_on_an_existing_file_is_refused() -> None:
    with pytest.raises(FileCreationRefused, match="already exists"):
        apply(Edit("docs/cache.md", "\n", "# Cache\n"))


def test_no_new_files_without_configured_dirs() -> None:
    with pytest.raises(FileCreationRefused, match="no new pages may be created"):
        apply_edits({}, [Edit("docs/new.md", "", "# New\n")], allowed=lambda p: True)


def test_explicit_new_file_dirs_override_the_policy() -> None:
    result = apply_edits(
        {},
        [Edit("docs/howto/proxy.md", "", "# Proxy\n")],
        allowed=POLICY,
        new_file_dirs=["docs/howto"],
    )
    assert list(result) == ["docs/howto/proxy.md"]


def test_new_page_with_empty_text_is_refused() -> None:
    with pytest.raises(FileCreationRefused, match="empty REPLACE"):
        apply(Edit("docs/guides/empty.md", "", "\n"))


# ---------------------------------------------------------------- several edits


def test_several_edits_to_one_file_apply_in_sequence() -> None:
    result = apply(
        Edit(
            "docs/cache.md",
            "The cache lives in `~/.kestrel/cache`.",
            "The cache lives in `~/.cache/kestrel`.",
        ),
        Edit(
            "docs/cache.md",
            "Run `kestrel clean` to remove every cached result.",
            "Run `kestrel clean` to remove every cached result.\nThe remote cache is not touched.",
        ),
    )
    text = result["docs/cache.md"]
    assert "`~/.cache/kestrel`" in text
    assert text.endswith("every cached result.\nThe remote cache is not touched.\n")


def test_all_or_nothing_when_the_second_edit_fails() -> None:
    texts = dict(TEXTS)
    with pytest.raises(SearchNotFound) as caught:
        apply(
            Edit("docs/cache.md", "## Clearing the cache", "## Clearing the local cache"),
            Edit("docs/configuration.md", "There is no such line.", "x"),
            texts=texts,
        )
    assert caught.value.index == 1
    assert str(caught.value).startswith("Edit 2 of 2: SEARCH block failed")
    assert "None of the edits were applied" in str(caught.value)
    assert texts == TEXTS  # the input was not touched either


def test_edit_matching_text_an_earlier_edit_replaced_is_an_overlap() -> None:
    with pytest.raises(OverlappingEdits, match="merge the overlapping edits"):
        apply(
            Edit(
                "docs/cache.md",
                "The cache lives in `~/.kestrel/cache`.\n"
                "Set `KESTREL_CACHE_DIR` to put it elsewhere.",
                "The cache lives in `~/.cache/kestrel`.\nSet `KESTREL_CACHE_DIR` to move it.",
            ),
            Edit("docs/cache.md", "Set `KESTREL_CACHE_DIR` to put it elsewhere.", "Set it."),
        )


def test_edit_matching_lines_an_earlier_edit_wrote_is_an_overlap() -> None:
    with pytest.raises(OverlappingEdits):
        apply(
            Edit(
                "docs/cache.md",
                "## Clearing the cache",
                "## Clearing the cache\n\nKestrel keeps results.",
            ),
            Edit("docs/cache.md", "Kestrel keeps results.", "Kestrel keeps task results."),
        )


def test_the_same_edit_twice_is_an_overlap() -> None:
    edit = Edit("docs/cache.md", "## Clearing the cache", "## Clearing the local cache")
    with pytest.raises(OverlappingEdits):
        apply(edit, edit)


def test_edits_to_adjacent_lines_do_not_overlap() -> None:
    result = apply(
        Edit(
            "docs/cache.md",
            "The cache lives in `~/.kestrel/cache`.",
            "The cache lives in `~/.cache/kestrel`.",
        ),
        Edit(
            "docs/cache.md",
            "Set `KESTREL_CACHE_DIR` to put it elsewhere.",
            "Set `KESTREL_CACHE_DIR` to an absolute path to put it elsewhere.",
        ),
    )
    assert (
        "`~/.cache/kestrel`.\nSet `KESTREL_CACHE_DIR` to an absolute path"
        in result["docs/cache.md"]
    )


# ---------------------------------------------------------------- diffs


def _git(repo: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=repo, input=stdin, text=True, capture_output=True, check=False
    )


@pytest.fixture
def docs_repo(tmp_path: Path) -> Path:
    files = {
        **TEXTS,
        "docs/cli.md": "# CLI\r\n\r\nUse `--jobs N`.\r\n",
        "docs/faq.md": "# FAQ\n\nAsk.",
    }
    for path, text in files.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(text.encode())
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit", "-qm", "docs")
    return tmp_path


def test_diff_applies_with_git_apply(docs_repo: Path) -> None:
    texts = {
        p: (docs_repo / p).read_bytes().decode()
        for p in ("docs/cache.md", "docs/cli.md", "docs/faq.md")
    }
    after = apply_edits(
        texts,
        [
            Edit(
                "docs/cache.md",
                "The cache lives in `~/.kestrel/cache`.",
                "The cache lives in `~/.cache/kestrel`.",
            ),
            Edit("docs/cli.md", "Use `--jobs N`.", "Use `--jobs N` (default: number of CPUs)."),
            Edit("docs/faq.md", "Ask.", "Ask in the chat."),
            Edit("docs/guides/proxy.md", "", "# Behind a proxy\n\nSet `HTTPS_PROXY`.\n"),
        ],
        allowed=POLICY,
    )
    diff = unified_diff(texts, after)
    new_file_header = (
        "diff --git a/docs/guides/proxy.md b/docs/guides/proxy.md\n"
        "new file mode 100644\n--- /dev/null\n+++ b/docs/guides/proxy.md\n"
    )
    assert new_file_header in diff
    assert "\\ No newline at end of file" in diff
    checked = _git(docs_repo, "apply", "--check", "-", stdin=diff)
    assert checked.returncode == 0, checked.stderr
    assert _git(docs_repo, "apply", "-", stdin=diff).returncode == 0
    for path, text in after.items():
        assert (docs_repo / path).read_bytes().decode() == text


def test_diff_of_unchanged_files_is_empty() -> None:
    assert unified_diff(TEXTS, dict(TEXTS)) == ""


def test_changed_lines_counts_additions_and_removals() -> None:
    after = {"docs/cache.md": CACHE.replace("## Clearing the cache", "## Clearing\n\nthe cache")}
    assert changed_lines(unified_diff(TEXTS, after)) == 4  # one removed, three added
    created = {"docs/guides/a.md": "# A\n\nB\n"}
    assert changed_lines(unified_diff({}, created)) == 3


def test_changed_lines_is_not_fooled_by_content_that_looks_like_headers() -> None:
    before = {"docs/x.md": "a\n-- not a header\nb\n"}
    after = {"docs/x.md": "a\n++ still content\nb\n"}
    assert changed_lines(unified_diff(before, after)) == 2


def test_a_failed_search_on_a_long_page_is_answered_quickly() -> None:
    # Scoring every window with difflib took minutes on a page like this.
    words = ["kestrel", "cache", "task", "run", "deps", "inputs", "outputs", "remote"]
    lines = [
        " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(10)) + f" {i}"
        for i in range(3000)
    ]
    page = "\n".join(lines) + "\n"
    typo = "\n".join(lines[1500:1510]).replace("cache", "cashe")
    with pytest.raises(SearchNotFound) as caught:  # its time: bench_pathological.py
        apply_edits({"docs/long.md": page}, [Edit("docs/long.md", typo, "x")], allowed=POLICY)
    assert lines[1500] in str(caught.value)


def test_trailing_whitespace_rung_comes_before_reindenting() -> None:
    # Only the top-level line matches once trailing spaces are ignored; reindenting would
    # also match the nested one and call the edit ambiguous.
    texts = {"docs/faq.md": "Run it.  \n\n- Steps:\n    Run it.\n"}
    result = apply(Edit("docs/faq.md", "Run it.", "Run it with `kestrel run`."), texts=texts)
    assert result["docs/faq.md"] == "Run it with `kestrel run`.\n\n- Steps:\n    Run it.\n"
