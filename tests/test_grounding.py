"""The grounding check: what an edit adds must have been said or be in the docs already."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pythia.claims import Claim
from pythia.docscheck import check_docs
from pythia.edits import apply_edits
from pythia.grounding import (
    Grounds,
    Ungrounded,
    added_lines,
    attribute_lines,
    find_ungrounded,
    grounding_feedback,
    refusal_reason,
)
from pythia.models import Edit

DOCS_ROOT = Path(__file__).parent / "fixtures" / "sample-docs"
DOCS = {
    str(path.relative_to(DOCS_ROOT)): path.read_text(encoding="utf-8")
    for path in sorted(DOCS_ROOT.rglob("*.md"))
}

# ---------------------------------------------------------------- grounds


@pytest.mark.parametrize(
    ("said", "claim", "grounded"),
    [
        ("try uv cache clean \u2014to-disk", Claim("--to-disk", "flag", ("--to-disk",)), True),
        ("use --foo", Claim("--foo", "flag", ("--foo",)), True),
        ("use --index-url", Claim("--index", "flag", ("--index",)), False),
        ("set uv_cache_dir", Claim("UV_CACHE_DIR", "env", ("UV_CACHE_DIR",)), False),
        ("set $UV_CACHE_DIR", Claim("UV_CACHE_DIR", "env", ("UV_CACHE_DIR",)), True),
        ("on 3.12.1 it fails", Claim("3.12", "version", ("3.12",)), False),
        ("on 3.12, it fails", Claim("3.12", "version", ("3.12",)), True),
        ("it's v0.4.2 now", Claim("0.4.2", "version", ("0.4.2",)), True),
        (
            "the \u201cpyproject.toml\u201d file",
            Claim("pyproject.toml", "path", ("pyproject.toml",)),
            True,
        ),
        (
            "see https://a.example/x/y",
            Claim("https://a.example/x", "url", ("https://a.example/x",)),
            False,
        ),
        (
            "see https://a.example/x.",
            Claim("https://a.example/x", "url", ("https://a.example/x",)),
            True,
        ),
    ],
)
def test_grounds_match_literally_within_word_boundaries(
    said: str, claim: Claim, grounded: bool
) -> None:
    assert Grounds([said]).holds(claim) is grounded


def ungrounded(edit_line: str, *, said: str, docs: str = "") -> list[tuple[str, str]]:
    before = {"page.md": "# Page\n\nIntro.\n"}
    after = {"page.md": f"# Page\n\nIntro.\n\n{edit_line}\n"}
    found = find_ungrounded(before, after, evidence=[said], docs=[docs])
    return [(item.token, item.kind) for item in found]


def test_a_flag_with_a_value_is_grounded_by_the_flag() -> None:
    assert ungrounded("Run `uv sync --python=3.12`.", said="uv sync --python 3.12") == []


def test_paths_are_grounded_in_their_usual_spellings() -> None:
    said = "it's in $HOME/.cache/uv and src/app/main.py"
    assert ungrounded("Look in `~/.cache/uv` and `./src/app/main.py`.", said=said) == []


def test_a_path_under_an_xdg_variable_needs_the_variable_and_its_default_said() -> None:
    line = "It lives in `~/.cache/kestrel` (or `$XDG_CACHE_HOME/kestrel`)."
    said = "It is under ~/.cache/kestrel now, and XDG_CACHE_HOME is honoured."
    assert ungrounded(line, said=said) == []
    # Without the variable, that the tool honours it is the edit's invention.
    assert ungrounded(line, said="It is under ~/.cache/kestrel now.") == [
        ("$XDG_CACHE_HOME/kestrel", "path")
    ]
    # Another place under it, or another variable's default, is not the place said.
    assert ungrounded("See `$XDG_CACHE_HOME/kestrel/blobs`.", said=said) == [
        ("$XDG_CACHE_HOME/kestrel/blobs", "path")
    ]
    config = "Set XDG_CONFIG_HOME, or edit ~/.cache/kestrel/config.toml"
    assert ungrounded("Edit `$XDG_CONFIG_HOME/kestrel/config.toml`.", said=config) == [
        ("$XDG_CONFIG_HOME/kestrel/config.toml", "path")
    ]
    assert (
        ungrounded(
            "Edit `$XDG_CONFIG_HOME/kestrel/config.toml`.", said=config.replace(".cache", ".config")
        )
        == []
    )


def test_a_dotted_config_key_may_be_said_in_parts() -> None:
    docs = "```toml\n[tool.uv]\nindex-url = 'x'\n```\n"
    assert ungrounded("Set `tool.uv.index-url`.", said="", docs=docs) == []
    assert ungrounded("Set `tool.uv.extra-url`.", said="", docs=docs) == [
        ("tool.uv.extra-url", "config-key")
    ]


def test_a_version_with_trailing_zeros_is_grounded_by_the_short_form() -> None:
    assert ungrounded("Fixed in uv 0.5.0.", said="fixed in 0.5") == []


def test_ordinary_words_and_sentence_starts_are_not_claims() -> None:
    line = "Afterwards, every step works. Then it stops; Later it resumes (Sometimes): Done."
    assert ungrounded(line, said="") == []


def test_what_the_rewritten_line_kept_is_grounded_by_the_old_line() -> None:
    before = {"page.md": "# Page\n\nRun `kestrel clean --all` to empty it.\n"}
    after = {"page.md": "# Page\n\nRun `kestrel clean --all` to empty the whole cache.\n"}
    assert find_ungrounded(before, after, evidence=[], docs=[]) == []


def test_an_upper_case_word_in_code_must_match_its_case() -> None:
    assert ungrounded("Set `NETRC` first.", said="the netrc file") == [("NETRC", "code")]
    assert ungrounded("Set `NETRC` first.", said="point NETRC at it") == []
    assert ungrounded("Run `Kestrel clean`.", said="kestrel clean") == []


# ---------------------------------------------------------------- added lines


def test_added_lines_are_the_new_and_rewritten_ones() -> None:
    before = "a\nb\nc\n"
    assert added_lines(before, "a\nB\nc\nd\n") == [1, 3]
    assert added_lines(before, "a\nc\n") == []
    assert added_lines(None, "x\n\ny\n") == [0, 2]
    assert added_lines("a\r\nb\r\n", "a\nb\n") == []


def test_only_added_lines_count_and_line_numbers_are_the_edited_files() -> None:
    before = {"page.md": "# Page\n\nOld `--made-up` flag stays.\n"}
    after = {"page.md": "# Page\n\nOld `--made-up` flag stays.\n\nNew `--also-made-up` flag.\n"}
    found = find_ungrounded(before, after, evidence=[], docs=[])
    assert found == [Ungrounded("--also-made-up", "flag", "page.md", 5)]


def test_a_code_block_opened_before_the_edit_still_reads_as_code() -> None:
    before = {"page.md": "# Page\n\n```console\n$ uv sync\n```\n"}
    after = {"page.md": "# Page\n\n```console\n$ uv sync\n$ uv lock --upgrade-all\n```\n"}
    found = find_ungrounded(before, after, evidence=["uv lock"], docs=[])
    assert [(item.token, item.kind, item.line) for item in found] == [("--upgrade-all", "flag", 5)]


def test_a_new_page_is_read_whole_and_each_token_reported_once() -> None:
    after = {"guides/new.md": "# New\n\nUse `--fast`.\n\nReally, use `--fast`.\n"}
    found = find_ungrounded({}, after, evidence=[], docs=[])
    assert found == [Ungrounded("--fast", "flag", "guides/new.md", 3)]


# ---------------------------------------------------------------- a hallucinating model


CONVERSATION = [
    "how do I keep kestrel's cache off my tiny SSD? it fills up",
    "set KESTREL_CACHE_DIR to a folder on another disk, e.g. /mnt/data/kestrel-cache",
    "and run `kestrel clean --all` once to empty the old one",
]

FAITHFUL = Edit(
    path="docs/cache.md",
    search="## Cache size\n",
    replace=(
        "## Cache size\n\n"
        "If the cache fills a small disk, move it with `KESTREL_CACHE_DIR` (see\n"
        "[Changing the cache location](#changing-the-cache-location)) and empty the old one:\n\n"
        "```console\n$ kestrel clean --all\n```\n"
    ),
)

HALLUCINATIONS = {
    "flag": ("`kestrel clean --to-disk` moves the cache.", "--to-disk"),
    "path": ("The cache can also live in `~/.config/kestrel/cache`.", "~/.config/kestrel/cache"),
    "env": ("Set `KESTREL_CACHE_LIMIT` to cap its size.", "KESTREL_CACHE_LIMIT"),
    "version": ("Since Kestrel 2.4.1 the cache is pruned.", "2.4.1"),
}


def edited(edit: Edit) -> tuple[dict[str, str], dict[str, str]]:
    after = apply_edits(DOCS, [edit], allowed=lambda path: True)
    return {path: DOCS[path] for path in after}, after


def run_checks(edit: Edit) -> tuple[list[Ungrounded], list[str]]:
    before, after = edited(edit)
    found = find_ungrounded(before, after, evidence=CONVERSATION, docs=DOCS.values())
    problems = check_docs(before, after, read=DOCS.get, paths=DOCS)
    return found, [problem.kind for problem in problems]


def test_a_faithful_proposal_passes_both_checks_untouched() -> None:
    assert run_checks(FAITHFUL) == ([], [])


@pytest.mark.parametrize("kind", sorted(HALLUCINATIONS))
def test_each_invented_token_is_caught(kind: str) -> None:
    line, token = HALLUCINATIONS[kind]
    edit = Edit(FAITHFUL.path, FAITHFUL.search, FAITHFUL.replace + "\n" + line + "\n")
    found, problems = run_checks(edit)
    assert [(item.token, item.kind) for item in found] == [(token, kind)]
    assert problems == []
    assert f"`{token}`" in grounding_feedback(found)


def test_an_invented_relative_link_is_caught_by_the_docs_check() -> None:
    edit = Edit(
        FAITHFUL.path,
        FAITHFUL.search,
        FAITHFUL.replace + "\nSee [disk usage](./disk-usage.md) and [pruning](#pruning).\n",
    )
    found, problems = run_checks(edit)
    assert found == []
    assert problems == ["broken-link", "missing-anchor"]


def test_the_feedback_names_each_token_and_what_to_do() -> None:
    found = [
        Ungrounded("--to-disk", "flag", "docs/cache.md", 12),
        Ungrounded("KESTREL_CACHE_LIMIT", "env", "docs/cache.md", 14),
        Ungrounded("--to-disk", "flag", "docs/cli.md", 3),
    ]
    message = grounding_feedback(found)
    assert message.splitlines() == [
        "Your edit adds things that are not in the conversation or the docs:",
        "- `--to-disk` (flag, docs/cache.md line 12) is not in the conversation or the docs; "
        "remove it or quote where it was said.",
        "- `KESTREL_CACHE_LIMIT` (environment variable, docs/cache.md line 14) is not in the "
        "conversation or the docs; remove it or quote where it was said.",
        "Use only what the participants said or what the docs already say, and send the whole "
        "proposal again.",
    ]
    assert grounding_feedback([]) == ""


def test_the_refusal_reason_is_one_sentence_with_a_limit() -> None:
    found = [Ungrounded(f"--flag-{n}", "flag", "a.md", n) for n in range(7)]
    reason = refusal_reason(found)
    assert reason.startswith("The edit adds what no one said and the docs do not have: `--flag-0`")
    assert reason.endswith("and 2 more.")
    assert refusal_reason([]) == ""


def test_soft_kinds_are_numbers_and_names() -> None:
    assert Ungrounded("30 seconds", "number", "a.md", 1).soft
    assert Ungrounded("Poetry", "name", "a.md", 1).soft
    assert not Ungrounded("--to-disk", "flag", "a.md", 1).soft


# ---------------------------------------------------------------- attribution


def test_each_added_line_names_the_messages_it_rests_on() -> None:
    before, after = edited(FAITHFUL)
    support = attribute_lines(before, after, evidence=CONVERSATION, docs=DOCS.values())
    by_text = {line.text: line.messages for line in support}
    # The question (its cache fills a disk) and the answer (the variable) both hold it up.
    line = "If the cache fills a small disk, move it with `KESTREL_CACHE_DIR` (see"
    assert by_text[line] == (0, 1)
    assert by_text["$ kestrel clean --all"] == (2,)
    assert "```console" not in by_text  # fences say nothing
    assert all(line.path == "docs/cache.md" for line in support)


def test_a_line_no_message_supports_gets_none() -> None:
    before = {"a.md": "# A\n"}
    after = {"a.md": "# A\n\nThe weather is lovely today.\n"}
    support = attribute_lines(before, after, evidence=["kestrel clean --all wipes it"])
    assert [(line.line, line.messages) for line in support] == [(3, ())]


def test_rare_shared_words_support_a_line_common_ones_do_not() -> None:
    docs = [f"# Page {n}\n\nThe cache and the task run here.\n" for n in range(20)]
    before = {"a.md": "# A\n"}
    after = {"a.md": "# A\n\nThe task cache can be relocated onto a network filesystem.\n"}
    evidence = [
        "the task cache is slow",  # only words every page uses
        "we relocated it onto a network filesystem and it worked",
    ]
    support = attribute_lines(before, after, evidence=evidence, docs=docs)
    assert support[0].messages == (1,)


# ---------------------------------------------------------------- faithful proposals to uv's docs


FAITHFUL_SET = Path(__file__).parent / "fixtures" / "grounding" / "uv-faithful.jsonl"
REPO = Path(__file__).resolve().parents[1]
UV_DOCS = next(
    (
        path
        for path in (REPO.parent / "shared/corpora/uv-docs", Path("/work/shared/corpora/uv-docs"))
        if path.is_dir()
    ),
    None,
)
# Generated by uv's docs build, so not in the corpus: links to them resolve, anchors are unknown.
GENERATED = {"reference/cli.md", "reference/settings.md", "reference/environment.md"}


def faithful_cases() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FAITHFUL_SET.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def uv_docs() -> tuple[dict[str, str], set[str]]:
    if UV_DOCS is None:
        pytest.skip("the uv docs corpus is not on this machine")
    docs = {
        str(p.relative_to(UV_DOCS)): p.read_text(encoding="utf-8") for p in UV_DOCS.rglob("*.md")
    }
    paths = {str(p.relative_to(UV_DOCS)) for p in UV_DOCS.rglob("*") if p.is_file()}
    return docs, paths | GENERATED


def test_the_faithful_set_has_thirty_cases_with_small_search_blocks() -> None:
    cases = faithful_cases()
    assert len(cases) >= 30
    assert len({case["id"] for case in cases}) == len(cases)
    assert all(len(case["search"].splitlines()) <= 10 for case in cases)
    assert all(len(case["conversation"]) >= 2 for case in cases)


@pytest.mark.parametrize("case", faithful_cases(), ids=lambda case: case["id"])
def test_a_faithful_proposal_to_the_uv_docs_is_not_refused(
    case: dict[str, Any], uv_docs: tuple[dict[str, str], set[str]]
) -> None:
    docs, paths = uv_docs
    path = case["path"]
    edit = Edit(path=path, search=case["search"], replace=case["replace"])
    current = {path: docs[path]} if path in docs else {}
    after = apply_edits(current, [edit], allowed=lambda _: True, new_file_dirs=["."])
    before = {name: docs[name] for name in after if name in docs}
    evidence = [message["text"] for message in case["conversation"]]
    assert find_ungrounded(before, after, evidence=evidence, docs=docs.values()) == []
    assert check_docs(before, after, read=docs.get, paths=paths) == []


def test_the_docs_stock_placeholder_path_is_no_claim() -> None:
    before = {"docs/a.md": "# A\n"}
    after = {"docs/a.md": "# A\n\nSet `KESTREL_CA_BUNDLE=/path/to/ca.pem` or `/etc/k/ca.pem`.\n"}
    found = find_ungrounded(before, after, evidence=["set KESTREL_CA_BUNDLE"], docs=[])
    assert [item.token for item in found] == ["/etc/k/ca.pem"]
