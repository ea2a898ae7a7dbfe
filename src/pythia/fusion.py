"""Rankings of chunk rows fused into page-level results, in numpy.

A chunk row is a chunk's position among the index's ascending chunk ids; `chunk_pages` gives
each row's page number. Every sum here is made in the order a loop over the rankings would
make it (bincount adds each bin's weights in input order), so scores are exact, not near.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .keywords import Bm25Ranking
from .topk import distinct, run_starts

NO_ROWS = np.zeros(0, dtype=np.intp)


def keyword_orders(
    found: Bm25Ranking, chunk_pages: np.ndarray, *, sections_per_page: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three orders of the chunk rows of one BM25 ranking: sections by BM25; sections matching
    in the title or headings, by that BM25 (then the first); and one section per page, pages
    by the BM25 of their best `sections_per_page` sections summed. Ties keep BM25 order."""
    rows, scores, heading = found.rows, found.scores, found.heading_scores
    in_headings = np.flatnonzero(heading > 0)
    # lexsort is stable: equal keys keep the sections' order.
    headings = in_headings[np.lexsort((-scores[in_headings], -heading[in_headings]))]
    page, position = _grouped(chunk_pages[rows])
    counted = position < sections_per_page
    page_scores = np.bincount(page[counted], weights=scores[counted])
    best = np.flatnonzero(position == 0)  # each page's best section, pages as first met
    best = best[np.argsort(-page_scores[page[best]], kind="stable")]
    return rows, rows[headings], rows[best]


def by_page(
    rankings: Sequence[tuple[float, np.ndarray]],
    chunk_pages: np.ndarray,
    *,
    rrf_k: int,
    k: int,
    per_page: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the best pages' best chunks, at most `per_page` a page, and their page's
    score; pages best first, each page's chunks best first.

    A chunk scores the sum of weight / (rrf_k + rank) over the (weight, rows) rankings that
    hold it; a page the same sum over each ranking's order of pages (by first appearance).
    Equal chunks rank by row; equal pages by their best chunk's row.

    Scores are summed by bincount into arrays indexed by chunk row and page number (zeroed
    pages cost nothing until touched), and groups found by sorting a few hundred keys: a
    search's fusion is small, so the count of numpy calls, not their size, is its cost.
    """
    lengths = [len(ranking) for _, ranking in rankings]
    if not sum(lengths):
        return NO_ROWS, np.zeros(0)
    rows = np.concatenate([ranking for _, ranking in rankings])
    ranking = np.repeat(np.arange(len(lengths)), lengths)  # each item's ranking
    weights = np.array([weight for weight, _ in rankings])
    rank = np.concatenate([np.arange(1, n + 1) for n in lengths])
    chunk_scores = np.bincount(rows, weights=weights[ranking] / (rrf_k + rank))
    chunks = distinct(rows)
    # Each ranking's pages in order of first appearance, ranked from 1.
    pages = chunk_pages[rows]
    first = np.sort(_firsts(ranking * (int(pages.max()) + 1) + pages))
    first_in = ranking[first]
    page_rank = np.arange(1, len(first) + 1) - np.searchsorted(first_in, first_in)
    page_scores = np.bincount(pages[first], weights=weights[first_in] / (rrf_k + page_rank))
    # Chunks best first; pages by score, then by their best chunk's row (a page's first
    # chunk here), so a stable sort on those two keys keeps each page's chunks together and
    # best first. A chunk is within its page's first `per_page` when the one `per_page`
    # places before it is of another page.
    chunks = chunks[np.lexsort((chunks, -chunk_scores[chunks]))]
    page = chunk_pages[chunks]
    firsts = _firsts(page)
    best_of_page = np.empty(len(page_scores), dtype=chunks.dtype)
    best_of_page[page[firsts]] = chunks[firsts]
    placed = np.lexsort((best_of_page[page], -page_scores[page]))
    page = page[placed]
    cut = max(per_page, 1)
    kept = np.ones(len(page), dtype=bool)
    np.not_equal(page[cut:], page[:-cut], out=kept[cut:])
    placed = placed[kept][:k]
    return chunks[placed], page_scores[page[kept][:k]]


def _firsts(keys: np.ndarray) -> np.ndarray:
    """The position of each distinct key's first item, by key."""
    order = np.argsort(keys, kind="stable")
    firsts: np.ndarray = order[run_starts(keys[order])]
    return firsts


def _grouped(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each item's group (its key's rank among the distinct keys) and its position among the
    items of its group, in order: keys [7, 3, 7, 7] give groups [1, 0, 1, 1] and positions
    [0, 0, 1, 2]."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    group = np.empty(len(keys), dtype=np.intp)
    group[order] = np.cumsum(starts) - 1
    position = np.empty(len(keys), dtype=np.intp)
    position[order] = np.arange(len(keys)) - np.flatnonzero(starts)[group[order]]
    return group, position
