"""Test doubles that implement Pythia's ports (pythia.ports) deterministically."""

from __future__ import annotations

import hashlib
import math
import re
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pythia.models import Message, Proposal, Usage
from pythia.ports import EmbedTask, GenerateRequest, Generation, Published

_WORD = re.compile(r"\w+")
# Function words would dominate short texts' vectors and make unrelated texts look alike.
# fmt: off
_STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "for", "how", "i", "in", "is", "it",
    "of", "on", "or", "the", "this", "to", "with", "you", "your", "what", "when", "where",
))
# fmt: on


def _stem(word: str) -> str:
    # Crude suffix stripping so "caches", "cached" and "cache" share a feature.
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


class HashEmbedder:
    """An Embedder whose vectors are hashed bag-of-words features, normalised to unit length.

    Texts sharing words get close vectors, identical texts identical ones, with no model or
    network. `calls` records the texts of every `embed` call, `tasks` its task type.
    """

    def __init__(self, *, model: str = "hash-embedding-v1", dimensions: int = 64) -> None:
        self.model = model
        self.dimensions = dimensions
        self.calls: list[list[str]] = []
        self.tasks: list[EmbedTask] = []

    @property
    def texts_embedded(self) -> int:
        return sum(len(call) for call in self.calls)

    def embed(self, texts: Sequence[str], *, task: EmbedTask) -> list[list[float]]:
        self.calls.append(list(texts))
        self.tasks.append(task)
        return [self.vector(text) for text in texts]

    def vector(self, text: str) -> list[float]:
        values = [0.0] * self.dimensions
        for word in _WORD.findall(text.lower()):
            if word in _STOPWORDS:
                continue
            digest = hashlib.blake2b(_stem(word).encode(), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.dimensions
            values[bucket] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in values))
        if norm == 0:
            values[0], norm = 1.0, 1.0
        return [v / norm for v in values]


class ScriptedLLM:
    """`ports.LLM` that answers with queued texts, in order, and keeps every request it got."""

    def __init__(self) -> None:
        self.requests: list[GenerateRequest] = []
        self._replies: deque[Generation] = deque()

    def enqueue(self, text: str, *, usage: Usage | None = None) -> ScriptedLLM:
        self._replies.append(Generation(text=text, usage=usage or Usage()))
        return self

    @property
    def pending(self) -> int:
        return len(self._replies)

    def generate(self, request: GenerateRequest) -> Generation:
        self.requests.append(request)
        if not self._replies:
            raise AssertionError(
                f"ScriptedLLM got a {request.stage} request but has no reply left; enqueue one"
            )
        return self._replies.popleft()


class FunctionLLM:
    """`ports.LLM` whose answer is computed from the request by `answer`: a tiny fake model."""

    def __init__(self, answer: Callable[[GenerateRequest], str], *, meter: Any = None) -> None:
        self.answer = answer
        self.meter = meter  # a pythia.usage.UsageMeter, recorded into as the Gemini adapter does
        self.requests: list[GenerateRequest] = []

    def generate(self, request: GenerateRequest) -> Generation:
        self.requests.append(request)
        usage = Usage(input_tokens=100, output_tokens=20)
        if self.meter is not None:
            self.meter.record(request.stage, request.model, usage)
        return Generation(text=self.answer(request), usage=usage)

    def calls(self, stage: str) -> int:
        return sum(1 for request in self.requests if request.stage == stage)


class MemoryPublisher:
    """`ports.Publisher` that keeps PRs in memory and, like GitHub, one PR per fingerprint."""

    def __init__(self, *, fail_after: int | None = None) -> None:
        self.prs: dict[str, Proposal] = {}
        self.order: list[str] = []
        self.comments: dict[str, int] = {}
        self.fail_after = fail_after
        self.calls = 0

    def publish(self, proposal: Proposal) -> Published:
        self.calls += 1
        self.order.append(proposal.fingerprint)
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("publisher crashed (injected)")
        if proposal.fingerprint in self.prs:
            self.comments[proposal.fingerprint] = self.comments.get(proposal.fingerprint, 0) + 1
            return Published(action="updated", url=f"pr/{proposal.fingerprint}")
        self.prs[proposal.fingerprint] = proposal
        return Published(action="opened", url=f"pr/{proposal.fingerprint}")


class ListSource:
    """`ports.ChatSource` over a list of messages, read after the watermark like a chat."""

    def __init__(self, stream: str, messages: Sequence[Message]) -> None:
        self.stream = stream
        self.messages = sorted(messages, key=lambda message: message.id)

    def start_after(self) -> int:
        return 0

    def fetch(self, after: int | None) -> Iterator[Message]:
        return iter([m for m in self.messages if after is None or m.id > after])

    def close(self) -> None:
        pass
