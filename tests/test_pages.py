"""Reading a docs page: line roles (Markdown, mkdocs containers, front matter, RST), link
targets and heading anchors."""

from __future__ import annotations

from pythia.pages import LineRole, page_anchors, page_links, read_page

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


def test_roles_tell_code_from_prose_and_fences() -> None:
    page = read_page(CACHE, path="concepts/cache.md")
    roles = dict(zip(page.lines, page.roles, strict=True))
    assert roles["# Caching"].kind == "heading"
    assert roles["uv caches downloads."].kind == "prose"
    assert roles["```console"].kind == "markup"
    assert roles["$ uv cache clean ruff"].kind == "code"
    assert roles["$ uv cache clean ruff"].language == "console"


def test_mkdocs_admonition_bodies_are_prose_and_their_fences_code() -> None:
    text = (
        '!!! note "Windows"\n\n'
        "    On Windows, the cache lives elsewhere.\n\n"
        "    ```console\n"
        "    $ uv cache dir\n"
        "    ```\n\n"
        '=== "Linux"\n\n'
        "    Plain text under a tab.\n"
    )
    page = read_page(text, path="a.md")
    roles = dict(zip(page.lines, page.roles, strict=True))
    assert roles["    On Windows, the cache lives elsewhere."].kind == "prose"
    assert roles["    $ uv cache dir"].kind == "code"
    assert roles["    Plain text under a tab."].kind == "prose"
    assert page.unclosed_fences == ()


def test_a_setext_underline_does_not_open_a_container() -> None:
    page = read_page("Title\n===\n\n    indented code\n", path="a.md")
    assert [role.kind for role in page.roles] == ["heading", "heading", "blank", "code", "blank"]


def test_front_matter_lines_are_front_matter() -> None:
    page = read_page("---\ntitle: Cache\n---\n\n# Cache\n", path="a.md")
    assert [role.kind for role in page.roles[:3]] == ["front-matter"] * 3
    assert page.roles[4].kind == "heading"


def test_rst_literal_blocks_are_code() -> None:
    text = (
        "Title\n=====\n\nRun this::\n\n    uv sync\n\nText again.\n\n"
        ".. code-block:: toml\n   :caption: x\n\n   [tool.uv]\n\nEnd.\n"
    )
    page = read_page(text, path="a.rst")
    roles = dict(zip(page.lines, page.roles, strict=True))
    assert roles["====="].kind == "markup"
    assert roles["    uv sync"].kind == "code"
    assert roles["Text again."].kind == "prose"
    assert roles["   [tool.uv]"] == LineRole("code", "toml")
    assert roles["   :caption: x"].kind == "markup"
    assert roles["End."].kind == "prose"


def test_links_are_found_in_markdown_and_html() -> None:
    text = (
        '[a](x.md#y) ![logo](img/logo.png)\n\n<p><a href="z.md">z</a></p>\n\n[ref]\n\n[ref]: r.md\n'
    )
    page = read_page(text, path="a.md")
    assert [(link.target, link.line) for link in page_links(page)] == [
        ("x.md#y", 0),
        ("img/logo.png", 0),
        ("z.md", 2),
        ("r.md", 4),
    ]


def test_anchors_follow_github_and_mkdocs_and_explicit_ids() -> None:
    text = (
        "# Caching & storage\n\n## The `uv.lock` file\n\n## Repeated\n\n## Repeated\n\n"
        "## Custom {#my-id}\n\n<span id='html-id'></span>\n"
    )
    anchors = page_anchors(read_page(text, path="a.md"))
    assert {"caching--storage", "caching-storage"} <= anchors  # GitHub keeps both dashes
    assert "the-uvlock-file" in anchors
    assert {"repeated", "repeated-1", "repeated_1"} <= anchors
    assert {"my-id", "html-id"} <= anchors
