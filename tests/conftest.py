"""Shared fixtures: recorded-HTTP settings and placeholder secrets for replay."""

from __future__ import annotations

import os
from typing import Any

import pytest

# Replay needs no secret; a maintainer re-recording sets real ones in the environment.
PLACEHOLDERS = {
    "GEMINI_API_KEY": "test-gemini-key",
    "GITHUB_TOKEN": "test-github-token",
    "OPENAI_API_KEY": "test-openai-key",
    "ZULIP_API_KEY": "test-zulip-key",
    "DISCORD_BOT_TOKEN": "test-discord-token",
    "SLACK_BOT_TOKEN": "xoxb-test-slack-token",
}


@pytest.fixture(scope="session")
def vcr_config() -> dict[str, Any]:
    return {
        "filter_headers": [
            "authorization",
            "x-goog-api-key",
            "api-key",  # Azure-style OpenAI gateways, Discourse
            "cookie",
            "set-cookie",
            "api-username",  # Discourse's user the API key acts as
        ],
        "filter_query_parameters": ["key", "token"],
        # Slack accepts the token as a form field too; slack_sdk sends it in Authorization.
        "filter_post_data_parameters": ["token"],
        # No "record_mode" here: it would override pytest-recording's --record-mode flag,
        # whose default ("none") replays only; `--record-mode=once` re-records.
        "decode_compressed_response": True,
    }


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Placeholder secrets unless real ones are set (when re-recording)."""
    values = {}
    for name, placeholder in PLACEHOLDERS.items():
        value = os.environ.get(name) or placeholder
        monkeypatch.setenv(name, value)
        values[name] = value
    return values
