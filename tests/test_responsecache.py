"""The response cache: one exact request to one provider is paid for once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel

from doubles import HashEmbedder, ScriptedLLM
from pythia.models import Usage
from pythia.ports import GenerateRequest
from pythia.responsecache import CachedEmbedder, CachedLLM, ResponseCache, request_key


class Reply(BaseModel):
    answer: str


REQUEST = GenerateRequest(
    stage="classify", model="qwen3:8b", system="s", prompt="p", schema=Reply
)


def test_the_key_covers_provider_model_and_every_field_of_the_request() -> None:
    key = request_key("openai", REQUEST)
    assert key == request_key("openai", replace(REQUEST))
    assert len({
        key,
        request_key("gemini", REQUEST),
        request_key("openai", replace(REQUEST, model="llama3.2:3b")),
        request_key("openai", replace(REQUEST, prompt="p2")),
        request_key("openai", replace(REQUEST, system="s2")),
        request_key("openai", replace(REQUEST, temperature=0.7)),
        request_key("openai", replace(REQUEST, max_output_tokens=100)),
    }) == 7
    assert request_key("openai", replace(REQUEST, stage="propose")) == key  # same question


def test_a_repeated_request_is_answered_from_the_cache_at_no_cost(tmp_path: Path) -> None:
    inner = ScriptedLLM().enqueue('{"answer": "42"}', usage=Usage(100, 10))
    cache = ResponseCache(tmp_path / "responses.sqlite")
    llm = CachedLLM(inner, cache, provider="openai")

    first = llm.generate(REQUEST)
    second = llm.generate(REQUEST)

    assert first.text == second.text == '{"answer": "42"}'
    assert first.usage == Usage(100, 10) and second.usage == Usage()
    assert len(inner.requests) == 1 and (cache.hits, cache.misses) == (1, 1)


def test_the_cache_outlives_the_run_and_forgets_old_answers(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    cache = ResponseCache(path, clock=lambda: 1_000_000.0)
    CachedLLM(ScriptedLLM().enqueue("{}"), cache, provider="gemini").generate(REQUEST)
    cache.close()

    rerun = ScriptedLLM()
    reopened = ResponseCache(path, clock=lambda: 1_000_000.0 + 86400)
    assert CachedLLM(rerun, reopened, provider="gemini").generate(REQUEST).text == "{}"
    assert rerun.requests == []
    reopened.close()
    month_later = ResponseCache(path, clock=lambda: 1_000_000.0 + 31 * 86400)
    assert len(month_later) == 0


def test_query_vectors_are_kept_and_documents_pass_through(tmp_path: Path) -> None:
    inner = HashEmbedder(dimensions=8)
    cache = ResponseCache(tmp_path / "responses.sqlite")
    embedder = CachedEmbedder(inner, cache)

    first = embedder.embed(["where is the cache?", "proxy"], task="query")
    again = CachedEmbedder(inner, cache).embed(["proxy", "where is the cache?"], task="query")
    embedder.embed(["a docs chunk"], task="document")

    assert again == [first[1], first[0]]
    assert inner.calls == [["where is the cache?", "proxy"], ["a docs chunk"]]
    assert embedder.model == inner.model and embedder.dimensions == 8
