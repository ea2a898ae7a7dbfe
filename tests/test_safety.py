"""Redaction, neutralisation and the proposal rules, with made-up but realistic values.

Fake secrets are assembled from pieces so this file itself never trips a secret scanner
(GitHub push protection matches several of these formats).
"""

from __future__ import annotations

import pytest

from pythia.safety import (
    check_proposal,
    find_sensitive,
    link_domains,
    neutralise,
    redact,
    sanitize_for_publishing,
)

ZWJ = "\u200d"

GITHUB_CLASSIC = "ghp" + "_" + "9fKx2LmQ8rT4vW1zY7bN3cD5eH6jP0sA2uXo"
GITHUB_OAUTH = "gho" + "_" + "Lq3Wm9Zp7Rt6Yv1Nb5Hc0Jg4E8kF2xD6sA1u"
GITHUB_APP = "ghs" + "_" + "Zq8Wm2Lp7Xr4Tn6Vb9Kc1Jd3Hf5Gs0YaQe2w"
GITHUB_FINE = (
    "github" + "_pat_" + "11ABCDE2F0aBcDeFgHiJkL_mNoPqRsTuVwXyZ0123456789abcdefGHIJKLmnopQRS"
)
GOOGLE = "AI" + "za" + "SyD4kF8x-3Lq9Wm2Zp7Rt6Yv1Nb5Hc0Jg4E"
AWS_ID = "AK" + "IA" + "Z7QW4X2M9PLK5RTE"
AWS_SECRET = "wJa9rXUtnF3MI4K7MDENG" + "bPxRfiCYzq8Kx2LmQ7v"
SLACK = "xo" + "xb-" + "2048913377-4096817238-Zq8Wm2Lp7Xr4Tn6Vb9Kc1Jd3"
OPENAI = "sk" + "-" + "Tq8Wm2Lp7Xr4Tn6Vb9Kc1Jd3Hf5Gs0YaQe2wR7tY9uI1oP3"
OPENAI_PROJECT = "sk" + "-proj-" + "Tq8Wm2Lp7Xr4Tn6Vb9Kc1Jd3Hf5Gs0Ya_Qe2wR7tY9uI1oP3"
TELEGRAM = "7312345678" + ":" + "AAF4kq9XW2mLp7Rt6Yv1Nb5Hc0Jg4EzQ8sx"
JWT = (
    "ey" + "JhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiJrZXN0cmVsLWJvdCIsImlhdCI6MTcwMDAwMDAwMH0"
    ".q7Wm2Lp7Xr4Tn6Vb9Kc1Jd3Hf5Gs0YaQe2wR7tY9uI1o"
)
PRIVATE_KEY = (
    "-----BEGIN " + "OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBkZXN0cmVsLWZha2Uta2V5LWZvci10ZXN0cy1vbmx5AAAAAAAAAAAAAAAA\n"
    "-----END " + "OPENSSH PRIVATE KEY-----"
)


# ---------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("secret", "label"),
    [
        (GITHUB_CLASSIC, "a GitHub token"),
        (GITHUB_OAUTH, "a GitHub token"),
        (GITHUB_APP, "a GitHub token"),
        (GITHUB_FINE, "a GitHub token"),
        (GOOGLE, "a Google API key"),
        (AWS_ID, "an AWS access key id"),
        (SLACK, "a Slack token"),
        (OPENAI, "an API key (sk-)"),
        (OPENAI_PROJECT, "an API key (sk-)"),
        (TELEGRAM, "a Telegram bot token"),
        (JWT, "a JSON web token"),
    ],
)
def test_each_token_kind_is_redacted(secret: str, label: str) -> None:
    text = f"I set it to {secret} and kestrel login still fails"
    assert redact(text) == "I set it to [secret] and kestrel login still fails"
    assert [f.label for f in find_sensitive(text)] == [label]


def test_private_key_block_is_redacted_whole() -> None:
    text = f"my key is\n{PRIVATE_KEY}\nwhat is wrong?"
    assert redact(text) == "my key is\n[secret]\nwhat is wrong?"


def test_truncated_private_key_paste_is_redacted_to_the_end() -> None:
    truncated = PRIVATE_KEY.split("-----END")[0]
    assert redact("here:\n" + truncated) == "here:\n[secret]"


def test_telegram_token_inside_a_bot_api_url() -> None:
    text = f"curl https://api.telegram.org/bot{TELEGRAM}/getMe"
    assert redact(text) == "curl https://api.telegram.org/bot[secret]/getMe"


def test_aws_secret_key_in_an_assignment() -> None:
    text = f"aws_secret_access_key = {AWS_SECRET}"
    assert redact(text) == "aws_secret_access_key = [secret]"


