"""Benchmark of the docs index: build, one-file update and search times, and peak memory.

Run with `.venv/bin/python tests/benchmarks/bench_index.py [--sizes 1000,10000,50000]`.
Each scenario runs in its own child process so its peak RSS is its own (RSS includes the
memory-mapped index pages that search reads, see index.MMAP_BYTES). Embedding time is
measured separately (the embedders here are local stand-ins) and reported apart from the
index's own work, since real embedding time depends on the API.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import git  # noqa: E402

from doubles import HashEmbedder  # noqa: E402
from pythia import db, index  # noqa: E402
from pythia import search as hybrid  # noqa: E402
from pythia.ports import EmbedTask  # noqa: E402

UV_DOCS = Path("/work/shared/corpora/uv-docs")
INCLUDE = ["**/*.md", "**/*.mdx"]
SECTIONS_PER_FILE = 10
QUERIES = 50
TARGETS = {"hybrid_ms@10000": 20.0, "hybrid_ms@50000": 80.0, "tree2000_update_s": 2.0}


class RandomEmbedder:
    """768-dim pseudo-random unit vectors, deterministic per text, fast to produce.

    Each vector is a rotation of one of a pool of random unit vectors, so all are distinct
    and unit length without generating 768 Gaussians per text.
    """

    def __init__(self, dimensions: int = 768, pool: int = 1024) -> None:
        self.model = "random-unit-768"
        self.dimensions = dimensions
        rng = random.Random(7)
        self._pool = []
        for _ in range(pool):
            raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
            norm = math.sqrt(sum(v * v for v in raw))
            self._pool.append([v / norm for v in raw])

    def embed(self, texts: Sequence[str], *, task: EmbedTask) -> list[list[float]]:
        vectors = []
        for text in texts:
            seed = zlib.crc32(text.encode())
            base = self._pool[seed % len(self._pool)]
            shift = (seed >> 10) % self.dimensions
            vectors.append(base[shift:] + base[:shift])
        return vectors


class Timed:
    """Wraps an embedder and adds up the seconds spent inside `embed`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model = inner.model
        self.dimensions = inner.dimensions
        self.seconds = 0.0

    def embed(self, texts: Sequence[str], *, task: EmbedTask) -> list[list[float]]:
        started = time.perf_counter()
        try:
            return list(self.inner.embed(texts, task=task))
        finally:
            self.seconds += time.perf_counter() - started


def vocabulary(size: int = 4000, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    words = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))))
    return sorted(words)


class Writer:
    """Synthetic markdown pages: an H1 and sections of two ~90-word paragraphs (one chunk)."""

    def __init__(self, seed: int = 3) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary()
        self.weights = [1.0 / (rank + 1) for rank in range(len(self.words))]  # Zipf-like

    def sentence(self, n: int) -> str:
        return " ".join(self.rng.choices(self.words, cum_weights=None, weights=self.weights, k=n))

    def page(self, number: int, sections: int) -> str:
        parts = [f"# Page {number} {self.sentence(3)}\n"]
        for s in range(sections):
            parts.append(f"## Section {s} {self.sentence(3)}\n")
            parts.append(self.sentence(90) + ".\n")
            if s % 3 == 0:
                parts.append(f"```toml\n# setting {s}\nkey = {s}\n```\n")
            parts.append(self.sentence(90) + ".\n")
        return "\n".join(parts)


def write_tree(root: Path, files: int, *, sections: int = SECTIONS_PER_FILE) -> None:
    writer = Writer()
    for number in range(files):
        folder = root / f"area-{number % 20:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"page-{number:05d}.md").write_text(writer.page(number, sections))


def change_one_paragraph(root: Path) -> None:
    file = next(iter(sorted(root.rglob("*.md"))))
    text = file.read_text()
    file.write_text(text.replace(".\n", " plus one changed sentence.\n", 1))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def median_ms(run: Callable[[Any], object], items: Sequence[Any]) -> float:
    times = []
    for item in items:
        started = time.perf_counter()
        run(item)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def timed_update(conn: Any, root: Path, embedder: Timed, **options: Any) -> dict[str, float]:
    before = embedder.seconds
    stats = index.update_index(
        conn, docs_root=root, include=INCLUDE, exclude=[], embedder=embedder, **options
    )
    embed_s = embedder.seconds - before
    return {
        "seconds": stats.seconds,
        "embed_s": round(embed_s, 3),
        "index_s": round(stats.seconds - embed_s, 3),
        "files_changed": stats.files_changed,
        "chunks_total": stats.chunks_total,
        "chunks_embedded": stats.chunks_embedded,
    }


