"""Search speed against the hardware floor: hybrid search vs raw sqlite-vec KNN and an
in-memory scan of the same vectors, at 10k and 50k chunks of 768 dimensions.

Run with `.venv/bin/python tests/benchmarks/bench_search.py [--sizes 10000,50000]`. Each size
runs in its own child process. The index is synthetic (tests/benchmarks/bench_index.py's
pages and pseudo-random unit vectors); query vectors are computed before timing, so every
figure is search alone. "hybrid" is `SearchIndex.search(query, k=8)` as a run makes it: one
index opened for many searches, BM25 and the vector ranking fused by page. Its first search
asks SQLite (FTS5, sqlite-vec); its second loads the keyword postings and the vectors into
memory, once per run: "load ms" is those two searches. Then medians of QUERIES searches
after one warm-up. "in a run" is what each search costs as a run makes them: the pipeline
hands its queries to `SearchIndex.prepare` first (their vector rankings from one matrix
product per block), then searches each; total time over QUERIES after loading, a mean, not
a median. "faster" is the faster of the KNN and the scan of a matrix with a vector per row, as
the goal is set; Pythia keeps the vectors a dimension per row, whose scan BLAS makes faster,
so "hybrid / fastest" also counts that scan as a baseline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_vec

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(Path(__file__).parent)]

from bench_index import INCLUDE, SECTIONS_PER_FILE, RandomEmbedder, Writer, write_tree  # noqa: E402

from pythia import db, index  # noqa: E402
from pythia.ports import EmbedTask  # noqa: E402
from pythia.search import SearchIndex  # noqa: E402

QUERIES = 100
LIMIT = 50  # neighbours asked of each vector baseline, as hybrid search asks


class Precomputed:
    """An Embedder answering queries with vectors computed before timing starts."""

    def __init__(self, inner: RandomEmbedder, queries: Sequence[str]) -> None:
        self.model, self.dimensions = inner.model, inner.dimensions
        self._vectors = dict(zip(queries, inner.embed(list(queries), task="query"), strict=True))

    def embed(self, texts: Sequence[str], *, task: EmbedTask) -> list[list[float]]:
        return [self._vectors[text] for text in texts]


def median_ms(run: Callable[[Any], object], items: Sequence[Any]) -> float:
    run(items[0])  # warm-up: the first query pays for loading what later ones reuse
    times = []
    for item in items:
        started = time.perf_counter()
        run(item)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def scenario(chunks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "docs"
        write_tree(root, files=chunks // SECTIONS_PER_FILE)
        embedder = RandomEmbedder()
        conn = db.connect(Path(tmp) / "index.sqlite")
        index.update_index(conn, docs_root=root, include=INCLUDE, exclude=[], embedder=embedder)
        writer = Writer(seed=99)
        queries = [f"{writer.sentence(2 + i % 4)} q{i}" for i in range(QUERIES)]
        precomputed = Precomputed(embedder, queries)
        vectors = [np.asarray(precomputed.embed([q], task="query")[0], np.float32) for q in queries]
        conn.execute("pragma mmap_size = 1073741824")

        def knn(vector: np.ndarray) -> object:
            return conn.execute(
                "select rowid, distance from chunk_vectors where embedding match ? and k = ?",
                (sqlite_vec.serialize_float32(vector.tolist()), LIMIT),
            ).fetchall()

        blobs = conn.execute("select embedding from chunk_vectors order by rowid").fetchall()
        matrix = np.frombuffer(b"".join(bytes(b[0]) for b in blobs), np.float32).reshape(
            len(blobs), -1
        )

        by_dimension = np.ascontiguousarray(matrix.T)

        def scan(vector: np.ndarray) -> object:
            similarities = matrix @ vector
            top = np.argpartition(-similarities, LIMIT)[:LIMIT]
            return top[np.argsort(-similarities[top])]

        def scan_by_dimension(vector: np.ndarray) -> object:  # the layout Pythia keeps
            similarities = vector @ by_dimension
            top = np.argpartition(-similarities, LIMIT)[:LIMIT]
            return top[np.argsort(-similarities[top])]

        searcher = SearchIndex(conn, embedder=precomputed)
        keyword = SearchIndex(conn)
        started = time.perf_counter()
        for query in queries[:2]:
            searcher.search(query, k=8)
        load_ms = (time.perf_counter() - started) * 1000
        for query in queries[:2]:
            keyword.search(query, k=8, mode="keyword")
        # As a run searches: the queries' vector rankings prepared together, then each search.
        in_run = SearchIndex(conn, embedder=precomputed)
        for query in queries[:2]:  # loading, timed above as "load ms"
            in_run.search(query, k=8)
        started = time.perf_counter()
        in_run.prepare(queries, k=8)
        for query in queries:
            in_run.search(query, k=8)
        run_ms = (time.perf_counter() - started) * 1000 / len(queries)
        result = {
            "run_ms": run_ms,
            "chunks": len(blobs),
            "load_ms": load_ms,
            "knn_ms": median_ms(knn, vectors),
            "scan_ms": median_ms(scan, vectors),
            "scan_by_dimension_ms": median_ms(scan_by_dimension, vectors),
            "bm25_ms": median_ms(lambda q: keyword.search(q, k=8, mode="keyword"), queries),
            "hybrid_ms": median_ms(lambda q: searcher.search(q, k=8), queries),
        }
        conn.close()
    result["ratio"] = result["hybrid_ms"] / min(result["knn_ms"], result["scan_ms"])
    result["run_ratio"] = result["run_ms"] / min(result["knn_ms"], result["scan_ms"])
    result["fastest_ratio"] = result["hybrid_ms"] / min(
        result["knn_ms"], result["scan_ms"], result["scan_by_dimension_ms"]
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(scenario(args.child)))
        return
    print(
        "chunks | sqlite-vec KNN ms | in-memory scan ms | BM25 ms | hybrid ms | hybrid / faster"
        " | load ms | in a run ms | in a run / faster | scan by dimension ms | hybrid / fastest"
    )
    for size in args.sizes.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--child", size], check=True, capture_output=True, text=True
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(
            f"{row['chunks']} | {row['knn_ms']:.2f} | {row['scan_ms']:.2f} | {row['bm25_ms']:.2f}"
            f" | {row['hybrid_ms']:.2f} | {row['ratio']:.2f}x | {row['load_ms']:.0f}"
            f" | {row['run_ms']:.2f} | {row['run_ratio']:.2f}x"
            f" | {row['scan_by_dimension_ms']:.2f} | {row['fastest_ratio']:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
