"""Resolution signals: how a conversation was answered, from the sources to the classifier's
prompt, the PR body and `publish.require_answer`."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import harness
from doubles import FunctionLLM, HashEmbedder, ListSource, MemoryPublisher
from kestrel_model import answer
from pythia import prompts
from pythia.classify import _template_values
from pythia.config import ExportStream, Project, ZulipStream, parse_config
from pythia.models import Message, Thread, resolution_of, strongest
from pythia.prompts import environment
from pythia.publish.render import render_pr_body
from pythia.sources import is_trusted
from pythia.sources.export import ExportSource
from pythia.sources.zulip import ZulipSource
from pythia.state import StateStore
from pythia.threads import group_threads, pending, trim_thread
from test_github import proposal

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
FIXTURES = Path(__file__).parent / "fixtures"


def msg(message_id: int, text: str = "", **signals: Any) -> Message:
    return Message(
        stream="s",
        id=message_id,
        author=f"user-{message_id:08x}",
        sent_at=T0 + timedelta(minutes=message_id),
        text=text or f"message {message_id}",
        thread_key="topic:x",
        reply_to=None if message_id == 1 else 1,
        **signals,
    )


# --- matching and resolving -----------------------------------------------------------------


def test_trusted_authors_match_ids_and_handles_without_case_or_at_sign() -> None:
    trusted = ["@Mira", "12345"]
    assert is_trusted(trusted, "mira")
    assert is_trusted(trusted, None, 12345)
    assert not is_trusted(trusted, "miranda", 1234)
    assert not is_trusted([], "mira")
    assert not is_trusted(["mira"], None, "")


def test_an_accepted_answer_wins_and_the_opening_answers_nothing() -> None:
    assert resolution_of([msg(1), msg(2)]) is None
    assert resolution_of([msg(1, trusted=True), msg(2)]) is None  # a maintainer asking
    assert resolution_of([msg(1), msg(2, trusted=True)]) == "maintainer"
    assert resolution_of([msg(1), msg(2, trusted=True), msg(3, is_answer=True)]) == "accepted"
    assert strongest([None, "maintainer"]) == "maintainer"
    assert strongest(["maintainer", "accepted", None]) == "accepted"
    assert strongest([]) is None


def test_a_thread_keeps_its_resolution_when_its_recorded_part_becomes_context() -> None:
    question, answered, later = msg(1), msg(2, is_answer=True), msg(3, "one more thing")
    [thread] = group_threads([question, answered, later], gap_minutes=30, context_messages=0)
    assert thread.answered == "accepted"
    todo = pending(thread, done={1, 2})
    assert todo is not None and todo.messages == (later,) and todo.answered == "accepted"
    trimmed = trim_thread(todo, max_messages=2, max_message_chars=5)
    assert trimmed.answered == "accepted"


def test_sources_mark_replies_from_trusted_authors(tmp_path: Path) -> None:
    config = ExportStream.model_validate(
        {
            "kind": "export",
            "id": "e",
            "path": str(FIXTURES / "exports/sample.jsonl"),
            "trusted_authors": ["7"],  # the user part of "zulip:chat.kestrel.example.org:7"
        }
    )
    messages = list(ExportSource(config, salt="s").fetch(0))
    assert [m.id for m in messages if m.trusted] == [102, 104]
    zulip = ZulipStream.model_validate(
        {
            "kind": "zulip",
            "id": "z",
            "site": "https://chat.example.net",
            "email": "bot@chat.example.net",
            "channel": "help",
            "trusted_authors": ["Mira@Example.org"],
        }
    )
    raw = {
        "id": 5,
        "sender_id": 9,
        "sender_email": "mira@example.org",
        "timestamp": 1772442000,
        "subject": "t",
        "content": "use --jobs",
    }
    source = ZulipSource(zulip, client_factory=OldZulip, salt="s")
    assert source.normalise(raw).trusted
    assert not source.normalise({**raw, "sender_email": "ann@example.org"}).trusted


class OldZulip:
    """Enough of a zulip.Client for `ZulipSource.normalise` (permalinks need the level)."""

    feature_level = 300


# --- the classifier's prompt ------------------------------------------------------------------


def render_classify(*threads: Thread) -> str:
    config = parse_config({"project": {"name": "Kestrel"}})
    return prompts.render("classify.md.j2", **_template_values(config, threads))


def test_a_prompt_without_signals_is_exactly_what_it_was() -> None:
    plain = Thread(stream="s", messages=(msg(1, "How do I x?"), msg(2, "Use y.")))
    text = render_classify(plain)
    assert "answer=" not in text and "maintainer=" not in text and 'answer="accepted"' not in text
    marked = replace(
        plain, messages=(plain.messages[0], replace(plain.messages[1], is_answer=True))
    )
    with_signal = render_classify(marked)
    before, rest = with_signal.split("judge only the others.\n", 1)
    guidance, after = rest.split("\n<chat_data>", 1)
    assert guidance.startswith("\nSome messages carry what the platform knows about them: answer=")
    # the signalled prompt is the plain one plus the guidance and the attribute, nothing else
    restored = f"{before}judge only the others.\n\n<chat_data>{after}"
    assert restored.replace(' answer="accepted"', "", 1) == text


def test_the_prompt_marks_the_answer_and_maintainers_replies_in_context_too() -> None:
    thread = Thread(
        stream="s",
        messages=(msg(3, "thanks, that fixed it"),),
        context=(msg(1, "proxy question"), msg(2, "set HTTPS_PROXY", is_answer=True, trusted=True)),
    )
    text = render_classify(thread)
    assert 'role="context" reply_to="1" answer="accepted" maintainer="true">' in text
    assert 'maintainer="true" a reply by one of the project\'s' in text


def test_the_guidance_is_counted_in_a_threads_share_of_the_prompt() -> None:
    from pythia.classify import PromptSize

    config = parse_config({"project": Project(name="Kestrel").model_dump()})
    size = PromptSize(config, None)
    plain = Thread(stream="s", messages=(msg(1, "How do I x?"), msg(2, "Use y.")))
    signalled = Thread(stream="s", messages=(msg(1, "How do I x?"), msg(2, "Use y.", trusted=True)))
    assert size.of(signalled) > size.of(plain) + 40


# --- the PR body ------------------------------------------------------------------------------


def test_the_pr_body_says_how_the_conversation_was_answered() -> None:
    plain = render_pr_body(proposal(), templates=environment())
    assert "**Resolution:**" not in plain
    accepted = render_pr_body(proposal(answered="accepted"), templates=environment())
    assert "**Resolution:** a reply in the conversation was marked as the answer." in accepted
    maintainer = render_pr_body(proposal(answered="maintainer"), templates=environment())
    assert "**Resolution:** answered by a maintainer." in maintainer
    assert (
        accepted.replace(
            "**Resolution:** a reply in the conversation was marked as the answer.\n\n", ""
        )
        == plain
    )


# --- publish.require_answer -------------------------------------------------------------------


def proxy_thread(first_id: int, *, trusted: bool) -> list[Message]:
    start = T0 + timedelta(hours=first_id)
    texts = [
        "The remote cache hangs behind our corporate proxy, any idea?",
        "Since 2.3 it honours HTTPS_PROXY and NO_PROXY; on certificate verify failed point "
        "KESTREL_CA_BUNDLE at the corporate CA, that fixes it.",
    ]
    return [
        Message(
            stream="forum",
            id=first_id + n,
            author=f"user-{first_id + n:08x}",
            sent_at=start + timedelta(minutes=n),
            text=text,
            thread_key=f"topic:{first_id}",
            reply_to=None if n == 0 else first_id,
            trusted=trusted and n == 1,
        )
        for n, text in enumerate(texts)
    ]


def run(tmp_path: Path, messages: list[Message], **publish: Any) -> tuple[Any, MemoryPublisher]:
    root = tmp_path / "repo"
    shutil.copytree(FIXTURES / "sample-docs/docs", root / "docs")
    config = parse_config(
        {
            "project": {"name": "Kestrel"},
            "docs": {"root": "docs"},
            "privacy": {"salt": "s"},
            "publish": publish,
        }
    )
    space = harness.workspace(root, config)
    embedder = HashEmbedder()
    harness.index_docs(space, root / ".pythia/index.sqlite", embedder)
    publisher = MemoryPublisher()
    report = harness.run_pipeline(
        space,
        index_path=root / ".pythia/index.sqlite",
        store=StateStore(root / ".pythia/state"),
        llm=FunctionLLM(answer),
        embedder=embedder,
        publisher=publisher,
        sources=[ListSource("forum", messages)],
    )
    return report, publisher


def test_require_answer_skips_and_records_unanswered_conversations(tmp_path: Path) -> None:
    report, publisher = run(tmp_path, proxy_thread(10, trusted=False), require_answer=True)
    assert publisher.prs == {}
    assert report.skipped == [("forum:10", "not answered yet (publish.require_answer)")]
    state = StateStore(tmp_path / "repo/.pythia/state").load_stream("forum")
    assert state.watermark == 11  # recorded: a later answer comes as a new message


def test_require_answer_proposes_from_a_maintainers_answer(tmp_path: Path) -> None:
    report, publisher = run(tmp_path, proxy_thread(10, trusted=True), require_answer=True)
    assert len(report.proposals_opened) == 1
    [opened] = publisher.prs.values()
    assert opened.answered == "maintainer"


def test_without_require_answer_unanswered_conversations_are_proposed(tmp_path: Path) -> None:
    report, publisher = run(tmp_path, proxy_thread(10, trusted=False))
    assert len(report.proposals_opened) == 1
    assert json.dumps([p.answered for p in publisher.prs.values()]) == "[null]"


@pytest.mark.parametrize("kind", ["github-discussions", "discourse"])
def test_forum_streams_validate(kind: str) -> None:
    extra = {"site": "https://discuss.example.org"} if kind == "discourse" else {}
    config = parse_config({"streams": [{"id": "qa", "kind": kind, "categories": ["Q&A"], **extra}]})
    assert config.streams[0].trusted_authors == []