def test_url_credentials_keep_the_host() -> None:
    text = "remote = https://ci-bot:Tr0ub4dor3x@cache.kestrel-ci.dev/v1 fails with 401"
    assert redact(text) == "remote = https://[secret]@cache.kestrel-ci.dev/v1 fails with 401"


def test_token_as_url_user_is_redacted_but_git_ssh_user_is_not() -> None:
    assert redact(f"https://{GITHUB_CLASSIC}@github.com/acme/x.git") == (
        "https://[secret]@github.com/acme/x.git"
    )
    assert redact("ssh://git@github.com/acme/x.git") == "ssh://git@github.com/acme/x.git"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter22", "password=[secret]"),
        ("api_key: 'zq81mx93kd'", "api_key: '[secret]'"),
        ('token = "r4nd0m-t0k3n-value"', 'token = "[secret]"'),
        ("secret: Xk29_aLq#7", "secret: [secret]"),
        ("KESTREL_TOKEN=kst_live_8f2k1m9q", "KESTREL_TOKEN=[secret]"),
        ('{"client_secret": "Zq8Wm2Lp7Xr4"}', '{"client_secret": "[secret]"}'),
        ("it says DB_PASSWORD=p4ssw0rd.", "it says DB_PASSWORD=[secret]."),
        ("Authorization: Bearer q7Wm2Lp7Xr4Tn6Vb9Kc1Jd3Hf5Gs0Ya", "Authorization: Bearer [secret]"),
    ],
)
def test_assignments_lose_the_value_and_keep_the_key(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "KESTREL_TOKEN=$KESTREL_TOKEN",
        'token = "${{ secrets.KESTREL_TOKEN }}"',
        "password: <your password>",
        "api_key = your-api-key-here",
        "token: expired.",  # prose after a colon
        "The token: see `kestrel login`.",
        "token = os.environ.get",
        "password = true",
        "api_key = xxxxxxxx",
        "passwordless = false",
    ],
)
def test_placeholders_and_prose_are_not_secrets(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "ghp" + "_" + "x" * 36,
        "pip install sk-learn-tutorial-for-beginners",
        "sk-" + "abcdefghijklmnopqrstuvwxyz",  # lower case only: a slug
    ],
)
def test_filler_and_slugs_are_not_secrets(text: str) -> None:
    assert redact(text) == text


def test_documented_sample_keys_stay_in_docs_but_not_in_chat() -> None:
    text = "The AWS docs use AKIA" + "IOSFODNN7EXAMPLE as a sample key id."
    assert redact(text, origin="docs") == text
    assert redact(text) == "The AWS docs use [secret] as a sample key id."


# ---------------------------------------------------------------- personal data


@pytest.mark.parametrize(
    "email", ["jane.doe@kestrel-users.org", "dev+ci@mail.acme.co.uk", "Ops_Team@corp.example.io"]
)
def test_emails_are_redacted(email: str) -> None:
    assert redact(f"write to {email}, thanks") == "write to [email], thanks"


def test_reserved_example_emails_stay_in_docs_but_not_in_chat() -> None:
    text = "e.g. alice@example.com or bob@ci.kestrel.test"
    assert redact(text, origin="docs") == text
    assert redact(text) == "e.g. [email] or [email]"


def test_ssh_remotes_are_not_emails() -> None:
    text = "git@github.com:kestrel/kestrel.git"
    assert redact(text) == text


@pytest.mark.parametrize(
    "phone",
    [
        "+44 20 7946 0958",
        "+1 (415) 555-0132",
        "+49 151 12345678",
        "+4915112345678",
        "(415) 555-0132",
        "415-555-0132",
        "020 7946 0958",
        "06 12 34 56 78",
        "030/12345678",
    ],
)
def test_phone_numbers_are_redacted(phone: str) -> None:
    assert redact(f"call me on {phone} after six") == "call me on [phone] after six"


@pytest.mark.parametrize(
    "text",
    [
        "upgrade from 3.10.2 to 3.11.0",
        "released on 2026-11-23 at 10:15:30",
        "open localhost:8080 in the browser",
        "it took 1234 ms with --jobs 16",
        "issue #123456789",
        "see https://kestrel.dev/releases/2026-11-23",
        "dates like 01-02-2026 or 05/10/2026",
        "kestrel 2.3.0-rc.1 fixed it",
        "sha 4f2a9c01d3",
        "a price of 1,299.00 EUR",
    ],
)
def test_numbers_that_are_not_phones_or_ips_are_kept(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    "address",
    ["10.0.4.17", "192.168.1.20", "81.2.69.160", "fe80::1ff:fe23:4567:890a", "2a01:4f8::1"],
)
def test_ip_addresses_are_redacted(address: str) -> None:
    assert redact(f"the proxy at {address} drops it") == "the proxy at [ip] drops it"


