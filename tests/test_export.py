"""Chat export files: the Kestrel Telegram Desktop export, the JSONL format, and broken files."""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from pythia.config import ExportStream
from pythia.sources import pseudonym, read_stream
from pythia.sources.export import ExportError, ExportSource, flatten_text

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE_CHAT = FIXTURES / "sample-chat" / "result.json"
EXPORTS = FIXTURES / "exports"
SALT = "test-salt"


def source(path: Path, **settings: object) -> ExportSource:
    config = ExportStream.model_validate(
        {"kind": "export", "id": "kestrel", "path": str(path), **settings}
    )
    return ExportSource(config, salt=SALT)


def test_telegram_export_skips_service_messages_and_uncaptioned_media() -> None:
    messages = list(source(SAMPLE_CHAT, start="oldest").fetch(None))
    ids = [message.id for message in messages]
    assert ids == sorted(ids)
    assert 1 not in ids and 40 not in ids  # join and pin service messages
    assert 33 not in ids  # a sticker without caption
    assert len(messages) == 39


def test_telegram_export_flattens_entities_and_keeps_replies_captions_and_forwards() -> None:
    by_id = {m.id: m for m in source(SAMPLE_CHAT, start="oldest").fetch(None)}
    assert by_id[7].text == (
        "Then point Kestrel at your CA bundle: KESTREL_CA_BUNDLE=/path/to/ca.pem. "
        "The remote cache client does not read the system certificate store."
    )
    assert by_id[7].reply_to == 6
    assert by_id[4].reply_to is None
    assert by_id[12].text.startswith("Our CI dashboard")  # a photo's caption
    assert by_id[18].text.startswith("Kestrel 3.1.3 is out: faster graph loading")  # forwarded
    assert "CLI page (https://kestrel.example.org/cli/#kestrel-run)" in by_id[29].text


def test_telegram_export_uses_utc_unix_time_and_pseudonyms_matching_live_telegram() -> None:
    by_id = {m.id: m for m in source(SAMPLE_CHAT, start="oldest").fetch(None)}
    assert by_id[2].sent_at == datetime(2026, 3, 2, 9, 0, 41, tzinfo=timezone.utc)
    assert by_id[2].author == pseudonym(SALT, "telegram:5550104")
    assert by_id[2].author == by_id[22].author  # same person, same pseudonym
    assert by_id[2].author != by_id[3].author
    for message in by_id.values():
        assert re.fullmatch(r"user-[0-9a-f]{8}", message.author)
        assert "Tomas" not in message.author


def test_permalinks_come_from_the_configured_base() -> None:
    linked = source(SAMPLE_CHAT, start="oldest", permalink_base="https://t.me/kestrel_users/")
    assert next(iter(linked.fetch(0))).permalink == "https://t.me/kestrel_users/2"
    assert next(iter(source(SAMPLE_CHAT).fetch(0))).permalink is None


def test_watermark_semantics_match_live_sources() -> None:
    export = source(SAMPLE_CHAT, start="oldest")
    assert [m.id for m in export.fetch(39)] == [41, 42]
    assert list(export.fetch(42)) == []
    assert export.start_after() == 0


@pytest.mark.parametrize(
    ("start", "after"),
    [("oldest", 0), (20, 19), ("newest", 42), ("2026-03-04", 23), ("2026-01-01", 0)],
)
def test_first_run_start_resolves_to_a_watermark(start: object, after: int) -> None:
    assert source(SAMPLE_CHAT, start=start).start_after() == after


def test_read_stream_on_a_first_run_with_newest_reads_nothing_but_moves_to_the_end() -> None:
    batch = read_stream(source(SAMPLE_CHAT, start="newest"), None)
    assert batch.after == 42
    assert batch.messages == ()
    dated = read_stream(source(SAMPLE_CHAT, start=date(2026, 3, 5)), None)
    assert [m.id for m in dated.messages] == [35, 36, 37, 38, 39, 41, 42]


