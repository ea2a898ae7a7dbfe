"""The small protocols the pipeline is wired through, and the exceptions it may see from any
adapter behind them: sources, LLM, embedder, publisher."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel

from .models import Message, Proposal, Usage

EmbedTask = Literal["document", "query"]


class ChatSource(Protocol):
    """A chat stream. `fetch` yields messages with ids above `after`, oldest first (a forum
    also sends the earlier posts of a topic that gained new ones: ids at or below `after`
    are context, never judged); `start_after` turns the stream's `start` setting into the
    watermark of a first run, and `close` releases the connection (sources connect lazily)."""

    stream: str

    def fetch(self, after: int | None) -> Iterator[Message]: ...

    def start_after(self) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class GenerateRequest:
    """One structured-generation call: the answer must be JSON matching `schema`."""

    stage: str
    model: str
    system: str
    prompt: str
    schema: type[BaseModel]
    temperature: float = 0.2
    max_output_tokens: int = 8192
    thinking_budget: int | None = None


@dataclass(frozen=True)
class Generation:
    """The raw JSON text the model answered, and what it cost."""

    text: str
    usage: Usage


class LLMUnavailable(Exception):
    """The model kept failing with transient errors: stop starting new LLM work this run."""


class MalformedReply(Exception):
    """The model's answer could not be used: it did not match the schema, even after one retry,
    or (gemini.GeminiBlocked) it had no text at all."""


class LLM(Protocol):
    def generate(self, request: GenerateRequest) -> Generation: ...


class Embedder(Protocol):
    """Turns texts into unit-length vectors of `dimensions` floats."""

    model: str
    dimensions: int

    def embed(self, texts: Sequence[str], *, task: EmbedTask) -> list[list[float]]: ...


def embedding_id(embedder: Embedder) -> str:
    """What an index records as the source of its vectors, so that a change of provider or of
    model rebuilds it: `openai:nomic-embed-text`; a Gemini model keeps its bare name, as
    indexes recorded it before providers could be chosen. An embedder without a `provider`
    attribute is taken for Gemini's."""
    provider = getattr(embedder, "provider", "gemini")
    return embedder.model if provider == "gemini" else f"{provider}:{embedder.model}"


@dataclass(frozen=True)
class Published:
    """What publishing a proposal did: opened a PR, commented on one, left it waiting, or (a dry
    run) wrote a preview of the PR it would open."""

    action: Literal["opened", "updated", "waiting", "skipped", "previewed"]
    url: str = ""
    number: int | None = None
    reason: str = ""


class Publisher(Protocol):
    """Puts a proposal where maintainers will see it."""

    def publish(self, proposal: Proposal) -> Published: ...


class PublishError(Exception):
    """A proposal could not be pushed or its pull request could not be opened.

    `cause` is the reason without the proposal's title, so that the run can report one
    annotation per cause rather than one per proposal.
    """

    def __init__(self, message: str, *, cause: str = "") -> None:
        super().__init__(message)
        self.cause = cause or message


class PublisherUnavailable(PublishError):
    """The platform kept failing (5xx, rate limit, network) after retries: publishing stops
    for this run and the proposals wait for the next one."""


class PublishingBlocked(PublisherUnavailable):
    """The platform refused the bot (401/403/404, or a rejected push): a setting or permission
    to fix. The proposal is parked in the ledger, publishing stops, and the run fails loudly."""


def one_line(error: BaseException | str, *, limit: int = 300) -> str:
    """An error (or a text) as one line of at most `limit` characters, for logs and reports."""
    text = " ".join(str(error).split())
    if not text and isinstance(error, BaseException):
        text = type(error).__name__
    return text[:limit]