def scenario_synthetic(chunks: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "docs"
        write_tree(root, files=chunks // SECTIONS_PER_FILE)
        embedder = Timed(RandomEmbedder())
        conn = db.connect(Path(tmp) / "index.sqlite")
        build = timed_update(conn, root, embedder)
        change_one_paragraph(root)
        one = timed_update(conn, root, embedder)
        writer = Writer(seed=99)
        queries = [writer.sentence(random.Random(i).randint(2, 5)) for i in range(QUERIES)]
        vectors = RandomEmbedder().embed([f"q{i}" for i in range(QUERIES)], task="query")
        result = {
            "scenario": f"synthetic {chunks}",
            "chunks": build["chunks_total"],
            "build_s": build["seconds"],
            "build_index_s": build["index_s"],
            "update_s": one["seconds"],
            "update_index_s": one["index_s"],
            "update_embedded": one["chunks_embedded"],
            "bm25_ms": median_ms(lambda q: hybrid.search(conn, q, k=8), queries),
            "knn_ms": median_ms(lambda v: hybrid.vector_ranking(conn, v, limit=50), vectors),
            "hybrid_ms": median_ms(
                lambda q: hybrid.search(conn, q, k=8, embedder=embedder), queries
            ),
            "db_mb": round(os.path.getsize(Path(tmp) / "index.sqlite") / 2**20, 1),
        }
        conn.close()
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def scenario_tree2000(in_git: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "repo" / "docs"
        write_tree(root, files=2000, sections=3)
        if in_git:
            repo = git.Repo.init(root.parent)
            commit_all(repo, "docs")
        embedder = Timed(RandomEmbedder())
        conn = db.connect(Path(tmp) / "index.sqlite")
        build = timed_update(conn, root, embedder)
        change_one_paragraph(root)
        if in_git:
            commit_all(repo, "edit one page")
            repo.close()
        one = timed_update(conn, root, embedder)
        conn.close()
        size = os.path.getsize(Path(tmp) / "index.sqlite") / 2**20
    return {
        "db_mb": size,
        "scenario": f"2,000 files {'in git' if in_git else 'outside git'}",
        "chunks": build["chunks_total"],
        "build_s": build["seconds"],
        "build_index_s": build["index_s"],
        "update_s": one["seconds"],
        "update_index_s": one["index_s"],
        "update_embedded": one["chunks_embedded"],
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def commit_all(repo: git.Repo, message: str) -> None:
    repo.git.add("-A")
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.com"]
    repo.git.execute(["git", *identity, "commit", "-qm", message])


def scenario_uv_docs() -> dict[str, Any]:
    # The corpus is read in place and never modified: the "one-file update" first builds
    # without one page (excluded), then lets it in, so exactly one file is new.
    left_out = "concepts/cache.md"
    with tempfile.TemporaryDirectory() as tmp:
        embedder = Timed(HashEmbedder(model="hash-768", dimensions=768))
        conn = db.connect(Path(tmp) / "index.sqlite")
        full = timed_update(conn, UV_DOCS, embedder)
        unchanged = timed_update(conn, UV_DOCS, embedder)
        index.update_index(
            conn, docs_root=UV_DOCS, include=INCLUDE, exclude=[left_out], embedder=embedder
        )
        one = timed_update(conn, UV_DOCS, embedder)
        queries = ["how do I clear the cache", "install python version", "lockfile resolution"]
        hybrid_ms = median_ms(
            lambda q: hybrid.search(conn, q, k=8, embedder=embedder), queries * 10
        )
        conn.close()
        size = os.path.getsize(Path(tmp) / "index.sqlite") / 2**20
    return {
        "db_mb": size,
        "scenario": "uv docs (81 files)",
        "chunks": full["chunks_total"],
        "build_s": full["seconds"],
        "build_index_s": full["index_s"],
        "update_s": one["seconds"],
        "update_index_s": one["index_s"],
        "update_embedded": one["chunks_embedded"],
        "noop_update_s": unchanged["seconds"],
        "hybrid_ms": hybrid_ms,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def run_child(args: list[str]) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    ).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


COLUMNS = [
    ("scenario", "scenario", "{}"),
    ("chunks", "chunks", "{}"),
    ("build_s", "build s", "{:.2f}"),
    ("build_index_s", "build s (no embed)", "{:.2f}"),
    ("update_s", "1-file update s", "{:.3f}"),
    ("update_index_s", "update s (no embed)", "{:.3f}"),
    ("update_embedded", "update embedded", "{}"),
    ("bm25_ms", "BM25 ms", "{:.2f}"),
    ("knn_ms", "KNN ms", "{:.2f}"),
    ("hybrid_ms", "hybrid ms", "{:.2f}"),
    ("db_mb", "index MB", "{:.1f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
]


def table(rows: list[dict[str, Any]]) -> str:
    cells = [[title for _, title, _ in COLUMNS]]
    for row in rows:
        cells.append([fmt.format(row[key]) if key in row else "-" for key, _, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    found = {row["scenario"]: row for row in rows}
    checks = []
    for size, key in ((10000, "hybrid_ms@10000"), (50000, "hybrid_ms@50000")):
        row = found.get(f"synthetic {size}")
        if row:
            ok = row["hybrid_ms"] < TARGETS[key]
            target = TARGETS[key]
            measured = row["hybrid_ms"]
            checks.append(f"hybrid median at {size}: {measured:.2f} ms (< {target} ms) {ok}")
    for row in rows:
        if row["scenario"].startswith("2,000 files"):
            ok = row["update_index_s"] < TARGETS["tree2000_update_s"]
            checks.append(
                f"{row['scenario']}: one-file update {row['update_index_s']:.3f} s "
                f"excluding embedding (< 2 s) {ok}"
            )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "synthetic":
            result = scenario_synthetic(int(rest[0]))
        elif kind == "tree2000":
            result = scenario_tree2000(rest[0] == "git")
        else:
            result = scenario_uv_docs()
        print(json.dumps(result))
        return
    plan = [["synthetic", size] for size in args.sizes.split(",")]
    plan += [["tree2000", "git"], ["tree2000", "plain"]]
    if UV_DOCS.is_dir():
        plan.append(["uv"])
    rows = []
    for step in plan:
        print("running", " ".join(step), file=sys.stderr, flush=True)
        rows.append(run_child(step))
    print(table(rows))
    print()
    print("\n".join(verdicts(rows)))


if __name__ == "__main__":
    main()
