"""Test doubles that implement the real ports, so tests read like uses of the real thing."""

from __future__ import annotations

from collections import deque

from pythia.models import Usage
from pythia.ports import GenerateRequest, Generation


class ScriptedLLM:
    """`ports.LLM` that answers with queued texts, in order, and keeps every request it got."""

    def __init__(self) -> None:
        self.requests: list[GenerateRequest] = []
        self._replies: deque[Generation] = deque()

    def enqueue(self, text: str, *, usage: Usage | None = None) -> ScriptedLLM:
        self._replies.append(Generation(text=text, usage=usage or Usage()))
        return self

    def generate(self, request: GenerateRequest) -> Generation:
        self.requests.append(request)
        if not self._replies:
            raise AssertionError(
                f"ScriptedLLM got a {request.stage} request but has no reply left; enqueue one"
            )
        return self._replies.popleft()
