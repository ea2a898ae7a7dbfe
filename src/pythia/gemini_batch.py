"""The Gemini Batch API as a `backfill.BatchClient`: a backfill's classify or propose requests
inlined into one job (POST models/{model}:batchGenerateContent) and its answers read back
(GET batches/{name})."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from google.genai import types

from .backfill import JobResult
from .classify import ClassifyReply
from .gemini import GeminiBlocked, generation_config, reply_text, usage_of
from .ports import GenerateRequest, Generation, one_line


class GeminiBatches:
    """`BatchClient` over google-genai's `client.batches`, with inlined requests and answers
    (POST models/{model}:batchGenerateContent, GET batches/{name})."""

    def __init__(self, client: Any, *, call: Callable[[Callable[[], Any]], Any]) -> None:
        self.client = client
        self.call = call  # the shared retry policy around one SDK call

    def submit(self, requests: Mapping[str, GenerateRequest], *, model: str, label: str) -> str:
        inlined = [
            types.InlinedRequest(
                contents=[types.Content(role="user", parts=[types.Part(text=request.prompt)])],
                config=_batch_config(generation_config(request)),
                metadata={"key": key},
            )
            for key, request in requests.items()
        ]
        job = self.call(
            lambda: self.client.batches.create(
                model=model, src=inlined, config=types.CreateBatchJobConfig(display_name=label)
            )
        )
        if not job.name:
            raise RuntimeError("the Batch API answered without a job name")
        return str(job.name)

    def poll(self, name: str) -> JobResult:
        job = self.call(lambda: self.client.batches.get(name=name))
        state = str(getattr(job.state, "value", job.state) or "")
        if state in ("JOB_STATE_SUCCEEDED", "JOB_STATE_PARTIALLY_SUCCEEDED"):
            answers: dict[str, Generation | str] = {}
            for item in (job.dest.inlined_responses if job.dest else None) or []:
                key = str((item.metadata or {}).get("key", ""))
                if item.error is not None or item.response is None:
                    answers[key] = one_line(str(item.error or "no response"))
                    continue
                try:
                    text = reply_text(item.response, request=_ANY_REQUEST)
                except GeminiBlocked as error:
                    answers[key] = one_line(error)
                    continue
                answers[key] = Generation(text=text, usage=usage_of(item.response))
            return JobResult("succeeded", answers)
        if state in ("JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"):
            return JobResult("failed", detail=state.removeprefix("JOB_STATE_").lower())
        return JobResult("pending", detail=state)


def _batch_config(config: Any) -> Any:
    """The generation config for an inlined request: the SDK's own switch for automatic
    function calling is a client-side setting the Batch API does not take."""
    return config.model_copy(update={"automatic_function_calling": None})


# What reply_text names in its messages; a batch answer's own request is not kept.
_ANY_REQUEST = GenerateRequest(
    stage="batch job", model="", system="", prompt="", schema=ClassifyReply
)
