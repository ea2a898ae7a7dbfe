"""The small protocols the pipeline is wired through: sources, LLM, embedder, publisher."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel

from .models import Message, Proposal, Usage

EmbedTask = Literal["document", "query"]


class Source(Protocol):
    """A chat stream. `fetch` yields messages with ids above `after`, oldest first."""

    stream: str

    def fetch(self, after: int | None) -> Iterator[Message]: ...


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


class LLM(Protocol):
    def generate(self, request: GenerateRequest) -> Generation: ...


class Embedder(Protocol):
    """Turns texts into unit-length vectors of `dimensions` floats."""

    model: str
    dimensions: int

    def embed(self, texts: Sequence[str], *, task: EmbedTask) -> list[list[float]]: ...


@dataclass(frozen=True)
class Published:
    """What publishing a proposal did: opened a PR, commented on one, or left it waiting."""

    action: Literal["opened", "updated", "waiting", "skipped"]
    url: str = ""
    number: int | None = None
    reason: str = ""


class Publisher(Protocol):
    """Puts a proposal where maintainers will see it."""

    def publish(self, proposal: Proposal) -> Published: ...
