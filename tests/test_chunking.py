"""Chunking markdown pages into heading sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from pythia.chunking import (
    MAX_TOKENS,
    Slugger,
    chunk_markdown,
    content_hash,
    github_slug,
    split_front_matter,
)
from pythia.usage import estimate_tokens

DOCS = Path(__file__).parent / "fixtures" / "sample-docs" / "docs"


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def headings(text: str, path: str = "page.md") -> list[tuple[str, str]]:
    return [(chunk.heading, chunk.anchor) for chunk in chunk_markdown(text, path=path)]


def test_nested_headings_carry_their_breadcrumb_and_anchor() -> None:
    result = headings(page("configuration.md"))

    assert result[:6] == [
        ("Configuration", "configuration"),
        ("Configuration > Tasks", "tasks"),
        ("Configuration > Tasks > Dependencies", "dependencies"),
        ("Configuration > Tasks > Inputs and outputs", "inputs-and-outputs"),
        ("Configuration > Tasks > Environment variables", "environment-variables"),
        (
            "Configuration > Tasks > Non-ASCII task names (café, naïve)",
            "non-ascii-task-names-café-naïve",
        ),
    ]
    assert result[6:] == [
        ("Configuration > Settings", "settings"),
        ("Configuration > Example project", "example-project"),
    ]


def test_a_shallower_heading_closes_deeper_ones() -> None:
    text = "# A\n\none\n\n### C\n\nthree\n\n## B\n\ntwo\n\n# D\n\nfour\n"

    assert [h for h, _ in headings(text)] == ["A", "A > C", "A > B", "D"]


def test_setext_headings_are_sections() -> None:
    chunks = chunk_markdown(page("installation.md"), path="installation.md")

    assert [c.heading for c in chunks] == [
        "Installation",
        "Installation > With pipx",
        "Installation > With Homebrew",
        "Installation > Shell completion",
        "Installation > Uninstalling",
    ]
    assert chunks[1].text.startswith("With pipx\n---------\n\nThe recommended way")
    assert chunks[0].title == "Installation"


def test_code_fences_with_hash_lines_are_not_headings_and_stay_whole() -> None:
    chunks = chunk_markdown(page("installation.md"), path="installation.md")
    completion = next(c for c in chunks if c.anchor == "shell-completion")

    assert "```bash\n# add this line to ~/.bashrc\neval" in completion.text
    assert completion.text.count("```") == 2


def test_front_matter_is_skipped_and_its_title_heads_the_breadcrumb() -> None:
    chunks = chunk_markdown(page("cache.md"), path="cache.md")

    assert all("description:" not in c.text and "---" not in c.text for c in chunks)
    assert {c.title for c in chunks} == {"Caching"}
    assert chunks[0].heading == "Caching"
    assert chunks[0].anchor == ""
    assert chunks[0].text.startswith("Kestrel caches the results")
    assert chunks[2].heading == "Caching > Location > Changing the cache location"


def test_a_page_with_its_own_h1_keeps_it_over_the_front_matter_title() -> None:
    text = "---\ntitle: Short\n---\n# Long title\n\nbody\n\n## Part\n\nmore\n"

    assert [c.heading for c in chunk_markdown(text, path="p.md")] == [
        "Long title",
        "Long title > Part",
    ]


def test_broken_front_matter_is_still_skipped() -> None:
    data, body = split_front_matter("---\ntitle: [unclosed\n---\nBody text\n")

    assert data == {}
    assert body == "Body text\n"


def test_text_without_closing_front_matter_fence_is_kept() -> None:
    assert split_front_matter("---\nnot front matter\n") == ({}, "---\nnot front matter\n")


def test_empty_sections_produce_no_chunk() -> None:
    text = "# Guide\n\n## Empty\n\n## Also empty\n\n### Full\n\nSome words.\n\n## Last\n"

    assert headings(text) == [("Guide > Also empty > Full", "full")]


def test_cli_parent_heading_without_body_makes_no_chunk() -> None:
    anchors = [anchor for _, anchor in headings(page("cli.md"))]

    assert "commands" not in anchors
    assert anchors[0] == "command-line"


def test_a_long_section_is_split_on_block_boundaries() -> None:
    paragraphs = [f"Paragraph {n} " + "about caching and tasks " * 20 for n in range(12)]
    fence = "```toml\n# a comment\n" + "key = 1\n" * 60 + "```"
    body = "\n\n".join([*paragraphs[:6], fence, *paragraphs[6:]])
    chunks = chunk_markdown(f"# Guide\n\n## Long one\n\n{body}\n", path="p.md")

    assert len(chunks) > 3
    assert {c.anchor for c in chunks} == {"long-one"}
    assert {c.heading for c in chunks} == {"Guide > Long one"}
    assert chunks[0].text.startswith("## Long one\n\nParagraph 0")
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert estimate_tokens(chunk.text) <= MAX_TOKENS
        assert chunk.text.count("```") in (0, 2)
        assert not chunk.text.startswith("\n") and not chunk.text.endswith("\n")
    rejoined = "\n\n".join(c.text for c in chunks)
    for paragraph in paragraphs:
        assert rejoined.count(paragraph.strip()) == 1


def test_a_block_larger_than_the_limit_stays_whole() -> None:
    fence = "```\n" + "x = 1\n" * 600 + "```"
    chunks = chunk_markdown(f"## Big\n\nIntro.\n\n{fence}\n\nOutro.\n", path="p.md")

    assert sum(fence in c.text for c in chunks) == 1


def test_long_lists_split_between_items() -> None:
    items = "\n".join(f"- item {n}: " + "word " * 60 for n in range(20))
    chunks = chunk_markdown(f"## List\n\n{items}\n", path="p.md")

    assert len(chunks) > 1
    assert chunks[0].text.startswith("## List\n\n- item 0:")
    assert all(c.text.startswith("- item") for c in chunks[1:])


def test_the_long_kestrel_run_section_is_split() -> None:
    chunks = [c for c in chunk_markdown(page("cli.md"), path="cli.md") if c.anchor == "kestrel-run"]

    assert len(chunks) == 2
    assert chunks[0].text.startswith("### kestrel run")
    assert all(c.heading == "Command line > Commands > kestrel run" for c in chunks)


def test_non_ascii_headings_get_github_anchors() -> None:
    faq = headings(page("faq.md"), "faq.md")

    assert (
        "Frequently asked questions > Où trouver de l'aide en français ?",
        "où-trouver-de-laide-en-français-",
    ) in faq


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Hello World!", "hello-world"),
        ("foo_bar-baz", "foo_bar-baz"),
        ("C++ & Rust", "c--rust"),
        ("🚀 Launch", "-launch"),
        ("Größe ändern", "größe-ändern"),
        ("キャッシュの場所", "キャッシュの場所"),
        ("What's new in 3.0?", "whats-new-in-30"),
    ],
)
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_repeated_headings_get_numbered_anchors() -> None:
    slugger = Slugger()

    assert [slugger.slug(t) for t in ["Usage", "Usage", "Usage", "Usage-1"]] == [
        "usage",
        "usage-1",
        "usage-2",
        "usage-1-1",
    ]


def test_inline_markup_is_unwrapped_in_headings() -> None:
    text = "## Install `kestrel` with [pipx](https://pipx.pypa.io) *fast*\n\nbody\n"

    assert headings(text) == [("Install kestrel with pipx fast", "install-kestrel-with-pipx-fast")]


def test_mdx_module_lines_are_dropped_and_components_kept() -> None:
    text = (
        "import Tabs from '@theme/Tabs';\nexport const x = 1;\n\n# Setup\n\n"
        '<Tabs>\n<TabItem value="pip">\n\nRun pip.\n\n</TabItem>\n</Tabs>\n'
    )
    chunks = chunk_markdown(text, path="setup.mdx")

    assert [c.heading for c in chunks] == ["Setup"]
    assert "import Tabs" not in chunks[0].text
    assert "Run pip." in chunks[0].text


def test_windows_line_endings_and_bom_are_normalised() -> None:
    unix = chunk_markdown("# Title\n\nBody line.\n", path="p.md")

    assert chunk_markdown("\ufeff# Title\r\n\r\nBody line.\r\n", path="p.md") == unix


def test_content_hash_covers_heading_and_text() -> None:
    chunk = chunk_markdown("# A\n\nbody\n", path="p.md")[0]

    assert chunk.content_hash == content_hash(heading="A", text="# A\n\nbody")
    assert content_hash(heading="B", text=chunk.text) != chunk.content_hash
    assert content_hash(heading="A", text="# A\n\nother") != chunk.content_hash


def test_every_sample_page_chunks_with_titles_and_no_empty_text() -> None:
    for file in sorted(DOCS.glob("*.md")):
        chunks = chunk_markdown(file.read_text(encoding="utf-8"), path=file.name)
        assert chunks, file.name
        assert all(c.text.strip() and c.title for c in chunks), file.name
