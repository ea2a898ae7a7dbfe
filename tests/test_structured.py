"""Parsing model answers into pydantic models, with one corrective retry."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from doubles import ScriptedLLM
from pythia.models import Usage
from pythia.ports import GenerateRequest, MalformedReply
from pythia.structured import generate_model, strip_fences


class Answer(BaseModel):
    topic: Literal["cache", "proxy", "install"]
    summary: str
    confidence: float = Field(ge=0, le=1)


class Placeholder(BaseModel):
    pass


def request() -> GenerateRequest:
    return GenerateRequest(
        stage="classify",
        model="gemini-3.5-flash-lite",
        system="You sort Kestrel chat threads.",
        prompt="Thread 1: where does kestrel keep its cache since 3.0?",
        schema=Placeholder,
    )


VALID = json.dumps(
    {"topic": "cache", "summary": "The cache moved to ~/.cache/kestrel.", "confidence": 0.9}
)


def test_a_valid_reply_is_parsed_in_one_call() -> None:
    llm = ScriptedLLM().enqueue(VALID, usage=Usage(input_tokens=40, output_tokens=12))

    answer, generation = generate_model(llm, request(), Answer)

    assert answer == Answer(
        topic="cache", summary="The cache moved to ~/.cache/kestrel.", confidence=0.9
    )
    assert generation.usage == Usage(input_tokens=40, output_tokens=12)
    assert len(llm.requests) == 1
    assert llm.requests[0].schema is Answer


def test_a_fenced_reply_is_unwrapped_without_a_retry() -> None:
    llm = ScriptedLLM().enqueue(f"```json\n{VALID}\n```\n")

    answer, _ = generate_model(llm, request(), Answer)

    assert answer.topic == "cache"
    assert len(llm.requests) == 1


@pytest.mark.parametrize(
    ("text", "inner"),
    [
        ('```json\n{"a": 1}\n```', '{"a": 1}'),
        ('```\n{"a": 1}```', '{"a": 1}'),
        ('  {"a": 1}  ', '{"a": 1}'),
        ("```JSON  \n[1,\n2]\n```", "[1,\n2]"),
    ],
)
def test_strip_fences(text: str, inner: str) -> None:
    assert strip_fences(text) == inner


def test_an_invalid_reply_is_retried_once_with_the_validation_error() -> None:
    wrong = json.dumps({"topic": "weather", "summary": "Rain.", "confidence": 3})
    llm = ScriptedLLM()
    llm.enqueue(wrong, usage=Usage(input_tokens=40, output_tokens=10, thinking_tokens=5))
    llm.enqueue(VALID, usage=Usage(input_tokens=55, output_tokens=12))

    answer, generation = generate_model(llm, request(), Answer)

    assert answer.topic == "cache"
    assert generation.text == VALID
    assert generation.usage == Usage(input_tokens=95, output_tokens=22, thinking_tokens=5)
    first, second = llm.requests
    assert second.prompt.startswith(first.prompt)
    feedback = second.prompt[len(first.prompt) :]
    assert "- topic: Input should be 'cache', 'proxy' or 'install'" in feedback
    assert "- confidence: Input should be less than or equal to 1" in feedback
    assert second.system == first.system and second.model == first.model


def test_a_reply_that_is_not_json_is_retried() -> None:
    llm = ScriptedLLM().enqueue("Sure! Here is the answer: cache").enqueue(VALID)

    answer, _ = generate_model(llm, request(), Answer)

    assert answer.topic == "cache"
    assert "Invalid JSON" in llm.requests[1].prompt


def test_two_invalid_replies_raise_malformed_reply() -> None:
    llm = ScriptedLLM().enqueue('{"topic": "cache"}').enqueue('{"topic": "cache", "summary": 1}')

    with pytest.raises(MalformedReply) as caught:
        generate_model(llm, request(), Answer)

    message = str(caught.value)
    assert message.startswith("The classify reply did not match the Answer schema twice")
    assert "summary: Input should be a valid string" in message
    assert message.count(".") <= 2 and "\n" not in message
    assert len(llm.requests) == 2
