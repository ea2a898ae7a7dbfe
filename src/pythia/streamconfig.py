"""The stream models of `.github/pythia.yml`: one per platform, told apart by `kind`."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StreamBase(Strict):
    id: str = Field(description="Stable name of this stream, used for its state file.")
    start: str | int | date = Field(
        "newest", description="First run only: 'newest', 'oldest', a message id or a date."
    )
    trusted_authors: list[str] = Field(
        default_factory=list,
        description="Maintainers whose replies answer a question: the platform's user ids or "
        "handles (e.g. 'alice', '12345'); matched, never published.",
    )

    @field_validator("id")
    @classmethod
    def _safe_id(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_." for c in value):
            raise ValueError("use letters, digits, '-', '_' or '.' only")
        return value

    @field_validator("start")
    @classmethod
    def _known_start(cls, value: str | int | date) -> str | int | date:
        if isinstance(value, str) and value not in ("newest", "oldest"):
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    "use 'newest', 'oldest', a message id or a YYYY-MM-DD date"
                ) from None
        return value


class TelegramStream(StreamBase):
    kind: Literal["telegram"]
    chat: str | int = Field(description="Public @username or numeric chat id of the group.")
    mode: Literal["user", "bot"] = Field(
        "user", description="'user' reads history with a session; 'bot' fetches by id ranges."
    )
    topics: list[int] = Field(
        default_factory=list, description="Forum topic ids to read; empty reads all."
    )
    max_flood_wait_seconds: int = Field(
        300, ge=0, description="Longest FloodWait to sit out before stopping the stream."
    )
    max_missing_ids: int = Field(
        50, ge=1, description="Bot mode: stop after this many ids in a row return nothing."
    )


class ZulipStream(StreamBase):
    kind: Literal["zulip"]
    site: str = Field(description="Zulip server URL, e.g. 'https://chat.zulip.org'.")
    email: str = Field(description="The bot's email address; its key is ZULIP_API_KEY.")
    channel: str = Field(description="Channel (stream) to read, e.g. 'help'.")
    topics: list[str] = Field(default_factory=list, description="Topics to read; empty reads all.")
    batch_size: int = Field(1000, ge=1, le=1000, description="Messages per request (max 1000).")


class ExportStream(StreamBase):
    kind: Literal["export"]
    path: str = Field(description="Telegram Desktop result.json or a .jsonl file.")
    format: Literal["auto", "telegram", "jsonl"] = Field(
        "auto", description="File format; 'auto' decides by the file name."
    )
    permalink_base: str = Field(
        "", description="Base for permalinks, e.g. 'https://t.me/mygroup'; empty for none."
    )


class DiscordStream(StreamBase):
    kind: Literal["discord"]
    channel: int = Field(
        description="Id of a text, announcement or forum channel (Copy Channel ID in Discord)."
    )
    threads: bool = Field(
        True, description="Also read the channel's public threads; a forum's posts always are."
    )
    batch_size: int = Field(100, ge=1, le=100, description="Messages per request (max 100).")
    max_rate_limit_wait_seconds: int = Field(
        300, ge=0, description="Rate-limit waits a run sits out before stopping the stream."
    )


class SlackStream(StreamBase):
    kind: Literal["slack"]
    channel: str = Field(description="Channel id, e.g. 'C0123456789' (not its name).")
    threads: bool = Field(True, description="Also read the replies in threads.")
    thread_lookback_days: int = Field(
        7, ge=0, description="How far before the watermark threads are checked for new replies."
    )
    page_size: int = Field(
        200, ge=1, le=999, description="Messages per request (Slack suggests at most 200)."
    )
    max_rate_limit_wait_seconds: int = Field(
        600, ge=0, description="Rate-limit waits a run sits out before stopping the stream."
    )

    @field_validator("channel")
    @classmethod
    def _channel_id(cls, value: str) -> str:
        if re.fullmatch(r"[CG][A-Z0-9]{6,}", value):
            return value
        raise ValueError(
            f"'{value}' is not a channel id; use the id like C0123456789, shown at the bottom "
            "of the channel's details in Slack"
        )


class GitHubDiscussionsStream(StreamBase):
    kind: Literal["github-discussions"]
    repository: str = Field(
        "", description="owner/name whose Discussions to read; empty means this repository."
    )
    categories: list[str] = Field(
        default_factory=list,
        description="Category names or slugs to read, e.g. 'Q&A'; empty reads all.",
    )
    max_topics: int = Field(
        200, ge=1, description="Discussions read per run at most; a backfill goes on next run."
    )

    @field_validator("repository")
    @classmethod
    def _owner_and_name(cls, value: str) -> str:
        value = value.strip()
        if value and (value.count("/") != 1 or not all(value.split("/"))):
            raise ValueError(f"'{value}' is not owner/name, like 'astral-sh/uv'")
        return value


class DiscourseStream(StreamBase):
    kind: Literal["discourse"]
    site: str = Field(description="The forum's URL, e.g. 'https://discuss.example.org'.")
    categories: list[str] = Field(
        default_factory=list,
        description="Category slugs, names or ids to read; with tags, a topic in either is read.",
    )
    tags: list[str] = Field(default_factory=list, description="Tags to read, e.g. 'docs'.")
    max_topics: int = Field(
        200, ge=1, description="Topics read per run at most; a backfill goes on next run."
    )


Stream = Annotated[
    TelegramStream
    | ZulipStream
    | ExportStream
    | DiscordStream
    | SlackStream
    | GitHubDiscussionsStream
    | DiscourseStream,
    Field(discriminator="kind"),
]
STREAM_KINDS = (
    "telegram", "zulip", "export", "discord", "slack", "github-discussions", "discourse"
)  # fmt: skip
