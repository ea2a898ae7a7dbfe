"""Question vectors: whether a conversation asks what a proposal's conversations asked."""

from __future__ import annotations

from collections.abc import Sequence

from pythia.models import Verdict
from pythia.questions import SAME_QUESTION, Questions

VECTORS = {
    "limit parallel jobs": [1.0, 0.0, 0.0],
    "how many tasks at once": [0.8, 0.6, 0.0],
    "alpine binary": [0.0, 0.0, 1.0],
    "jobs": [1.0, 0.1, 0.0],
    "musl": [0.0, 0.2, 1.0],
}


def known(texts: Sequence[str]) -> list[list[float]] | None:
    if any(text not in VECTORS for text in texts):
        return None
    return [VECTORS[text] for text in texts]


def verdict(*queries: str, keywords: tuple[str, ...] = ()) -> Verdict:
    return Verdict("tg:1", "question", True, "s", "r", queries=queries, keywords=keywords)


def test_a_conversation_asks_like_one_of_the_proposals_conversations() -> None:
    questions = Questions(known)
    questions.remember("p", [verdict("limit parallel jobs", keywords=("jobs",))])

    assert questions.asks_like(verdict("how many tasks at once", keywords=("jobs",)), "p")
    assert not questions.asks_like(verdict("alpine binary", keywords=("musl",)), "p")
    # A later group's proposal for the same section adds what its conversations asked.
    questions.remember("p", [verdict("alpine binary")])
    assert questions.asks_like(verdict("alpine binary", keywords=("musl",)), "p")


def test_without_vectors_retrieval_alone_decides() -> None:
    questions = Questions(known)
    questions.remember("p", [verdict("limit parallel jobs")])

    assert questions.asks_like(verdict("never embedded"), "p")  # its queries were not embedded
    assert questions.asks_like(verdict("alpine binary"), "unknown proposal")
    assert 0 < SAME_QUESTION < 1