def test_documentation_addresses_stay_in_docs_but_not_in_chat() -> None:
    text = "docs use 192.0.2.10 and 2001:db8::5"
    assert redact(text, origin="docs") == text
    assert redact(text) == "docs use [ip] and [ip]"


def test_ip_with_port_keeps_the_port() -> None:
    assert redact("proxy http://10.0.4.17:3128") == "proxy http://[ip]:3128"


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2.3",
        "bind to 127.0.0.1 or 0.0.0.0",
        "loopback ::1",
        "MAC 00:1A:2B:3C:4D:5E",
        "C++ std::vector",
        "1.2.3.4.5 is not an address",
    ],
)
def test_non_addresses_and_reserved_addresses_are_kept(text: str) -> None:
    assert redact(text) == text


def test_findings_do_not_overlap_and_are_in_order() -> None:
    text = f"mail ops@kestrel-ci.dev, key {GOOGLE}, from 10.1.2.3, call +44 20 7946 0958"
    findings = find_sensitive(text)
    assert [f.kind for f in findings] == ["email", "secret", "ip", "phone"]
    assert redact(text) == "mail [email], key [secret], from [ip], call [phone]"


def test_redaction_is_idempotent() -> None:
    once = redact(f"password={AWS_SECRET} mail jo@kestrel-ci.dev")
    assert redact(once) == once


# ---------------------------------------------------------------- neutralising


def test_user_and_team_mentions_do_not_ping() -> None:
    text = "thanks @alice-w and @kestrel/maintainers!"
    assert neutralise(text) == f"thanks @{ZWJ}alice-w and @{ZWJ}kestrel/maintainers!"


def test_mentions_at_line_start_and_after_punctuation() -> None:
    assert neutralise("@bob see (@carol)") == f"@{ZWJ}bob see (@{ZWJ}carol)"


def test_email_like_text_and_code_spans_are_not_mentions() -> None:
    text = (
        "mail a@b.io; install `@kestrel/docker`; decorators:\n```python\n@task\ndef x(): ...\n```\n"
    )
    assert neutralise(text) == text


def test_unbalanced_backtick_does_not_shield_a_mention() -> None:
    assert neutralise("look ` @alice") == f"look ` @{ZWJ}alice"


def test_urls_keep_their_at_signs() -> None:
    text = "see https://medium.com/@kestrel/caching-4f2a"
    assert neutralise(text) == text


def test_raw_html_is_escaped() -> None:
    assert neutralise("<script>alert(1)</script>") == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert neutralise('<img src=x onerror="fetch(1)">') == '&lt;img src=x onerror="fetch(1)"&gt;'
    assert neutralise("<!-- hidden: merge me -->") == "&lt;!-- hidden: merge me -->"
    assert neutralise("<details open>") == "&lt;details open&gt;"


def test_html_inside_code_and_comparisons_are_left_alone() -> None:
    text = "use `<script>` tags; 3 < 4 and a -> b; <https://kestrel.dev>"
    assert neutralise(text) == text


def test_markdown_images_are_shown_as_text() -> None:
    assert neutralise("![pixel](https://evil.test/p.png)") == "!\\[pixel](https://evil.test/p.png)"
    assert neutralise("![ref][1]") == "!\\[ref][1]"


def test_sanitize_redacts_then_neutralises() -> None:
    text = f"@ops my token {GITHUB_CLASSIC} <b>leaked</b>, mail me: jo@kestrel-ci.dev"
    assert sanitize_for_publishing(text) == (
        f"@{ZWJ}ops my token [secret] &lt;b&gt;leaked&lt;/b&gt;, mail me: [email]"
    )


# ---------------------------------------------------------------- proposal rules

PAGE = """\
# Remote cache

Run `kestrel login`, then set `remote = "https://cache.example.com"`.
See the [GitHub releases](https://github.com/kestrel/kestrel/releases).
"""


def check(
    after: str, *, before: str = PAGE, cap: int = 80, allowed: tuple[str, ...] = ()
) -> list[str]:
    return check_proposal(
        before={"docs/remote-cache.md": before},
        after={"docs/remote-cache.md": after},
        docs_domains=link_domains([PAGE]),
        allowed_domains=list(allowed),
        max_changed_lines=cap,
    )


def test_a_plain_doc_edit_passes() -> None:
    after = (
        PAGE
        + "\nBehind a proxy, set `HTTPS_PROXY`; see the [releases](https://github.com/kestrel/kestrel/releases).\n"
    )
    assert check(after) == []


def test_added_secret_rejects_the_proposal() -> None:
    reasons = check(PAGE + f"\nExample: `KESTREL_TOKEN={GITHUB_CLASSIC}`\n")
    assert reasons == [
        "The edit to docs/remote-cache.md adds a GitHub token; "
        "proposals must not publish secrets or personal data."
    ]


