"""The propose call's two ends: the prompt it shows (whole docs files within a token budget,
the conversations with their messages numbered) and the reply it asks for. `propose_for` sends
the prompt synchronously; a backfill sends the same first prompt in a batch job (backfill.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from . import prompts
from .config import Config
from .models import Hit, Message, Thread, Verdict
from .ports import GenerateRequest, Generation
from .structured import request_for
from .usage import estimate_tokens


class EditBlock(BaseModel):
    path: str
    search: str
    replace: str
    reason: str = ""


class ProposeReply(BaseModel):
    change: bool = Field(description="false when the docs should not change")
    reason: str = Field("", description="why not, when change is false")
    title: str = ""
    summary: str = ""
    reasoning: str = ""
    confidence: float = 0.0
    evidence: list[int] = Field(default_factory=list, description="message indices relied on")
    edits: list[EditBlock] = Field(default_factory=list)


@dataclass(frozen=True)
class DocFile:
    path: str
    text: str


def pick_files(
    hits: Sequence[Hit], *, read: Callable[[str], str | None], budget_tokens: int
) -> list[DocFile]:
    """Whole files of the best hits, best first, within the token budget (at least one)."""
    files: list[DocFile] = []
    used = 0
    for path in dict.fromkeys(hit.path for hit in hits):
        text = read(path)
        if text is None:
            continue
        cost = estimate_tokens(text)
        if files and used + cost > budget_tokens:
            continue
        files.append(DocFile(path, text))
        used += cost
    return files


@dataclass(frozen=True)
class ProposePrompt:
    """What a propose call shows: the docs files, the conversations with their messages
    numbered across all of them, and the judged messages by number (what may be cited)."""

    config: Config
    hits: tuple[Hit, ...]
    files: tuple[DocFile, ...]
    shown: tuple[tuple[Thread, Verdict], ...]
    talks: tuple[dict[str, Any], ...]
    by_index: Mapping[int, Message]
    repo_root: Path | None = None

    def numbered(self) -> tuple[str, ...]:
        """Which message each number of the prompt stands for ('' for a context row)."""
        last = max(self.by_index, default=0)
        return tuple(message_key(self.by_index[n]) if n in self.by_index else ""
                     for n in range(1, last + 1))  # fmt: skip

    def request(self, feedback: str = "") -> GenerateRequest:
        return request_for(
            self.config,
            stage="propose",
            model=self.config.models.propose,
            template="propose.md.j2",
            schema=ProposeReply,
            repo_root=self.repo_root,
            project=self.config.project,
            conversations=list(self.talks),
            hits=self.hits,
            files=self.files,
            new_file_dirs=self.config.docs.new_file_dirs,
            feedback=feedback,
        )


def propose_prompt(
    conversations: Sequence[tuple[Thread, Verdict]],
    *,
    hits: Sequence[Hit],
    config: Config,
    read: Callable[[str], str | None],
    repo_root: Path | None = None,
) -> ProposePrompt | None:
    """The prompt `propose_for` sends first, or None when no docs file matched (no call)."""
    files = pick_files(hits, read=read, budget_tokens=config.limits.propose_context_tokens)
    if not files:
        return None
    shown = _shown(conversations, config.limits.propose_conversations)
    talks, by_index = _talks(shown)
    return ProposePrompt(config, tuple(hits), tuple(files), tuple(shown), tuple(talks),
                         by_index, repo_root)  # fmt: skip


def _shown(
    conversations: Sequence[tuple[Thread, Verdict]], limit: int
) -> list[tuple[Thread, Verdict]]:
    """The conversations a prompt shows: the first (oldest) and the latest ones, `limit` in all.
    The others still count as demand; they add words, not facts."""
    if len(conversations) <= limit:
        return list(conversations)
    return [conversations[0], *conversations[len(conversations) - limit + 1 :]]


def _talks(
    conversations: Sequence[tuple[Thread, Verdict]],
) -> tuple[list[dict[str, Any]], dict[int, Message]]:
    """Each conversation as the prompt shows it, its messages numbered across all of them, and
    the judged messages by number (what the model may cite as evidence)."""
    talks: list[dict[str, Any]] = []
    by_index: dict[int, Message] = {}
    start = 1
    for thread, verdict in conversations:
        context = prompts.message_rows(thread.context, start=start, role="context")
        start += len(context)
        rows = prompts.message_rows(thread.messages, start=start)
        by_index.update(zip(range(start, start + len(rows)), thread.messages, strict=True))
        start += len(rows)
        talks.append({"verdict": _as_prompt_data(verdict), "messages": [*context, *rows]})
    return talks, by_index


def _as_prompt_data(verdict: Verdict) -> Verdict:
    """The verdict as the propose prompt shows it: the classifier wrote it from chat text, so
    it gets the chat's treatment (one line, no markup that could open or close a block)."""
    return replace(
        verdict,
        summary=prompts.as_data(" ".join(verdict.summary.split())),
        reason=prompts.as_data(" ".join(verdict.reason.split())),
    )


def message_key(message: Message) -> str:
    return f"{message.stream}:{message.id}"


@dataclass(frozen=True)
class BatchAnswer:
    """A batch job's answer to a propose prompt, and the message each number of that prompt
    stood for (`ProposePrompt.numbered`): the prompt rebuilt to check it may number them
    differently, as context messages come and go with the watermark."""

    generation: Generation
    numbered: tuple[str, ...] = ()
