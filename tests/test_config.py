"""Config parsing, readable errors, the example file and the generated schema."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import yaml

from pythia import CONFIG_REFERENCE
from pythia.config import (
    Config,
    ConfigError,
    Secrets,
    load_config,
    parse_config,
)
from pythia.configschema import render_json_schema

ROOT = Path(__file__).resolve().parents[1]


def problems_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_two_line_config_gets_defaults() -> None:
    config = parse_config(
        {"docs": {"root": "docs"}, "streams": [{"id": "tg", "kind": "telegram", "chat": "@x"}]}
    )
    assert config.docs.root == "docs"
    assert config.streams[0].kind == "telegram"
    assert config.threads.settle_minutes == 60
    assert config.publish.max_open_prs == 5
    assert "no-doc-value" in config.categories


def test_unknown_stream_kind_names_the_key_and_choices() -> None:
    problems = problems_of(
        {"streams": [{"id": "a", "kind": "export", "path": "x.json"}, {"id": "b", "kind": "irc"}]}
    )
    assert problems == [
        "streams[1].kind: 'irc' is not one of telegram, zulip, export, discord, slack, "
        "github-discussions, discourse"
    ]


def test_a_slack_channel_name_asks_for_the_id() -> None:
    problems = problems_of({"streams": [{"id": "s", "kind": "slack", "channel": "#help"}]})
    assert problems == [
        "streams[0].channel: '#help' is not a channel id; use the id like C0123456789, shown "
        "at the bottom of the channel's details in Slack"
    ]


def test_misspelt_key_is_one_line() -> None:
    assert problems_of({"publsh": {}}) == [
        "publsh: is not a known key; check its spelling against " + CONFIG_REFERENCE
    ]


def test_every_problem_is_reported() -> None:
    problems = problems_of(
        {
            "streams": [{"id": "z", "kind": "zulip", "channel": "help"}],
            "threads": {"gap_minutes": 0},
        }
    )
    assert "streams[0].site: is required" in problems
    assert "streams[0].email: is required" in problems
    assert any(p.startswith("threads.gap_minutes:") for p in problems)


def test_duplicate_stream_ids_are_refused() -> None:
    stream = {"id": "a", "kind": "export", "path": "x.jsonl"}
    assert problems_of({"streams": [stream, stream]}) == [
        "streams: stream id 'a' is used twice; ids must be unique"
    ]


def test_start_accepts_keywords_ids_and_dates() -> None:
    def start(value: object) -> object:
        stream = {"id": "a", "kind": "export", "path": "x", "start": value}
        return parse_config({"streams": [stream]}).streams[0].start

    assert start("oldest") == "oldest"
    assert start(1234) == 1234
    assert start("2026-03-01") == date(2026, 3, 1)
    assert start(date(2026, 3, 1)) == date(2026, 3, 1)
    assert problems_of(
        {"streams": [{"id": "a", "kind": "export", "path": "x", "start": "yesterday"}]}
    ) == ["streams[0].start: use 'newest', 'oldest', a message id or a YYYY-MM-DD date"]


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "pythia.yml"
    path.write_text("docs:\n  root: docs\n streams: [\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems[0].startswith(f"{path}: not valid YAML at line")


def test_non_mapping_top_level() -> None:
    assert problems_of(["a"]) == ["(top level): the config must be a mapping of keys to values"]


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "absent.yml") == Config()


def test_example_documents_every_key() -> None:
    text = (ROOT / "config/pythia.example.yml").read_text()
    config = load_config(ROOT / "config/pythia.example.yml")
    assert {stream.kind for stream in config.streams} == {
        "telegram",
        "zulip",
        "export",
        "discord",
        "slack",
        "github-discussions",
        "discourse",
    }

    def keys(model: type, prefix: str = "") -> list[str]:
        found = []
        for name, field in model.model_fields.items():
            found.append(name)
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                found += keys(annotation)
        return found

    from pythia.config import (
        DiscordStream,
        DiscourseStream,
        ExportStream,
        GitHubDiscussionsStream,
        SlackStream,
        TelegramStream,
        ZulipStream,
    )

    kinds = (
        TelegramStream,
        ZulipStream,
        ExportStream,
        DiscordStream,
        SlackStream,
        GitHubDiscussionsStream,
        DiscourseStream,
    )
    for model in (Config, *kinds):
        for key in keys(model):
            assert f"{key}:" in text, f"{key} is not documented in pythia.example.yml"
    # every key in the example carries a comment, in the example or on the section
    raw = yaml.safe_load(text)
    assert set(raw) == set(Config.model_fields)


def test_schema_file_is_current() -> None:
    committed = json.loads((ROOT / "config/pythia.schema.json").read_text())
    assert committed == json.loads(render_json_schema()), (
        "config/pythia.schema.json is stale: run `pythia schema > config/pythia.schema.json`"
    )


def test_secrets_come_from_the_environment_and_never_print() -> None:
    secrets = Secrets.from_env({"GEMINI_API_KEY": "AIzaSyD-secret", "TELEGRAM_API_ID": "123"})
    assert secrets.gemini_api_key is not None
    assert "AIzaSyD-secret" not in repr(secrets)
    assert secrets.telegram_api_id == 123
    assert secrets.values() == ["AIzaSyD-secret"]


def test_bad_secret_is_a_readable_error() -> None:
    with pytest.raises(ConfigError) as caught:
        Secrets.from_env({"TELEGRAM_API_ID": "not-a-number"})
    assert caught.value.problems[0].startswith("env.telegram_api_id:")


def load_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_an_invalid_ignore_pattern_is_refused_with_its_position() -> None:
    problems = problems_of({"prefilter": {"ignore_patterns": ["^ok$", "(unclosed"]}})
    assert problems == [
        "prefilter.ignore_patterns[1]: '(unclosed' is not a valid regular expression "
        "(missing ), unterminated subpattern at position 0); fix the pattern or remove it"
    ]


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "pythia.yml"
    path.write_bytes("project:\n  name: Caf\u00e9\n".encode("latin-1"))
    assert load_problems(path) == [
        f"{path}: is not UTF-8 text (byte 0xe9 at position 20); save the file as UTF-8"
    ]


def test_an_impossible_date_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "pythia.yml"
    path.write_text(
        "streams:\n  - id: a\n    kind: export\n    path: x.jsonl\n    start: 2026-13-45\n"
    )
    assert load_problems(path) == [
        f"{path}: line 5: 2026-13-45 is not a real date (month must be in 1..12); "
        "write an existing date as YYYY-MM-DD"
    ]


def test_deeply_nested_yaml_is_refused_without_recursing(tmp_path: Path) -> None:
    path = tmp_path / "pythia.yml"
    path.write_text("categories: " + "[" * 10_000 + "]" * 10_000 + "\n")
    assert load_problems(path) == [
        f"{path}: line 1: the YAML is nested more than 50 levels deep; "
        "a Pythia config needs only a few levels"
    ]


def test_a_duplicate_key_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "pythia.yml"
    path.write_text("docs:\n  root: docs\npublish:\n  draft: true\n  draft: false\n")
    assert load_problems(path) == [
        f"{path}: line 5: the key 'draft' appears twice in the same mapping (first on line 4); "
        "keep only one"
    ]
    path.write_text("docs: {root: docs}\nstreams: []\ndocs: {root: site}\n")
    assert load_problems(path) == [
        f"{path}: line 3: the key 'docs' appears twice in the same mapping (first on line 1); "
        "keep only one"
    ]


def test_the_same_key_in_different_mappings_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "pythia.yml"
    path.write_text(
        "streams:\n"
        "  - {id: a, kind: export, path: a.jsonl}\n"
        "  - {id: b, kind: export, path: b.jsonl}\n"
        "models:\n  prices:\n    m1: {input: 1, output: 2}\n    m2: {input: 1, output: 2}\n"
    )
    assert [stream.id for stream in load_config(path).streams] == ["a", "b"]


@pytest.mark.parametrize(
    ("root", "problem"),
    [
        ("../../etc", "'../../etc' is outside the repository"),
        ("docs/../../x", "'docs/../../x' is outside the repository"),
        ("/etc", "'/etc' is an absolute path"),
        ("C:\\docs", "'C:\\docs' is an absolute path"),
    ],
)
def test_docs_root_must_stay_inside_the_repository(root: str, problem: str) -> None:
    assert problems_of({"docs": {"root": root}}) == [
        f"docs.root: {problem}; use a folder relative to the repository root, like 'docs'"
    ]


@pytest.mark.parametrize("root", [".", "docs", "./site/docs", "docs/../site", "docs/"])
def test_docs_root_inside_the_repository_is_kept(root: str) -> None:
    assert parse_config({"docs": {"root": root}}).docs.root == root


@pytest.mark.parametrize(
    ("publish", "why"),
    [
        (
            {"data_branch": "release", "base_branch": "release"},
            "'release' is also publish.base_branch",
        ),
        ({"data_branch": "main"}, "'main' is a usual default branch name"),
        (
            {"data_branch": "master", "base_branch": "develop"},
            "'master' is a usual default branch name",
        ),
    ],
)
def test_the_data_branch_must_not_be_a_branch_people_use(publish: dict[str, str], why: str) -> None:
    assert problems_of({"publish": publish}) == [
        f"publish.data_branch: {why}, and the bot force-pushes the data branch; "
        "give it a name of its own, like 'pythia-data'"
    ]


def test_a_data_branch_of_its_own_is_kept() -> None:
    publish = parse_config({"publish": {"data_branch": "docs-bot", "base_branch": "main"}}).publish
    assert publish.data_branch == "docs-bot"