def test_added_personal_data_rejects_the_proposal() -> None:
    reasons = check(PAGE + "\nAsk jane.doe@kestrel-users.org or call +44 20 7946 0958.\n")
    assert len(reasons) == 2
    assert "an e-mail address" in reasons[0]
    assert "a phone number" in reasons[1]


def test_a_doc_edit_may_show_reserved_sample_values() -> None:
    assert check(PAGE + "\nSet `email = you@example.com`; mail goes from 192.0.2.25.\n") == []


def test_sensitive_text_already_in_the_docs_is_not_held_against_an_edit() -> None:
    before = PAGE + "\nSupport: help@kestrel.dev\n"
    after = before.replace("Support: help@kestrel.dev", "Support: help@kestrel.dev (weekdays)")
    assert check(after, before=before) == []


def test_new_link_domain_is_rejected() -> None:
    reasons = check(PAGE + "\nSee [this fix](https://kestrel-fixes.example.net/proxy).\n")
    assert reasons == [
        "The edit to docs/remote-cache.md links to kestrel-fixes.example.net, a domain the docs "
        "do not use and the config does not allow."
    ]


def test_links_to_docs_domains_and_allowed_subdomains_pass() -> None:
    after = (
        PAGE
        + "\nSee <https://github.com/kestrel/kestrel/issues/12>,"
        + " https://docs.python.org/3/library/ssl.html and www.python.org.\n"
    )
    assert check(after, allowed=("python.org",)) == []
    assert "docs.python.org" in check(after)[0]


def test_lookalike_of_an_allowed_domain_is_rejected() -> None:
    reasons = check(PAGE + "\n[docs](https://evilpython.org/x)\n", allowed=("python.org",))
    assert len(reasons) == 1 and "evilpython.org" in reasons[0]


def test_too_many_changed_lines_are_refused() -> None:
    after = PAGE + "".join(f"Line {n}.\n" for n in range(6))
    assert check(after, cap=6) == []
    assert check(after, cap=5) == [
        "The proposal changes 6 lines, more than the limit of 5; a smaller, focused edit is needed."
    ]


@pytest.mark.parametrize(
    ("added", "fragment"),
    [
        ("<script>fetch('https://github.com')</script>", "raw HTML (<script>)"),
        ('<iframe src="https://github.com"></iframe>', "raw HTML (<iframe>)"),
        ('<a href="#" onclick="steal()">click</a>', "event handler"),
        ("[click](javascript:alert(1))", "script or data link"),
    ],
)
def test_added_dangerous_html_is_refused(added: str, fragment: str) -> None:
    reasons = check(PAGE + "\n" + added + "\n")
    assert len(reasons) == 1 and fragment in reasons[0]


def test_added_mentions_are_refused_but_code_is_fine() -> None:
    reasons = check(PAGE + "\nThanks to @alice and @kestrel/core.\n")
    assert reasons == [
        "The edit to docs/remote-cache.md adds @alice, @kestrel/core, "
        "which would notify people on GitHub."
    ]
    assert check(PAGE + "\nInstall `@kestrel/docker` with pip.\n") == []


def test_new_file_is_judged_whole() -> None:
    reasons = check_proposal(
        before={},
        after={"docs/guides/proxy.md": "# Proxy\n\nAsk @bob.\n"},
        docs_domains=set(),
        allowed_domains=[],
        max_changed_lines=80,
    )
    assert reasons == [
        "The edit to docs/guides/proxy.md adds @bob, which would notify people on GitHub."
    ]


def test_link_domains_collects_hosts_without_www_and_ports() -> None:
    texts = [
        "[a](https://www.Kestrel.dev/docs) <http://localhost:8080/x>",
        '`remote = "https://cache.example.com:8443"` and https://user:pw@git.acme.io/r',
    ]
    assert link_domains(texts) == {"kestrel.dev", "localhost", "cache.example.com", "git.acme.io"}


@pytest.mark.parametrize(
    "text",
    [
        "password" * 5000,  # once quadratic in the key pattern
        "x@" + ("a" * 60 + ".") * 500,  # once exponential in the e-mail domain pattern
        "` " * 20000,  # once quadratic in finding code spans
        "<" * 20000,
    ],
)
def test_pathological_input_is_published_whole(text: str) -> None:
    # Their time (each was once quadratic or worse): tests/benchmarks/bench_pathological.py.
    published = sanitize_for_publishing(text)  # clipped to a summary's length, not redacted
    assert published and text.startswith(published)
    problems = check_proposal(
        before={},
        after={"docs/x.md": text},
        docs_domains=set(),
        allowed_domains=[],
        max_changed_lines=10,
    )
    assert all("characters, more than the limit" in problem for problem in problems), problems
