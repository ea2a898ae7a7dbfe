"""The Gemini adapter (google-genai): structured generation and embeddings, with retries,
rate limits and usage accounting."""

from __future__ import annotations

import importlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from google import genai
from google.genai import errors, types

from . import calls
from .calls import (
    RETRYABLE_STATUS,
    CallGate,
    Retryable,
    RetryPolicy,
    ZeroVector,
    parse_retry_after,
    plan_batches,
)
from .config import Config, Secrets
from .models import Usage
from .ports import EmbedTask, GenerateRequest, Generation, LLMUnavailable, MalformedReply
from .usage import RateLimiter, UsageMeter, estimate_tokens

__all__ = ["RetryPolicy", "plan_batches"]  # kept importable from here, where they began

log = logging.getLogger(__name__)

T = TypeVar("T")

TASK_TYPES: dict[EmbedTask, str] = {"document": "RETRIEVAL_DOCUMENT", "query": "RETRIEVAL_QUERY"}

# batchEmbedContents refuses more than 100 requests per call
# ("BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch").
MAX_EMBED_BATCH = 100
MAX_EMBED_BATCH_TOKENS = 20_000

DEFAULT_TIMEOUT_SECONDS = 120.0


def _transient_network_errors() -> tuple[type[BaseException], ...]:
    """Timeouts and dropped connections of whichever HTTP library google-genai runs on.

    google-genai 3.x sends through `httpx2`; the 1.x releases (the ones Python 3.10 gets) use
    `httpx`. Both raise their own exception classes, so both are looked up.
    """
    found: list[type[BaseException]] = []
    for name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for cls_name in ("TimeoutException", "NetworkError", "RemoteProtocolError"):
            cls = getattr(module, cls_name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found)


TRANSIENT_ERRORS = _transient_network_errors()


class GeminiError(Exception):
    """Gemini could not be used for this call; the message says why and what to do."""


class MissingGeminiKey(GeminiError):
    """No API key was found in the environment."""


class GeminiRejected(GeminiError):
    """Gemini refused the request with a 4xx that retrying cannot fix."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


class GeminiUnavailable(GeminiError, LLMUnavailable):
    """Gemini kept failing with transient errors until the retries ran out."""


class GeminiBlocked(GeminiError, MalformedReply):
    """Gemini answered without usable text (blocked by safety filters, or cut off).

    It is also a MalformedReply, so callers record it as a failure of that one batch, the
    same as an answer that never matched the schema, and the run goes on.
    """


class GeminiAdapters(NamedTuple):
    llm: GeminiLLM
    embedder: GeminiEmbedder


def retry_after_seconds(error: errors.APIError, *, now: datetime | None = None) -> float | None:
    """How long Gemini asked us to wait: the Retry-After header, else google.rpc.RetryInfo."""
    headers = getattr(error.response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if value:
        seconds = parse_retry_after(str(value), now=now)
        if seconds is not None:
            return seconds
    return _retry_info_delay(error.details)


def _retry_info_delay(details: Any) -> float | None:
    """The `retryDelay` ("17s", "0.5s") of a google.rpc.RetryInfo in an error's details."""
    body = details.get("error", details) if isinstance(details, dict) else {}
    for detail in body.get("details") or []:
        if not isinstance(detail, dict) or not str(detail.get("@type", "")).endswith("RetryInfo"):
            continue
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(detail.get("retryDelay", "")))
        if match:
            return float(match.group(1))
    return None


def _error_reasons(error: errors.APIError) -> set[str]:
    details = error.details if isinstance(error.details, dict) else {}
    body = details.get("error", details)
    return {
        str(detail.get("reason"))
        for detail in body.get("details") or []
        if isinstance(detail, dict) and detail.get("reason")
    }


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0].rstrip(".") if lines else ""


def describe(error: errors.APIError) -> str:
    """`429 RESOURCE_EXHAUSTED: message` in one line."""
    head = f"{error.code} {error.status}" if error.status else str(error.code)
    message = _first_line(error.message)
    return f"{head}: {message}" if message else head


def rejection_message(error: errors.APIError, *, model: str) -> str:
    """One sentence for a 4xx that retrying cannot fix, saying what to check."""
    message = (error.message or "").lower()
    if "API_KEY_INVALID" in _error_reasons(error) or "api key not valid" in message:
        return "Gemini rejected the API key; check GEMINI_API_KEY."
    if error.code in (401, 403):
        return (
            f"Gemini refused the request ({describe(error)}); check that GEMINI_API_KEY is a "
            "Gemini API key whose project may use the Generative Language API."
        )
    if error.code == 404:
        return (
            f"Gemini does not know the model '{model}' ({describe(error)}); check the model "
            "names under `models:` in .github/pythia.yml."
        )
    return f"Gemini rejected the request to {model} ({describe(error)}); it was not retried."