def test_jsonl_export_reads_every_field() -> None:
    messages = list(source(EXPORTS / "sample.jsonl", start="oldest").fetch(None))
    assert [m.id for m in messages] == [101, 102, 103, 104, 105]
    first, reply, offset, naive, bot = messages
    assert first.thread_key == "topic:cli" and reply.reply_to == 101
    assert first.author == pseudonym(SALT, "zulip:chat.kestrel.example.org:31")
    assert offset.sent_at == datetime(2026, 3, 9, 9, 5, tzinfo=timezone.utc)
    assert offset.permalink and offset.permalink.endswith("/near/103")
    assert naive.sent_at == datetime(2026, 3, 9, 9, 20, tzinfo=timezone.utc)
    assert bot.is_bot and not first.is_bot
    assert [m.id for m in source(EXPORTS / "sample.jsonl").fetch(102)] == [103, 104, 105]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("truncated.json", r"truncated\.json: line 16, column 1: not valid JSON"),
        ("no-messages.json", r"no-messages\.json: not a Telegram Desktop export \(no 'messages'"),
        ("bad-text.json", r"bad-text\.json: messages\[2\] \(id 3\): 'text' must be a string"),
        ("missing-id.json", r"missing-id\.json: messages\[1\] has no positive integer 'id'"),
        ("bad-line.jsonl", r"bad-line\.jsonl: line 3: not valid JSON"),
        ("missing-date.jsonl", r"missing-date\.jsonl: line 2: 'date' must be an ISO-8601"),
        ("duplicate-ids.jsonl", r"duplicate-ids\.jsonl: message id 5 appears twice"),
    ],
)
def test_broken_files_fail_with_file_place_and_problem(name: str, expected: str) -> None:
    with pytest.raises(ExportError, match=expected) as raised:
        list(source(EXPORTS / name, start="oldest").fetch(None))
    assert "\n" not in str(raised.value)


def test_missing_file_and_unknown_format_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no such file; check the stream's path"):
        list(source(tmp_path / "absent.json").fetch(0))
    odd = tmp_path / "chat.txt"
    odd.write_text("{}", encoding="utf-8")
    with pytest.raises(ExportError, match="set format to 'telegram' or 'jsonl'"):
        list(source(odd).fetch(0))
    odd.write_text('{"id": 1, "author": "a", "date": "2026-03-09T10:00:00Z", "text": "hi"}\n')
    assert [m.text for m in source(odd, format="jsonl").fetch(0)] == ["hi"]


def test_flatten_text_rejects_unknown_parts() -> None:
    assert flatten_text(["a ", {"type": "bold", "text": "b"}]) == "a b"
    assert flatten_text([1]) is None
    assert flatten_text(None) is None


JSONL_LINE = '{"id": %s, "author": "a", "date": "2026-03-09T10:00:00Z", "text": "hi"%s}\n'


def test_a_jsonl_export_with_a_utf8_bom_reads(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (JSONL_LINE % (1, "")).encode())
    assert [m.id for m in source(path, start="oldest").fetch(None)] == [1]


def test_a_telegram_export_with_a_utf8_bom_reads(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_bytes(b"\xef\xbb\xbf" + SAMPLE_CHAT.read_bytes())
    assert len(list(source(path, start="oldest").fetch(None))) == 39


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            [JSONL_LINE % (1, ""), JSONL_LINE % (2**80, "")],
            re.escape(
                "line 2: 'id' is 1208925819614629174706176, larger than any message id can be "
                "(at most 9223372036854775807); fix or remove this message"
            )
            + "$",
        ),
        (
            [JSONL_LINE % (1, f', "reply_to": {2**63}')],
            "line 1: 'reply_to' is 9223372036854775808, larger than any message id can be",
        ),
        ([JSONL_LINE % ("1" * 5000, "")], r"line 1: not valid JSON \(a number is too long\)"),
        (["[" * 100_000 + "]" * 100_000 + "\n"], r"line 1: not valid JSON \(nested too deeply\)"),
    ],
)
def test_absurd_jsonl_values_are_one_line_naming_file_and_line(
    tmp_path: Path, lines: list[str], expected: str
) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(ExportError, match=rf"^{re.escape(str(path))}: {expected}") as raised:
        list(source(path, start="oldest").fetch(None))
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"id": 2**80}, r"messages\[0\]: 'id' is 1208925819614629174706176, larger than any"),
        (
            {"id": 1, "reply_to_message_id": 2**64},
            r"messages\[0\] \(id 1\): 'reply_to_message_id' is 18446744073709551616, larger",
        ),
        (
            {"id": 1, "date_unixtime": "99999999999999999"},
            r"messages\[0\] \(id 1\): 'date_unixtime' 99999999999999999 is not a possible time",
        ),
        (
            {"id": 1, "date": "9999-12-31T23:59:59-05:00"},
            r"messages\[0\] \(id 1\) has no valid 'date_unixtime' or ISO-8601 'date'",
        ),
    ],
)
def test_absurd_telegram_values_are_one_line_naming_the_file(
    tmp_path: Path, message: dict[str, object], expected: str
) -> None:
    item = {"type": "message", "date": "2026-03-09T10:00:00", "from_id": "user1", "text": "hi"}
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"messages": [{**item, **message}]}), encoding="utf-8")
    with pytest.raises(ExportError, match=rf"^{re.escape(str(path))}: {expected}") as raised:
        list(source(path, start="oldest").fetch(None))
    assert "\n" not in str(raised.value)
