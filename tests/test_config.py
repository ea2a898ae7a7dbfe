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
    render_json_schema,
)

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
        {"streams": [{"id": "a", "kind": "export", "path": "x.json"}, {"id": "b", "kind": "slack"}]}
    )
    assert problems == ["streams[1].kind: 'slack' is not one of telegram, zulip, export"]


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
    assert {stream.kind for stream in config.streams} == {"telegram", "zulip", "export"}

    def keys(model: type, prefix: str = "") -> list[str]:
        found = []
        for name, field in model.model_fields.items():
            found.append(name)
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                found += keys(annotation)
        return found

    from pythia.config import ExportStream, TelegramStream, ZulipStream

    for model in (Config, TelegramStream, ZulipStream, ExportStream):
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
