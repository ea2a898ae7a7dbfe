"""The response cache: one exact request to one provider is paid for once."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel

from doubles import HashEmbedder, ScriptedLLM
from pythia.models import Usage
from pythia.ports import GenerateRequest, Generation
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


ANSWER = '{"answer": "set HTTPS_PROXY and KESTREL_CA_BUNDLE"}'


def test_a_sealed_cache_keeps_nothing_readable_without_its_secret(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    request = replace(REQUEST, prompt="how do I reach the cache behind the office proxy?")
    cache = ResponseCache(path, secret="api-key-1")
    llm = CachedLLM(ScriptedLLM().enqueue(ANSWER), cache, provider="gemini")
    llm.generate(request)
    CachedEmbedder(HashEmbedder(), cache).embed(["office proxy cache"], task="query")
    cache.close()

    raw = path.read_bytes()
    assert b"HTTPS_PROXY" not in raw and b"KESTREL_CA_BUNDLE" not in raw
    assert request_key("gemini", request).encode() not in raw  # keys are HMACs
    # The same secret answers again at no cost.
    again = CachedLLM(ScriptedLLM(), ResponseCache(path, secret="api-key-1"), provider="gemini")
    assert again.generate(request).text == ANSWER
    # Another secret (a rotated key) or none finds nothing, asks again and overwrites.
    for secret in ("api-key-2", None):
        other = ResponseCache(path, secret=secret)
        assert other.get(request_key("gemini", request)) is None
        fresh = CachedLLM(ScriptedLLM().enqueue('{"answer": "new"}'), other, provider="gemini")
        assert fresh.generate(request).text == '{"answer": "new"}'
        other.close()


def test_a_row_that_does_not_open_is_a_miss_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    sealed = ResponseCache(path, secret="k")
    sealed.put("key", provider="gemini", request=REQUEST, answer=Generation(ANSWER, Usage()))
    sealed.close()
    with sqlite3.connect(path) as conn:
        conn.execute("update responses set text = 'tampered'")
    assert ResponseCache(path, secret="k").get("key") is None