class _GeminiErrors:
    """How Gemini's failures read, for the shared retry policy (calls.py)."""

    name = "Gemini"

    def retryable(self, error: Exception, *, model: str) -> Retryable | None:
        if isinstance(error, errors.APIError):
            if error.code not in RETRYABLE_STATUS:
                raise GeminiRejected(
                    rejection_message(error, model=model), code=error.code
                ) from None
            return Retryable(describe(error), retry_after=retry_after_seconds(error))
        if isinstance(error, TRANSIENT_ERRORS):
            return Retryable(type(error).__name__, no_answer=True)
        return None

    def unavailable(self, message: str) -> Exception:
        return GeminiUnavailable(message)


GEMINI_ERRORS = _GeminiErrors()


def call_with_retries(call: Callable[[], T], *, policy: RetryPolicy, model: str) -> T:
    """Run `call`, retrying 408/429/5xx and timeouts; other 4xx fail at once (calls.py)."""
    return calls.call_with_retries(call, policy=policy, model=model, errors=GEMINI_ERRORS)


def generation_config(request: GenerateRequest) -> types.GenerateContentConfig:
    """The SDK config of one structured-output call."""
    thinking = (
        types.ThinkingConfig(thinking_budget=request.thinking_budget)
        if request.thinking_budget is not None
        else None
    )
    return types.GenerateContentConfig(
        system_instruction=request.system or None,
        temperature=request.temperature,
        max_output_tokens=request.max_output_tokens,
        response_mime_type="application/json",
        response_schema=request.schema,
        thinking_config=thinking,
        # No tools are sent; switching automatic function calling off keeps the SDK on its
        # plain one-request path (and out of the logs).
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )


def usage_of(response: types.GenerateContentResponse) -> Usage:
    meta = response.usage_metadata
    if meta is None:
        return Usage()
    return Usage(
        input_tokens=meta.prompt_token_count or 0,
        output_tokens=meta.candidates_token_count or 0,
        thinking_tokens=meta.thoughts_token_count or 0,
    )


def _name(value: Any) -> str:
    return str(getattr(value, "value", value))


