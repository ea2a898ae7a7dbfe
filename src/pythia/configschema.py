"""The config's JSON Schema (config/pythia.schema.json, `pythia schema`), for editors."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any

from .config import Config


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the config, for editors."""
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def render_json_schema() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True, default=_json_default) + "\n"


def _json_default(value: object) -> str:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(f"cannot serialise {type(value).__name__}")
