"""The OpenAI-compatible adapter (the official `openai` package): structured generation over
/v1/chat/completions and embeddings over /v1/embeddings, for OpenAI itself and for the servers
that speak its API (Ollama, vLLM, llama.cpp server, LM Studio, OpenRouter, gateways).

Retries, rate limits, caps, the time budget and usage go through calls.CallGate, as Gemini's do.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import openai
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from . import calls
from .calls import RETRYABLE_STATUS, CallGate, Retryable, RetryPolicy, ZeroVector, plan_batches
from .config import Config, Secrets
from .models import Usage
from .ports import EmbedTask, GenerateRequest, Generation, LLMUnavailable, MalformedReply
from .usage import RateLimiter, UsageMeter, estimate_tokens

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
# A local server needs no key, but the SDK refuses to start without one.
NO_KEY = "no-key"
DEFAULT_TIMEOUT_SECONDS = 120.0
MAX_EMBED_BATCH = 100
MAX_EMBED_BATCH_TOKENS = 20_000

StructuredOutput = Literal["json_schema", "json_object"]


class OpenAIError(Exception):
    """The OpenAI-compatible endpoint could not be used; the message says why and what to do."""


class MissingOpenAIKey(OpenAIError):
    """No key for api.openai.com (a local server at models.base_url needs none)."""


class OpenAIRejected(OpenAIError):
    """The server refused the request with a 4xx that retrying cannot fix."""

    def __init__(self, message: str, *, code: int, about_response_format: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.about_response_format = about_response_format


class OpenAIUnavailable(OpenAIError, LLMUnavailable):
    """The server kept failing with transient errors until the retries ran out."""


class OpenAIBlocked(OpenAIError, MalformedReply):
    """The answer had no usable text (a refusal, a content filter, or cut off by max tokens)."""


class OpenAIAdapters(NamedTuple):
    llm: OpenAILLM
    embedder: OpenAIEmbedder


def _server(base_url: str) -> str:
    return "OpenAI" if base_url.rstrip("/") == OPENAI_BASE_URL else f"The server at {base_url}"


def _message(error: openai.APIStatusError) -> str:
    """The server's own message, in one line: OpenAI's {"error": {"message"}} or a bare text."""
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = inner.get("message") if isinstance(inner, dict) else inner
        if text:
            return " ".join(str(text).split())[:300]
    return " ".join(str(error.message).split())[:300]


def retry_after_seconds(error: openai.APIStatusError) -> float | None:
    """The wait the server asked for: `retry-after-ms` (OpenAI's own) or `Retry-After`."""
    headers = error.response.headers
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    return calls.parse_retry_after(value) if value else None


_RESPONSE_FORMAT = re.compile(r"response_format|json_schema|json schema|structured output", re.I)


class _Errors:
    """How an OpenAI-compatible server's failures read, for the shared retry policy."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.name = _server(base_url)

    def retryable(self, error: Exception, *, model: str) -> Retryable | None:
        if isinstance(error, openai.APIStatusError):
            reason = f"{error.status_code}: {_message(error)}"
            if error.status_code not in RETRYABLE_STATUS:
                raise self.rejection(error, model=model) from None
            return Retryable(reason, retry_after=retry_after_seconds(error))
        if isinstance(error, openai.APIConnectionError):  # timeouts included
            return Retryable(type(error).__name__, no_answer=True)
        return None

    def unavailable(self, message: str) -> Exception:
        return OpenAIUnavailable(message)

    def rejection(self, error: openai.APIStatusError, *, model: str) -> OpenAIRejected:
        code, said = error.status_code, _message(error)
        if code == 401:
            text = f"{self.name} rejected the API key ({said}); check OPENAI_API_KEY."
        elif code == 403:
            text = f"{self.name} refused the request ({said}); check OPENAI_API_KEY's access."
        elif code == 404:
            text = (
                f"{self.name} does not know the model '{model}' ({said}); check the model names "
                "under `models:` in .github/pythia.yml (a local server must have pulled it)."
            )
        else:
            text = f"{self.name} rejected the request to {model} ({code}: {said}); not retried."
        return OpenAIRejected(
            text, code=code, about_response_format=code in (400, 422) and bool(
                _RESPONSE_FORMAT.search(said)
            )
        )


def usage_of(response: ChatCompletion) -> Usage:
    """Tokens from the answer's `usage`; OpenAI counts reasoning tokens inside completion
    tokens, Pythia counts them apart (as thinking, billed at the output rate)."""
    usage = response.usage
    if usage is None:
        return Usage()
    details = usage.completion_tokens_details
    reasoning = (details.reasoning_tokens or 0) if details is not None else 0
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=max(0, (usage.completion_tokens or 0) - reasoning),
        thinking_tokens=reasoning,
    )


def schema_instruction(request: GenerateRequest) -> str:
    """JSON mode checks only that the answer is JSON: the schema goes into the prompt (and the
    word JSON with it, which OpenAI's JSON mode requires), and structured.py validates."""
    schema = json.dumps(request.schema.model_json_schema(), separators=(",", ":"))
    return f"Answer with one JSON object, no prose, matching this JSON Schema:\n{schema}"


def chat_arguments(
    request: GenerateRequest, *, mode: StructuredOutput, newer_token_field: bool
) -> dict[str, Any]:
    """The body of one chat completion asking for JSON that matches `request.schema`."""
    system = request.system
    if mode == "json_schema":
        response_format: dict[str, Any] = {
            "type": "json_schema",
            "json_schema": {
                "name": request.schema.__name__,
                "schema": request.schema.model_json_schema(),
                # strict mode needs every property required and no defaults; pydantic's
                # schemas have defaults, so the server guides and structured.py validates.
                "strict": False,
            },
        }
    else:
        response_format = {"type": "json_object"}
        system = f"{system}\n\n{schema_instruction(request)}".strip()
    messages = [{"role": "user", "content": request.prompt}]
    if system:
        messages.insert(0, {"role": "system", "content": system})
    # OpenAI's reasoning models refuse `max_tokens`; most compatible servers know only it.
    tokens_field = "max_completion_tokens" if newer_token_field else "max_tokens"
    return {
        "model": request.model,
        "messages": messages,
        "temperature": request.temperature,
        tokens_field: request.max_output_tokens,
        "response_format": response_format,
    }


def reply_text(response: ChatCompletion, *, request: GenerateRequest, server: str) -> str:
    """The answer's text, or OpenAIBlocked saying why there is none."""
    choice = response.choices[0] if response.choices else None
    message = choice.message if choice is not None else None
    refusal = getattr(message, "refusal", None)
    if refusal:
        raise OpenAIBlocked(
            f"{server} refused the {request.stage} call ({' '.join(refusal.split())[:200]}); "
            "the batch is recorded as failed."
        )
    text = (message.content or "") if message is not None else ""
    if text.strip():
        return text
    reason = choice.finish_reason if choice is not None else "none"
    if reason == "length":
        raise OpenAIBlocked(
            f"{server} used up max_output_tokens ({request.max_output_tokens}) before writing "
            f"the {request.stage} answer; raise models.max_output_tokens."
        )
    raise OpenAIBlocked(
        f"{server} returned no text for the {request.stage} call (finish reason {reason}); "
        "the batch is recorded as failed."
    )


class OpenAILLM:
    """`ports.LLM` over chat completions with `response_format` JSON Schema, or JSON mode for
    servers without it (chosen by `structured_output`, or switched to on the first 400 that
    names the response format)."""

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        meter: UsageMeter,
        base_url: str = OPENAI_BASE_URL,
        structured_output: StructuredOutput = "json_schema",
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.meter = meter
        self.limiter = limiter
        self.structured_output: StructuredOutput = structured_output
        self.base_url = base_url
        self.errors = _Errors(base_url)
        self.gate = CallGate(
            meter=meter,
            errors=self.errors,
            limiter=limiter,
            retry=retry or RetryPolicy(),
            deadline=deadline,
            clock=clock,
        )

    def generate(self, request: GenerateRequest) -> Generation:
        try:
            response = self._send(request)
        except OpenAIRejected as error:
            if not (error.about_response_format and self.structured_output == "json_schema"):
                raise
            log.warning(
                "%s refused the JSON Schema response_format; using JSON mode for the rest of "
                "the run (set models.structured_output: json_object to skip the try)",
                self.errors.name,
            )
            self.structured_output = "json_object"
            response = self._send(request)
        text = reply_text(response, request=request, server=self.errors.name)
        return Generation(text=text, usage=usage_of(response))

    def _send(self, request: GenerateRequest) -> ChatCompletion:
        arguments = chat_arguments(
            request,
            mode=self.structured_output,
            newer_token_field=self.base_url.rstrip("/") == OPENAI_BASE_URL,
        )

        def create() -> ChatCompletion:
            response: ChatCompletion = self.client.chat.completions.create(**arguments)
            return response

        return self.gate.send(
            create,
            stage=request.stage,
            model=request.model,
            estimated_tokens=estimate_tokens(request.system) + estimate_tokens(request.prompt),
            usage=usage_of,
        )


class OpenAIEmbedder:
    """`ports.Embedder` over /v1/embeddings with the configured `dimensions`."""

    provider = "openai"

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        model: str,
        dimensions: int,
        meter: UsageMeter,
        base_url: str = OPENAI_BASE_URL,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        max_batch: int = MAX_EMBED_BATCH,
        max_batch_tokens: int = MAX_EMBED_BATCH_TOKENS,
    ) -> None:
        self.client = client
        self.model = model
        self.dimensions = dimensions
        self.meter = meter
        self.limiter = limiter
        self.server = _server(base_url)
        self.gate = CallGate(
            meter=meter, errors=_Errors(base_url), limiter=limiter, retry=retry or RetryPolicy()
        )
        self.max_batch = max_batch
        self.max_batch_tokens = max_batch_tokens

    def embed(self, texts: Sequence[str], *, task: EmbedTask) -> list[list[float]]:
        # The task is not sent: /v1/embeddings has no task type; documents and queries share
        # one space.
        vectors: list[list[float]] = []
        for start, stop in plan_batches(
            texts, max_texts=self.max_batch, max_tokens=self.max_batch_tokens
        ):
            vectors.extend(self._embed_batch(texts[start:stop]))
        return vectors

    def _embed_batch(self, texts: Sequence[str]) -> list[list[float]]:
        estimated = sum(estimate_tokens(text) for text in texts)

        def used(response: CreateEmbeddingResponse) -> Usage:
            tokens = response.usage.prompt_tokens if response.usage is not None else 0
            return Usage(input_tokens=tokens or estimated)

        response = self.gate.send(
            lambda: self.client.embeddings.create(
                model=self.model,
                input=list(texts),
                dimensions=self.dimensions,
                # The SDK asks for base64 unless told; not every compatible server has it.
                encoding_format="float",
            ),
            stage="embed",
            model=self.model,
            estimated_tokens=estimated,
            usage=used,
        )
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(texts):
            raise OpenAIError(
                f"{self.server} returned {len(data)} embeddings for {len(texts)} texts; "
                "re-run the indexing."
            )
        vectors = []
        for item in data:
            values = item.embedding
            if len(values) != self.dimensions:
                raise OpenAIError(
                    f"{self.server} returned {len(values)}-dimensional vectors from {self.model} "
                    f"but models.embedding_dimensions is {self.dimensions}; set it to "
                    f"{len(values)} or pick a model that can shorten its vectors."
                )
            try:
                vectors.append(calls.normalise(values))
            except ZeroVector:
                raise OpenAIError(
                    f"{self.server} returned an all-zero embedding; re-run the indexing."
                ) from None
        return vectors


def make_client(
    *, api_key: str, base_url: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
) -> openai.OpenAI:
    """A client whose own retries are off, so the shared policy (calls.py) is the one."""
    return openai.OpenAI(
        api_key=api_key, base_url=base_url, timeout=timeout_seconds, max_retries=0
    )


def from_config(
    config: Config,
    secrets: Secrets,
    meter: UsageMeter,
    *,
    limiter: RateLimiter | None = None,
    embedding_limiter: RateLimiter | None = None,
    retry: RetryPolicy | None = None,
    deadline: float | None = None,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> OpenAIAdapters:
    """The LLM and the embedder on one client and meter, each under its own rate limit."""
    models = config.models
    base_url = models.base_url.strip() or OPENAI_BASE_URL
    key = secrets.openai_api_key.get_secret_value().strip() if secrets.openai_api_key else ""
    if not key and base_url.rstrip("/") == OPENAI_BASE_URL:
        raise MissingOpenAIKey(
            "OPENAI_API_KEY is not set; export it or pass the secret to the action as "
            "`openai-api-key`, or point models.base_url at a local server that needs no key."
        )
    client = make_client(api_key=key or NO_KEY, base_url=base_url, timeout_seconds=timeout_seconds)
    policy = retry or RetryPolicy()
    llm = OpenAILLM(
        client,
        meter=meter,
        base_url=base_url,
        structured_output=models.structured_output,
        limiter=limiter or RateLimiter.from_config(config),
        retry=policy,
        deadline=deadline,
    )
    embedder = OpenAIEmbedder(
        client,
        model=models.embedding,
        dimensions=models.embedding_dimensions,
        meter=meter,
        base_url=base_url,
        limiter=embedding_limiter or RateLimiter.from_config(config, embedding=True),
        retry=policy,
    )
    return OpenAIAdapters(llm=llm, embedder=embedder)