def reply_text(response: types.GenerateContentResponse, *, request: GenerateRequest) -> str:
    """The answer's text (thought summaries left out), or GeminiBlocked saying why there is none."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        raise GeminiBlocked(
            f"Gemini blocked the {request.stage} prompt ({_name(feedback.block_reason)}); "
            "the batch is recorded as failed."
        )
    candidate = response.candidates[0] if response.candidates else None
    parts = candidate.content.parts if candidate and candidate.content else None
    text = "".join(part.text for part in parts or [] if part.text and not part.thought)
    if text.strip():
        return text
    reason = _name(candidate.finish_reason) if candidate and candidate.finish_reason else "none"
    if reason == "MAX_TOKENS":
        raise GeminiBlocked(
            f"Gemini used up max_output_tokens ({request.max_output_tokens}) before writing "
            f"the {request.stage} answer; raise models.max_output_tokens or lower "
            "models.thinking_budget."
        )
    raise GeminiBlocked(
        f"Gemini returned no text for the {request.stage} call (finish reason {reason}); "
        "the batch is recorded as failed."
    )


class GeminiLLM:
    """`ports.LLM` over `client.models.generate_content` with JSON output and a response schema."""

    def __init__(
        self,
        client: genai.Client,
        *,
        meter: UsageMeter,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.meter = meter
        self.limiter = limiter
        self.gate = CallGate(
            meter=meter,
            errors=GEMINI_ERRORS,
            limiter=limiter,
            retry=retry or RetryPolicy(),
            deadline=deadline,
            clock=clock,
        )

    def generate(self, request: GenerateRequest) -> Generation:
        config = generation_config(request)
        # Usage is recorded before the text is checked: a blocked answer is billed all the same.
        response = self.gate.send(
            lambda: self.client.models.generate_content(
                model=request.model, contents=request.prompt, config=config
            ),
            stage=request.stage,
            model=request.model,
            estimated_tokens=estimate_tokens(request.system) + estimate_tokens(request.prompt),
            usage=usage_of,
        )
        return Generation(text=reply_text(response, request=request), usage=usage_of(response))


def normalise(values: Sequence[float]) -> list[float]:
    """Scale a vector to unit length.

    Only the full 3072-dimension output of gemini-embedding-001 comes normalised; truncated
    (Matryoshka) outputs must be re-normalised before cosine distance means anything
    (https://ai.google.dev/gemini-api/docs/embeddings#control-embedding-size).
    """
    try:
        return calls.normalise(values)
    except ZeroVector:
        raise GeminiError("Gemini returned an all-zero embedding; re-run the indexing.") from None


class GeminiEmbedder:
    """`ports.Embedder` over `client.models.embed_content` (batchEmbedContents)."""

    provider = "gemini"

    def __init__(
        self,
        client: genai.Client,
        *,
        model: str,
        dimensions: int,
        meter: UsageMeter,
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
        self.gate = CallGate(
            meter=meter, errors=GEMINI_ERRORS, limiter=limiter, retry=retry or RetryPolicy()
        )
        self.max_batch = min(max_batch, MAX_EMBED_BATCH)
        self.max_batch_tokens = max_batch_tokens

    def embed(self, texts: Sequence[str], *, task: EmbedTask) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start, stop in plan_batches(
            texts, max_texts=self.max_batch, max_tokens=self.max_batch_tokens
        ):
            vectors.extend(self._embed_batch(texts[start:stop], task=task))
        return vectors

    def _embed_batch(self, texts: Sequence[str], *, task: EmbedTask) -> list[list[float]]:
        estimated = sum(estimate_tokens(text) for text in texts)
        # One Content per text: a plain list of strings becomes the parts of ONE content for
        # multimodal embedding models, which then return a single fused vector.
        contents = [types.Content(parts=[types.Part(text=text)]) for text in texts]
        config = types.EmbedContentConfig(
            task_type=TASK_TYPES[task], output_dimensionality=self.dimensions
        )

        def used(response: types.EmbedContentResponse) -> Usage:
            # Older SDK releases (what Python 3.10 gets) have no usage on embedding responses.
            meta = getattr(response, "usage_metadata", None)
            tokens = meta.prompt_token_count if meta and meta.prompt_token_count else estimated
            return Usage(input_tokens=tokens)

        response = self.gate.send(
            lambda: self.client.models.embed_content(
                model=self.model, contents=contents, config=config
            ),
            stage="embed",
            model=self.model,
            estimated_tokens=estimated,
            usage=used,
        )
        embeddings = response.embeddings or []
        if len(embeddings) != len(texts):
            raise GeminiError(
                f"Gemini returned {len(embeddings)} embeddings for {len(texts)} texts; "
                "re-run the indexing."
            )
        vectors = []
        for embedding in embeddings:
            values = embedding.values or []
            if len(values) != self.dimensions:
                raise GeminiError(
                    f"Gemini returned {len(values)}-dimensional vectors from {self.model} but "
                    f"models.embedding_dimensions is {self.dimensions}; check both settings."
                )
            vectors.append(normalise(values))
        return vectors


def make_client(
    api_key: str, *, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, api_version: str = "v1"
) -> genai.Client:
    """A Gemini API client whose own retries are off, so `call_with_retries` is the policy.

    No base URL is set here: google-genai reads GOOGLE_GEMINI_BASE_URL itself when
    `http_options.base_url` is empty (google/genai/_base_url.py).
    """
    # The stable v1 API, whatever the SDK's default: google-genai 3.x uses v1, but the 2.x
    # releases that Python 3.10 gets use v1beta; one wire format for every supported Python.
    options: dict[str, Any] = {"timeout": int(timeout_seconds * 1000), "api_version": api_version}
    # HttpRetryOptions(attempts=1) is the SDK's "never retry"; older releases never retry.
    retry_options = getattr(types, "HttpRetryOptions", None)
    if retry_options is not None:
        options["retry_options"] = retry_options(attempts=1)
    return genai.Client(api_key=api_key, vertexai=False, http_options=types.HttpOptions(**options))


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
) -> GeminiAdapters:
    """The LLM and the embedder, sharing one client and one meter; generation and embedding
    each keep to their own rate limits (Gemini counts them as separate quotas)."""
    key = secrets.gemini_api_key.get_secret_value().strip() if secrets.gemini_api_key else ""
    if not key:
        raise MissingGeminiKey(
            "GEMINI_API_KEY is not set; export it, or pass the repository secret to the "
            "action as `gemini-api-key`."
        )
    client = make_client(key, timeout_seconds=timeout_seconds)
    generation = limiter or RateLimiter.from_config(config)
    embedding = embedding_limiter or RateLimiter.from_config(config, embedding=True)
    policy = retry or RetryPolicy()
    llm = GeminiLLM(client, meter=meter, limiter=generation, retry=policy, deadline=deadline)
    embedder = GeminiEmbedder(
        client,
        model=config.models.embedding,
        dimensions=config.models.embedding_dimensions,
        meter=meter,
        limiter=embedding,
        retry=policy,
    )
    return GeminiAdapters(llm=llm, embedder=embedder)
