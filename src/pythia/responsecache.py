"""The response cache: a model's answer to one exact request, kept in a SQLite file outside the
data branch (in Actions, the runner's temp folder, carried between runs by actions/cache), so a
rerun after a failure or a `--since` replay pays for nothing twice.

The key is a hash of the provider, the model and every field of the request (system prompt,
prompt, schema, sampling settings); a changed prompt template or schema is a new key. Answers
hold chat-derived text, which is why the file must never land on a public branch.

With a secret (the provider's API key, or PYTHIA_CACHE_SECRET) the cache is sealed: answers
and vectors are encrypted with Fernet (AES-CBC and HMAC-SHA256, from `cryptography`) under a
key derived from the secret, and request keys are HMACs, so a workflow that can read the
Actions cache but not the repository's secrets (one a fork's pull request runs) learns
nothing from it. A row that does not open with this run's secret (the key was rotated) is a
miss, answered again and overwritten.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .models import Usage
from .ports import LLM, Embedder, EmbedTask, GenerateRequest, Generation, embedding_id

# Old answers are dropped when the cache opens, so the Actions cache stays small.
KEEP_DAYS = 30
SCHEMA = """
create table if not exists responses (
    key text primary key,
    provider text not null,
    model text not null,
    stage text not null,
    text text not null,
    input_tokens integer not null,
    output_tokens integer not null,
    thinking_tokens integer not null,
    created_at real not null
);
create table if not exists query_vectors (
    key text primary key,
    vector text not null,
    created_at real not null
)
"""


def request_key(provider: str, request: GenerateRequest) -> str:
    """The cache key of one request to one provider: sha256 over everything that shapes it."""
    fields = {
        "provider": provider,
        "model": request.model,
        "system": request.system,
        "prompt": request.prompt,
        "schema": request.schema.model_json_schema(),
        "temperature": request.temperature,
        "max_output_tokens": request.max_output_tokens,
        "thinking_budget": request.thinking_budget,
    }
    encoded = json.dumps(fields, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()


class _Seal:
    """Encryption and keyed hashing under keys derived from one secret (HKDF-SHA256)."""

    def __init__(self, secret: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=64, salt=b"pythia response cache", info=b"v1"
        ).derive(secret.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived[:32]))
        self._mac = derived[32:]

    def key(self, key: str) -> str:
        return hmac.new(self._mac, key.encode(), hashlib.sha256).hexdigest()

    def close(self, text: str) -> str:
        return self._fernet.encrypt(text.encode()).decode()

    def open(self, token: str) -> str | None:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            return None


class ResponseCache:
    """Answers by request key, in one SQLite file; sealed when given a secret."""

    def __init__(
        self,
        path: Path,
        *,
        secret: str | None = None,
        keep_days: float = KEEP_DAYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._seal = _Seal(secret) if secret else None
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False)
        with self._conn:
            self._conn.executescript(SCHEMA)
            cutoff = clock() - keep_days * 86400
            self._conn.execute("delete from responses where created_at < ?", (cutoff,))
            self._conn.execute("delete from query_vectors where created_at < ?", (cutoff,))
        self.hits = 0
        self.misses = 0

    @property
    def sealed(self) -> bool:
        return self._seal is not None

    def _key(self, key: str) -> str:
        return self._seal.key(key) if self._seal else key

    def _close(self, text: str) -> str:
        return self._seal.close(text) if self._seal else text

    def _open(self, stored: str) -> str | None:
        return self._seal.open(stored) if self._seal else stored

    def get(self, key: str) -> Generation | None:
        with self._lock:
            row = self._conn.execute(
                "select text, input_tokens, output_tokens, thinking_tokens from responses "
                "where key = ?",
                (self._key(key),),
            ).fetchone()
        text = self._open(row[0]) if row is not None else None
        if row is None or text is None:
            return None
        return Generation(text=text, usage=Usage(row[1], row[2], row[3]))

    def put(self, key: str, *, provider: str, request: GenerateRequest, answer: Generation) -> None:
        usage = answer.usage
        with self._lock, self._conn:
            self._conn.execute(
                "insert or replace into responses values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    self._key(key),
                    provider,
                    request.model,
                    request.stage,
                    self._close(answer.text),
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.thinking_tokens,
                    self._clock(),
                ),
            )

    def vector(self, key: str) -> list[float] | None:
        with self._lock:
            row = self._conn.execute(
                "select vector from query_vectors where key = ?", (self._key(key),)
            ).fetchone()
        stored = self._open(row[0]) if row is not None else None
        return [float(value) for value in json.loads(stored)] if stored is not None else None

    def put_vector(self, key: str, vector: Sequence[float]) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "insert or replace into query_vectors values (?, ?, ?)",
                (self._key(key), self._close(json.dumps(list(vector))), self._clock()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("select count(*) from responses").fetchone()[0])

    def close(self) -> None:
        self._conn.close()


class CachedLLM:
    """`ports.LLM` that answers a request it has seen from the cache, at no cost; the rest go
    to `inner` and are kept. A cached answer reports zero usage: nothing was paid for it."""

    def __init__(self, inner: LLM, cache: ResponseCache, *, provider: str) -> None:
        self.inner = inner
        self.cache = cache
        self.provider = provider

    def generate(self, request: GenerateRequest) -> Generation:
        key = request_key(self.provider, request)
        cached = self.cache.get(key)
        if cached is not None:
            self.cache.hits += 1
            return Generation(text=cached.text, usage=Usage())
        self.cache.misses += 1
        answer = self.inner.generate(request)
        self.cache.put(key, provider=self.provider, request=request, answer=answer)
        return answer


class CachedEmbedder:
    """`ports.Embedder` that keeps search queries' vectors in the cache (a rerun embeds no
    query twice); documents pass straight through, since the index keeps their vectors."""

    def __init__(self, inner: Embedder, cache: ResponseCache) -> None:
        self.inner = inner
        self.cache = cache
        self.model = inner.model
        self.dimensions = inner.dimensions
        self.provider: str = getattr(inner, "provider", "gemini")

    def _key(self, text: str) -> str:
        source = f"{embedding_id(self.inner)}\n{self.dimensions}\nquery\n{text}"
        return hashlib.sha256(source.encode()).hexdigest()

    def embed(self, texts: Sequence[str], *, task: EmbedTask) -> list[list[float]]:
        if task != "query":
            return self.inner.embed(texts, task=task)
        found = {text: self.cache.vector(self._key(text)) for text in dict.fromkeys(texts)}
        missing = [text for text, vector in found.items() if vector is None]
        if missing:
            for text, vector in zip(missing, self.inner.embed(missing, task="query"), strict=True):
                self.cache.put_vector(self._key(text), vector)
                found[text] = vector
        return [found[text] or [] for text in texts]
