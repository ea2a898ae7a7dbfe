"""Reading what a line claims: commands, flags, variables, paths, versions, URLs, config keys,
numbers and names, in code and in prose."""

from __future__ import annotations

import pytest

from pythia.claims import line_claims
from pythia.pages import LineRole

PROSE = LineRole("prose")
HEADING = LineRole("heading")


def claims(line: str, role: LineRole = PROSE) -> list[tuple[str, str]]:
    return [(claim.token, claim.kind) for claim in line_claims(line, role)]


def code(line: str, language: str = "console") -> list[tuple[str, str]]:
    return claims(line, LineRole("code", language))


# ---------------------------------------------------------------- reading claims


def test_a_command_line_yields_its_subcommands_flags_and_files() -> None:
    assert claims("Run `uv pip compile --universal requirements.in` first.") == [
        ("uv", "code"),
        ("pip", "code"),
        ("compile", "code"),
        ("--universal", "flag"),
        ("requirements.in", "path"),
    ]


def test_a_fenced_command_drops_its_prompt_and_reads_short_flags() -> None:
    assert code("$ uv cache clean -v --to-disk ~/.cache/uv") == [
        ("uv", "code"),
        ("cache", "code"),
        ("clean", "code"),
        ("-v", "flag"),
        ("--to-disk", "flag"),
        ("~/.cache/uv", "path"),
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # A manual page's placeholders name nothing anyone has to have said.
        ("$ kestrel explain TASK", [("kestrel", "code"), ("explain", "code")]),
        ("$ kestrel copy SOURCE... DEST", [("kestrel", "code"), ("copy", "code")]),
        # Variables stay claims: with `_` or digits, alone, or after a command naming them.
        ("$ kestrel run KESTREL_JOBS", [("kestrel", "code"), ("run", "code"),
                                        ("KESTREL_JOBS", "env")]),
        ("$ export NETRC", [("NETRC", "code")]),
        ("NETRC", [("NETRC", "code")]),
    ],
)  # fmt: skip
def test_upper_case_arguments_of_a_command_are_placeholders(
    line: str, expected: list[tuple[str, str]]
) -> None:
    assert code(line) == expected


def test_a_flag_with_a_value_is_the_flag_and_the_value() -> None:
    assert sorted(code("uv run --python=3.12 --with 'rich>=13' app.py")) == sorted(
        [
            ("--python", "flag"),
            ("3.12", "version"),
            (">=13", "version"),
            ("uv", "code"),
            ("run", "code"),
            ("--with", "flag"),
            ("rich", "code"),
            ("app.py", "path"),
        ]
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Set `UV_CACHE_DIR`.", [("UV_CACHE_DIR", "env")]),
        ("Set UV_CACHE_DIR in CI.", [("UV_CACHE_DIR", "env")]),
        ("Use `$HOME` or `${XDG_CACHE_HOME}`.", [("$HOME", "env"), ("XDG_CACHE_HOME", "env")]),
        ("On Windows, `%LOCALAPPDATA%` is used.", [("%LOCALAPPDATA%", "env")]),
        ("`UV_NO_CACHE=1 uv sync`", [("UV_NO_CACHE", "env"), ("uv", "code"), ("sync", "code")]),
    ],
)
def test_environment_variables(line: str, expected: list[tuple[str, str]]) -> None:
    assert [claim for claim in claims(line) if claim[1] == "env"] == [
        claim for claim in expected if claim[1] == "env"
    ]


@pytest.mark.parametrize(
    ("line", "token"),
    [
        ("It lives in `~/.cache/uv`.", "~/.cache/uv"),
        ("Edit pyproject.toml by hand.", "pyproject.toml"),
        ("Run `python ./src/x.py`.", "./src/x.py"),
        ("The script is in scripts/release.sh here.", "scripts/release.sh"),
        ("Delete the .venv folder.", ".venv"),
        ("Look in `$HOME/.config/uv/uv.toml`.", "$HOME/.config/uv/uv.toml"),
    ],
)
def test_paths(line: str, token: str) -> None:
    assert (token, "path") in claims(line)


def test_words_with_a_slash_in_prose_are_not_paths() -> None:
    assert claims("It works on macOS/Linux and reads and/or writes.") == [
        ("macOS", "name"),
        ("Linux", "name"),
    ]


@pytest.mark.parametrize(
    ("line", "token"),
    [
        ("Fixed in uv 0.4.2.", "0.4.2"),
        ('It needs `requires-python = ">=3.12"`.', ">=3.12"),
        ("Requires Python >=3.12 to run.", ">=3.12"),
        ("Pin `ruff@0.4.2` in the tool.", "0.4.2"),
        ("Install `ruff==0.4.2`.", "==0.4.2"),
        ("Use Python 3.13 for this.", "3.13"),
        ("The 1.0.0.dev1 build is out.", "1.0.0.dev1"),
    ],
)
def test_versions(line: str, token: str) -> None:
    assert (token, "version") in claims(line)


