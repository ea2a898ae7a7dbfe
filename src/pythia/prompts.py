"""The jinja2 environment over `prompts/`, where a docs repo may override any template."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from .models import Message

OVERRIDE_DIR = Path(".github/pythia/prompts")


def packaged_prompts() -> Path:
    """The prompts shipped with Pythia: inside the wheel, or beside `src/` in a checkout."""
    inside_wheel = Path(__file__).parent / "prompts"
    if inside_wheel.is_dir():
        return inside_wheel
    return Path(__file__).resolve().parents[2] / "prompts"


def environment(repo_root: Path | None = None) -> jinja2.Environment:
    """Templates from the repository's override folder first, then Pythia's own."""
    folders = []
    if repo_root is not None and (repo_root / OVERRIDE_DIR).is_dir():
        folders.append(str(repo_root / OVERRIDE_DIR))
    folders.append(str(packaged_prompts()))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["data"] = as_data
    env.filters["utc"] = _utc
    return env


def render(name: str, *, repo_root: Path | None = None, **values: Any) -> str:
    return environment(repo_root).get_template(name).render(**values)


def as_data(text: str) -> str:
    """Chat text made inert inside our `<message>` delimiters: it cannot close or open one."""
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def has_signals(messages: Sequence[Message]) -> bool:
    """Whether a prompt shows any resolution signal (and so explains them)."""
    return any(message.is_answer or message.trusted for message in messages)


def message_rows(
    messages: Sequence[Message], *, start: int = 1, role: str = "message"
) -> list[dict[str, Any]]:
    """Messages numbered locally for a prompt, so the model can cite them by index, with
    their resolution signals (the platform's answer mark, a trusted author)."""
    by_id = {message.id: number for number, message in enumerate(messages, start)}
    return [
        {
            "index": number,
            "author": message.author,
            "time": message.sent_at,
            "text": message.text,
            "role": role,
            "reply_to": by_id.get(message.reply_to) if message.reply_to is not None else None,
            "answer": message.is_answer,
            "maintainer": message.trusted,
        }
        for number, message in enumerate(messages, start)
    ]
