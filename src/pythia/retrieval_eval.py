"""Measuring retrieval: recall@1, recall@k and MRR of each search mode on a set of questions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .search import Mode, SearchIndex, pages


class QuestionsError(Exception):
    """The questions file is missing or a line of it is not a question with answers."""


@dataclass(frozen=True)
class Question:
    """A question as users ask it, and the pages (docs-relative paths) that answer it."""

    question: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class Miss:
    """A question whose answer was not among the top pages, and what came instead."""

    question: str
    answers: tuple[str, ...]
    got: tuple[str, ...]


@dataclass(frozen=True)
class Scores:
    """One mode's figures on a question set."""

    mode: Mode
    k: int
    ranks: tuple[int | None, ...]  # per question, the 1-based rank of its first answer
    misses: tuple[Miss, ...]

    @property
    def recall_at_1(self) -> float:
        return _share(rank is not None and rank <= 1 for rank in self.ranks)

    @property
    def recall_at_k(self) -> float:
        return _share(rank is not None and rank <= self.k for rank in self.ranks)

    @property
    def mrr(self) -> float:
        """Mean reciprocal rank of the first answer within the top `k` pages (0 beyond)."""
        if not self.ranks:
            return 0.0
        return sum(1 / rank for rank in self.ranks if rank is not None) / len(self.ranks)


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values) if values else 0.0


def load_questions(path: Path) -> list[Question]:
    """Read a JSON Lines file of `{"question": ..., "answers": [...]}` objects."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise QuestionsError(f"cannot read {path}: {error.strerror}") from None
    questions = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            data = None
        if not (
            isinstance(data, dict)
            and isinstance(data.get("question"), str)
            and data["question"].strip()
            and isinstance(data.get("answers"), list)
            and data["answers"]
            and all(isinstance(answer, str) for answer in data["answers"])
        ):
            raise QuestionsError(
                f"{path}:{number}: expected {{\"question\": \"...\", \"answers\": "
                "[\"page path\", ...]}} on each line"
            )
        questions.append(Question(data["question"], tuple(data["answers"])))
    if not questions:
        raise QuestionsError(f"{path} has no questions; write one JSON object per line")
    return questions


def answer_rank(ranked_pages: Sequence[str], answers: Sequence[str]) -> int | None:
    """The 1-based rank of the first page that answers, or None."""
    wanted = set(answers)
    return next((rank for rank, page in enumerate(ranked_pages, 1) if page in wanted), None)


def score(
    mode: Mode,
    questions: Sequence[Question],
    rank_pages: Callable[[str], Sequence[str]],
    *,
    k: int,
) -> Scores:
    """Rank each question's pages and score the first `k` against its answers."""
    ranks: list[int | None] = []
    misses: list[Miss] = []
    for question in questions:
        top = list(rank_pages(question.question))[:k]
        rank = answer_rank(top, question.answers)
        ranks.append(rank)
        if rank is None:
            misses.append(Miss(question.question, question.answers, tuple(top)))
    return Scores(mode=mode, k=k, ranks=tuple(ranks), misses=tuple(misses))


def evaluate(
    index: SearchIndex, questions: Sequence[Question], *, k: int = 5
) -> list[Scores]:
    """Each mode the index allows (keyword; vector and hybrid with an embedder), scored."""

    def ranker(mode: Mode) -> Callable[[str], list[str]]:
        return lambda text: pages(index.search(text, k=k, mode=mode, per_page=1))

    return [score(mode, questions, ranker(mode), k=k) for mode in index.modes]


def render(results: Sequence[Scores]) -> str:
    """The modes side by side, then each mode's misses."""
    if not results:
        return "no questions"
    k = results[0].k
    count = len(results[0].ranks)
    lines = [
        f"{count} questions, the top {k} pages of each mode",
        "",
        f"{'mode':<8}  {'recall@1':>8}  {f'recall@{k}':>8}  {f'MRR@{k}':>6}",
    ]
    lines += [
        f"{r.mode:<8}  {r.recall_at_1:>8.3f}  {r.recall_at_k:>8.3f}  {r.mrr:>6.3f}"
        for r in results
    ]
    for result in results:
        if not result.misses:
            continue
        lines += ["", f"{result.mode} misses ({len(result.misses)}):"]
        for miss in result.misses:
            lines.append(f"  {miss.question}")
            lines.append(f"    want {', '.join(miss.answers)}")
            lines.append(f"    got  {', '.join(miss.got) or 'nothing'}")
    return "\n".join(lines)


def as_json(results: Sequence[Scores]) -> dict[str, object]:
    """The figures and misses of each mode, for `--json`."""
    return {
        "questions": len(results[0].ranks) if results else 0,
        "k": results[0].k if results else 0,
        "modes": {
            result.mode: {
                "recall@1": round(result.recall_at_1, 4),
                f"recall@{result.k}": round(result.recall_at_k, 4),
                "mrr": round(result.mrr, 4),
                "misses": [
                    {"question": m.question, "answers": list(m.answers), "got": list(m.got)}
                    for m in result.misses
                ],
            }
            for result in results
        },
    }