def test_urls_in_links_text_and_code() -> None:
    found = claims(
        "See [the issue](https://github.com/astral-sh/uv/issues/1234), "
        "<https://docs.astral.sh/uv/> and `git+https://github.com/org/repo@v1.2`."
    )
    assert sorted(found) == [
        ("git+https://github.com/org/repo@v1.2", "url"),
        ("https://docs.astral.sh/uv/", "url"),
        ("https://github.com/astral-sh/uv/issues/1234", "url"),
    ]


def test_relative_links_are_left_to_the_docs_check() -> None:
    assert claims("See [caching](../concepts/cache.md#cache-directory).") == []
    # A link whose text began on the line before.
    assert claims("the cache](./storage.md) and [x](https://example.com/x).") == [
        ("https://example.com/x", "url")
    ]


@pytest.mark.parametrize(
    ("line", "language", "expected"),
    [
        ("[tool.uv.sources]", "toml", [("tool.uv.sources", "config-key")]),
        ("[[tool.uv.index]]", "toml", [("tool.uv.index", "config-key")]),
        (
            'index-url = "https://download.pytorch.org/whl/cpu"',
            "toml",
            [("index-url", "config-key"), ("https://download.pytorch.org/whl/cpu", "url")],
        ),
        (
            "  cache-dependency-glob: uv.lock",
            "yaml",
            [
                ("cache-dependency-glob", "config-key"),
                ("uv.lock", "path"),
            ],
        ),
        (
            '"python.defaultInterpreterPath": ".venv/bin/python"',
            "json",
            [
                ("python.defaultInterpreterPath", "config-key"),
                (".venv/bin/python", "path"),
            ],
        ),
    ],
)
def test_config_keys_in_config_code(
    line: str, language: str, expected: list[tuple[str, str]]
) -> None:
    assert code(line, language) == expected


def test_a_dotted_key_in_prose_is_a_config_key() -> None:
    assert claims("Add it to tool.uv.sources instead.") == [("tool.uv.sources", "config-key")]


def test_placeholders_and_comments() -> None:
    assert code("$ uv add <package-name>  # add the package") == [
        ("uv", "code"),
        ("add", "code"),
    ]
    assert code("# Install Foo with the CLI", "bash") == [("Foo", "name")]


def test_prose_numbers_with_units_and_multi_digit_numbers_count_single_digits_do_not() -> None:
    assert claims("It takes 30 seconds, uses 2 GB, and retries 3 times; 5 steps in 2024.") == [
        ("30 seconds", "number"),
        ("2 GB", "number"),
        ("3 times", "number"),
        ("2024", "number"),
    ]


def test_names_are_camel_case_acronyms_and_capitalised_words_inside_a_sentence() -> None:
    assert claims("Users of PyTorch on AWS can ask Poetry. The cache works.") == [
        ("PyTorch", "name"),
        ("AWS", "name"),
        ("Poetry", "name"),
    ]


def test_markdown_syntax_is_not_read_as_claims() -> None:
    assert claims("1. **Note**: the [first step](#first-step) is _easy_ &mdash; see [^1].") == []
    assert claims("| Option | Meaning |") == []
    assert claims("| ------ | :-----: |") == []
    assert claims('!!! warning "Using Private Indexes"') == []


def test_a_title_case_heading_is_not_full_of_names() -> None:
    assert claims("## Using Alternative Package Indexes", HEADING) == []
    assert claims("## Using GitHub Actions", HEADING) == [("GitHub", "name")]


def test_fences_and_blank_lines_assert_nothing() -> None:
    assert line_claims("```toml", LineRole("markup", "toml")) == []
    assert line_claims("", LineRole("blank")) == []


# ---------------------------------------------------------------- more code forms


def test_powershell_variables_and_windows_paths() -> None:
    assert code('PS> $env:UV_CACHE_DIR = "D:\\uv-cache"', "pwsh-session") == [
        ("$env:UV_CACHE_DIR", "env"),
        ("D:\\uv-cache", "path"),
    ]


def test_inline_script_metadata_in_python_comments_is_toml() -> None:
    python = LineRole("code", "python")
    assert line_claims("# /// script", python) == []
    assert claims('# dependencies = ["httpx"]', python) == [
        ("dependencies", "config-key"),
        ("httpx", "code"),
    ]
    assert claims("# Fetch the page", python) == []


def test_single_dash_long_options_are_flags() -> None:
    assert code("dot -Tsvg -o graph.svg") == [
        ("dot", "code"),
        ("-Tsvg", "flag"),
        ("-o", "flag"),
        ("graph.svg", "path"),
    ]
