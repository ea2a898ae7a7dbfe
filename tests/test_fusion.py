"""Fusion in numpy gives what a plain loop over the rankings gives, to the last bit."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from pythia import fusion
from pythia.keywords import Bm25Ranking

# --- the loops, as search.py wrote them before fusion moved to numpy -----------------------


def loop_keyword_orders(
    found: Bm25Ranking, chunk_pages: np.ndarray, *, sections_per_page: int
) -> tuple[list[int], list[int], list[int]]:
    rows = list(
        zip(
            found.rows.tolist(),
            found.scores.tolist(),
            found.heading_scores.tolist(),
            strict=True,
        )
    )
    sections = [row for row, _, _ in rows]
    headings = [
        row for row, _, heading in sorted(rows, key=lambda r: (-r[2], -r[1])) if heading > 0
    ]
    by_page: dict[int, list[tuple[float, int]]] = {}
    for row, score, _ in rows:
        by_page.setdefault(int(chunk_pages[row]), []).append((score, row))
    page_scores = {
        page: sum(score for score, _ in found[:sections_per_page])
        for page, found in by_page.items()
    }
    best_first = sorted(by_page, key=lambda page: -page_scores[page])
    return sections, headings, [by_page[page][0][1] for page in best_first]


def loop_by_page(
    rankings: Sequence[tuple[float, Sequence[int]]],
    chunk_pages: np.ndarray,
    *,
    rrf_k: int,
    k: int,
    per_page: int,
) -> list[tuple[int, float]]:
    page_scores: dict[int, float] = {}
    chunk_scores: dict[int, float] = {}
    for weight, ranking in rankings:
        page_ranks: dict[int, int] = {}
        for rank, row in enumerate(ranking, start=1):
            chunk_scores[row] = chunk_scores.get(row, 0.0) + weight / (rrf_k + rank)
            page = int(chunk_pages[row])
            if page not in page_ranks:
                page_ranks[page] = len(page_ranks) + 1
                page_scores[page] = page_scores.get(page, 0.0) + weight / (
                    rrf_k + page_ranks[page]
                )
    sections: dict[int, list[int]] = {}
    for row in sorted(chunk_scores, key=lambda i: (-chunk_scores[i], i)):
        sections.setdefault(int(chunk_pages[row]), []).append(row)
    ordered = sorted(page_scores, key=lambda page: (-page_scores[page], sections[page][0]))
    ranked = [
        (row, page_scores[page]) for page in ordered for row in sections[page][: max(per_page, 1)]
    ]
    return ranked[:k]


# --- random rankings with the ties real ones have ------------------------------------------


def random_pages(rng: random.Random, chunks: int) -> np.ndarray:
    """Pages of a few sections each, in chunk order."""
    return np.repeat(np.arange(chunks), [rng.randint(1, 6) for _ in range(chunks)])[:chunks]


def random_bm25(rng: random.Random, chunks: int) -> Bm25Ranking:
    rows = rng.sample(range(chunks), rng.randint(0, min(chunks, 100)))
    levels = [rng.choice([0.5, 1.25, 2.0, 3.75]) for _ in rows]  # few values: many ties
    scores = sorted(levels, reverse=True)
    heading = [rng.choice([0.0, 0.0, 0.75, 1.5]) for _ in rows]
    return Bm25Ranking(
        rows=np.array(rows, dtype=np.intp),
        scores=np.array(scores),
        heading_scores=np.array(heading),
    )


def test_keyword_orders_are_the_loops() -> None:
    for seed in range(300):
        rng = random.Random(seed)
        chunk_pages = random_pages(rng, 400)
        found = random_bm25(rng, 400)

        orders = fusion.keyword_orders(found, chunk_pages, sections_per_page=2)

        expected = loop_keyword_orders(found, chunk_pages, sections_per_page=2)
        assert [order.tolist() for order in orders] == [list(o) for o in expected], seed


def test_fusion_is_the_loop_bit_for_bit() -> None:
    for seed in range(500):
        rng = random.Random(seed)
        chunk_pages = random_pages(rng, 300)
        rankings = [
            (weight, np.array(rng.sample(range(300), rng.randint(0, 120)), dtype=np.intp))
            for weight in rng.sample([3.2, 1.0, 0.7, 1.5], rng.randint(1, 4))
        ]
        k, per_page = rng.choice([1, 5, 8, 20]), rng.choice([0, 1, 2, 3])

        rows, scores = fusion.by_page(rankings, chunk_pages, rrf_k=10, k=k, per_page=per_page)

        expected = loop_by_page(
            [(w, r.tolist()) for w, r in rankings], chunk_pages, rrf_k=10, k=k, per_page=per_page
        )
        assert list(zip(rows.tolist(), scores.tolist(), strict=True)) == expected, seed


def test_fusion_of_nothing_is_nothing() -> None:
    pages = np.zeros(3, dtype=np.intp)

    rows, scores = fusion.by_page([(1.0, fusion.NO_ROWS)], pages, rrf_k=10, k=5, per_page=2)

    assert rows.tolist() == [] and scores.tolist() == []
