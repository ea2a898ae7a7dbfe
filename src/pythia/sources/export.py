"""Reading a chat export file (Telegram Desktop JSON or Pythia's JSONL) as a stream.

Both formats get the watermark semantics of live sources, so a backfill from an export and live
reading of the same chat can follow each other: ids are the chat's message ids, and authors
are pseudonymised the way the live source does it.

Telegram Desktop ("Export chat history", format "Machine-readable JSON") writes `result.json`:
an object with a `messages` list. Each message has `id`, `type` ("message" or "service"),
`date` (the exporting computer's local time) and, since 2022, `date_unixtime` (UTC seconds,
preferred here; without it `date` is read as UTC), `from` / `from_id` ("user123",
"channel456"), `text` (a string, or a list of strings and entity objects
`{"type": "bold", "text": "..."}`; a `text_link` adds its `href` in parentheses), and
optionally `reply_to_message_id`, `forwarded_from`, `photo`/`file` (the caption is in `text`).
Service messages and media without a caption are skipped. Telegram's `from_id` "user123"
becomes the same pseudonym as user 123 read live.

JSONL (`.jsonl` or `.ndjson`): one JSON object per line, blank lines ignored:

    {"id": 17, "author": "telegram:123", "date": "2026-03-02T09:15:00Z", "text": "...",
     "reply_to": 12, "thread": "install", "permalink": "https://...", "is_bot": false}

`id` (a positive integer below 2**63, unique), `author` (any stable id of the sender; it is
pseudonymised, so use "telegram:<user id>" or "zulip:<host>:<user id>" to match a live stream),
`date` (ISO-8601; without an offset it is UTC) and `text` are required; `reply_to` (a message id),
`thread` (a thread or topic key), `permalink` and `is_bot` are optional.

Both may start with a UTF-8 byte order mark. A malformed file raises `ExportError` naming the
file, the line or message index, and what is wrong.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from ..config import ExportStream
from ..models import Message
from . import SourceError, fixed_start, is_trusted, pseudonym


class ExportError(SourceError):
    """A chat export file is missing or malformed."""


# Ids are stored in SQLite and JSON state, whose integers stop at signed 64 bits.
MAX_MESSAGE_ID = 2**63 - 1


def detect_format(path: Path, configured: str) -> str:
    if configured != "auto":
        return configured
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    if path.suffix.lower() == ".json":
        return "telegram"
    raise ExportError(
        f"{path}: cannot tell the export format from the file name; "
        "set format to 'telegram' or 'jsonl' in the stream's config"
    )


def flatten_text(text: object) -> str | None:
    """Telegram Desktop's `text` (a string or a list of strings and entities) as plain text."""
    if isinstance(text, str):
        return text
    if not isinstance(text, list):
        return None
    parts: list[str] = []
    for part in text:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and isinstance(part.get("text"), str):
            href = part.get("href")
            if part.get("type") == "text_link" and isinstance(href, str) and href != part["text"]:
                parts.append(f"{part['text']} ({href})")
            else:
                parts.append(part["text"])
        else:
            return None
    return "".join(parts)


def telegram_author(from_id: str) -> str:
    """'user123' -> 'telegram:123', the id the live Telegram source pseudonymises."""
    for prefix, namespace in (
        ("user", "telegram:"),
        ("channel", "telegram:channel:"),
        ("chat", "telegram:chat:"),
    ):
        if from_id.startswith(prefix) and from_id[len(prefix) :].isdigit():
            return namespace + from_id[len(prefix) :]
    return f"telegram:{from_id}"


def _positive_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _message_id(where: str, item: dict[str, Any], key: str) -> int | None:
    """`item[key]` as a message id; None when absent or not a positive integer."""
    value = _positive_int(item.get(key))
    if value is not None and value > MAX_MESSAGE_ID:
        raise ExportError(
            f"{where}: '{key}' is {value}, larger than any message id can be "
            f"(at most {MAX_MESSAGE_ID}); fix or remove this message"
        )
    return value


