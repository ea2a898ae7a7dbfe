"""The docs check: what an edit breaks in Markdown structure, links and anchors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pythia.docscheck import Problem, check_docs, docs_feedback

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
