"""Structured generation: parse an LLM's JSON answer into a pydantic model, retrying once."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from . import prompts
from .config import Config
from .models import Usage
from .ports import LLM, GenerateRequest, Generation, MalformedReply

M = TypeVar("M", bound=BaseModel)

MAX_ERRORS_SHOWN = 8

_FENCE = re.compile(r"\A\s*```[A-Za-z0-9_-]*[ \t]*\n(?P<body>.*?)\n?```\s*\Z", re.DOTALL)


def strip_fences(text: str) -> str:
    """The JSON inside a ```json fence, or the text itself when it is not fenced."""
    match = _FENCE.match(text)
    return match.group("body") if match else text.strip()


def parse_reply(text: str, schema: type[M]) -> M:
    """Validate the answer's JSON against `schema`; raises pydantic's ValidationError."""
    return schema.model_validate_json(strip_fences(text))


def summarise_errors(error: ValidationError) -> str:
    """The validation errors as short lines a model can act on."""
    lines = []
    for item in error.errors(include_url=False)[:MAX_ERRORS_SHOWN]:
        where = ".".join(str(part) for part in item["loc"]) or "(the whole reply)"
        lines.append(f"- {where}: {item['msg']}")
    hidden = error.error_count() - MAX_ERRORS_SHOWN
    if hidden > 0:
        lines.append(f"- and {hidden} more")
    return "\n".join(lines)


def retry_prompt(prompt: str, error: ValidationError) -> str:
    """The original prompt, followed by what was wrong with the previous answer."""
    return (
        f"{prompt}\n\n"
        "Your previous reply could not be used because it did not match the required JSON "
        f"schema:\n{summarise_errors(error)}\n"
        "Reply again with only the JSON object, matching the schema exactly."
    )


def _added(first: Usage, second: Usage) -> Usage:
    return Usage(
        input_tokens=first.input_tokens + second.input_tokens,
        output_tokens=first.output_tokens + second.output_tokens,
        thinking_tokens=first.thinking_tokens + second.thinking_tokens,
    )


def generate_model(llm: LLM, request: GenerateRequest, schema: type[M]) -> tuple[M, Generation]:
    """Ask for `schema` as JSON and parse it; one retry shows the model its validation errors.

    The returned Generation holds the text that validated and the usage of both calls.
    Raises MalformedReply when the second answer does not validate either.
    """
    request = replace(request, schema=schema)
    first = llm.generate(request)
    try:
        return parse_reply(first.text, schema), first
    except ValidationError as error:
        retry = replace(request, prompt=retry_prompt(request.prompt, error))
    second = llm.generate(retry)
    usage = _added(first.usage, second.usage)
    try:
        return parse_reply(second.text, schema), Generation(text=second.text, usage=usage)
    except ValidationError as error:
        first_problem = summarise_errors(error).splitlines()[0].removeprefix("- ")
        raise MalformedReply(
            f"The {request.stage} reply did not match the {schema.__name__} schema twice "
            f"(last problem: {first_problem}), so this batch is recorded as failed."
        ) from None


def request_for(
    config: Config,
    *,
    stage: str,
    model: str,
    template: str,
    schema: type[BaseModel],
    repo_root: Path | None,
    **values: Any,
) -> GenerateRequest:
    """A request for one stage: the shared system prompt, a rendered template, config's knobs."""
    return GenerateRequest(
        stage=stage,
        model=model,
        system=prompts.render("system.md.j2", repo_root=repo_root, project=config.project),
        prompt=prompts.render(template, repo_root=repo_root, **values),
        schema=schema,
        temperature=config.models.temperature,
        max_output_tokens=config.models.max_output_tokens,
        thinking_budget=config.models.thinking_budget,
    )