def _load_json(text: str) -> Any:
    """json.loads, with the ValueErrors it raises besides JSONDecodeError made readable."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError:
        # CPython refuses integers of over 4300 digits (sys.set_int_max_str_digits)
        raise ValueError("a number is too long") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _parse_iso(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (
            moment.replace(tzinfo=timezone.utc)
            if moment.tzinfo is None
            else moment.astimezone(timezone.utc)
        )
    except (ValueError, OverflowError):  # OverflowError: year 9999 moved past UTC's end
        return None


class ExportSource:
    """One export file as a `Source`; the file is read once, on first use."""

    def __init__(self, config: ExportStream, *, salt: str, base_dir: Path | None = None) -> None:
        self.stream = config.id
        self.config = config
        path = Path(config.path)
        self.path = path if path.is_absolute() or base_dir is None else base_dir / path
        self._salt = salt
        self._messages: list[Message] | None = None

    def close(self) -> None:
        self._messages = None

    def messages(self) -> list[Message]:
        """Every message of the file, by id."""
        if self._messages is None:
            self._messages = self._load()
        return self._messages

    def start_after(self) -> int:
        start = self.config.start
        if (fixed := fixed_start(start)) is not None:
            return fixed
        messages = self.messages()
        if start == "newest":
            return messages[-1].id if messages else 0
        assert isinstance(start, date)
        cutoff = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
        return max((m.id for m in messages if m.sent_at < cutoff), default=0)

    def fetch(self, after: int | None) -> Iterator[Message]:
        start = self.start_after() if after is None else after
        for message in self.messages():
            if message.id > start:
                yield message

    def _load(self) -> list[Message]:
        try:
            # utf-8-sig: editors on Windows start UTF-8 files with a byte order mark.
            raw = self.path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise ExportError(f"{self.path}: no such file; check the stream's path") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ExportError(f"{self.path}: cannot be read as UTF-8 text ({error})") from None
        if detect_format(self.path, self.config.format) == "jsonl":
            messages = self._parse_jsonl(raw)
        else:
            messages = self._parse_telegram(raw)
        messages.sort(key=lambda message: message.id)
        for earlier, later in itertools.pairwise(messages):
            if earlier.id == later.id:
                raise ExportError(
                    f"{self.path}: message id {later.id} appears twice; ids must be unique"
                )
        return messages

    def _link(self, message_id: int) -> str | None:
        base = self.config.permalink_base.rstrip("/")
        return f"{base}/{message_id}" if base else None

    def _parse_telegram(self, raw: str) -> list[Message]:
        try:
            document = _load_json(raw)
        except json.JSONDecodeError as error:
            raise ExportError(
                f"{self.path}: line {error.lineno}, column {error.colno}: "
                f"not valid JSON ({error.msg})"
            ) from None
        except ValueError as error:
            raise ExportError(f"{self.path}: not valid JSON ({error})") from None
        if not isinstance(document, dict) or not isinstance(document.get("messages"), list):
            raise ExportError(
                f"{self.path}: not a Telegram Desktop export (no 'messages' list); export the chat "
                "as 'Machine-readable JSON' or set format to 'jsonl'"
            )
        messages = []
        for index, item in enumerate(document["messages"]):
            message = self._telegram_message(index, item)
            if message is not None:
                messages.append(message)
        return messages

    def _telegram_message(self, index: int, item: object) -> Message | None:
        where = f"{self.path}: messages[{index}]"
        if not isinstance(item, dict):
            raise ExportError(f"{where} is not an object")
        message_id = _message_id(where, item, "id")
        if message_id is None:
            raise ExportError(f"{where} has no positive integer 'id'")
        where += f" (id {message_id})"
        if item.get("type", "message") != "message":
            return None  # service messages: joins, pins, topic creation
        text = flatten_text(item.get("text", ""))
        if text is None:
            raise ExportError(
                f"{where}: 'text' must be a string or a list of strings and entity objects"
            )
        if not text.strip():
            return None  # media without a caption
        sent_at = self._telegram_date(where, item)
        from_id = item.get("from_id")
        if not isinstance(from_id, str) or not from_id:
            raise ExportError(f"{where} has no 'from_id'")
        reply = _message_id(where, item, "reply_to_message_id")
        if reply is None and item.get("reply_to_message_id") is not None:
            raise ExportError(f"{where}: 'reply_to_message_id' must be a positive integer")
        author = telegram_author(from_id)
        return Message(
            stream=self.stream,
            id=message_id,
            author=pseudonym(self._salt, author),
            sent_at=sent_at,
            text=text,
            reply_to=reply,
            permalink=self._link(message_id),
            trusted=self._trusted(author),
        )

    def _trusted(self, author: str) -> bool:
        """`trusted_authors` match the raw author ("telegram:123") or its last part ("123")."""
        return is_trusted(self.config.trusted_authors, author, author.rsplit(":", 1)[-1])

    @staticmethod
    def _telegram_date(where: str, item: dict[str, Any]) -> datetime:
        unix = item.get("date_unixtime")
        if isinstance(unix, str) and unix.isdigit():
            try:
                return datetime.fromtimestamp(int(unix), tz=timezone.utc)
            except (ValueError, OverflowError, OSError):
                raise ExportError(
                    f"{where}: 'date_unixtime' {unix} is not a possible time; "
                    "fix or remove this message"
                ) from None
        moment = _parse_iso(item.get("date"))
        if moment is None:
            raise ExportError(f"{where} has no valid 'date_unixtime' or ISO-8601 'date'")
        return moment

    def _parse_jsonl(self, raw: str) -> list[Message]:
        messages = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{self.path}: line {number}"
            try:
                item = _load_json(line)
            except json.JSONDecodeError as error:
                raise ExportError(
                    f"{where}: not valid JSON ({error.msg} at column {error.colno})"
                ) from None
            except ValueError as error:
                raise ExportError(f"{where}: not valid JSON ({error})") from None
            messages.append(self._jsonl_message(where, item))
        return messages

    def _jsonl_message(self, where: str, item: object) -> Message:
        if not isinstance(item, dict):
            raise ExportError(f"{where}: expected a JSON object, one message per line")
        message_id = _message_id(where, item, "id")
        if message_id is None:
            raise ExportError(f"{where}: 'id' must be a positive integer")
        author = item.get("author")
        if not isinstance(author, (str, int)) or isinstance(author, bool) or author == "":
            raise ExportError(f"{where}: 'author' is missing (any stable id of the sender)")
        sent_at = _parse_iso(item.get("date"))
        if sent_at is None:
            raise ExportError(f"{where}: 'date' must be an ISO-8601 date and time")
        text = item.get("text")
        if not isinstance(text, str):
            raise ExportError(f"{where}: 'text' must be a string")
        reply = _message_id(where, item, "reply_to")
        if reply is None and item.get("reply_to") is not None:
            raise ExportError(f"{where}: 'reply_to' must be a positive integer")
        thread = item.get("thread")
        if thread is not None and not isinstance(thread, str):
            raise ExportError(f"{where}: 'thread' must be a string")
        link = item.get("permalink")
        if link is not None and not isinstance(link, str):
            raise ExportError(f"{where}: 'permalink' must be a string")
        return Message(
            stream=self.stream,
            id=message_id,
            author=pseudonym(self._salt, author),
            sent_at=sent_at,
            text=text,
            thread_key=thread,
            reply_to=reply,
            permalink=link or self._link(message_id),
            is_bot=item.get("is_bot") is True,
            trusted=self._trusted(str(author)),
        )
