"""Time on inputs that once made a pattern or a search blow up: each at n and 2n characters.

Run with `.venv/bin/python tests/benchmarks/bench_pathological.py`. Linear work roughly doubles
from n to 2n; a pattern that backtracks shows a ratio of 4 or far more. These were timed unit
tests with a wall-clock bound, which a busy machine could fail; the suite now checks only
what each call returns on them (tests/test_safety.py, tests/safety/test_redact_corpus.py,
tests/test_edits.py).
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src")]

from pythia.edits import Edit, EditError, PathPolicy, apply_edits  # noqa: E402
from pythia.redact import redact  # noqa: E402
from pythia.safety import check_proposal, sanitize_for_publishing  # noqa: E402


def published(text: str) -> None:
    sanitize_for_publishing(text)
    check_proposal(
        before={},
        after={"docs/x.md": text},
        docs_domains=set(),
        allowed_domains=[],
        max_changed_lines=10,
    )


def failed_search(lines: int) -> None:
    words = ["kestrel", "cache", "task", "run", "deps", "inputs", "outputs", "remote"]
    rows = [
        " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(10)) + f" {i}"
        for i in range(lines)
    ]
    typo = "\n".join(rows[lines // 2 : lines // 2 + 10]).replace("cache", "cashe")
    policy = PathPolicy(root="docs", include=("**/*.md",), exclude=())
    with contextlib.suppress(EditError):
        apply_edits({"docs/long.md": "\n".join(rows) + "\n"}, [Edit("docs/long.md", typo, "x")],
                    allowed=policy)  # fmt: skip


CASES: list[tuple[str, Callable[[int], None]]] = [
    ("redact: digits and spaces", lambda n: redact("1 " * n)),
    ("publish: 'password' repeated", lambda n: published("password" * n)),
    ("publish: e-mail with a long domain", lambda n: published("x@" + ("a" * 60 + ".") * n)),
    ("publish: backticks and spaces", lambda n: published("` " * n)),
    ("publish: '<' repeated", lambda n: published("<" * n)),
    ("edits: failed search on a long page (lines)", failed_search),
]
SIZES = {0: 20_000, 1: 5_000, 2: 500, 3: 20_000, 4: 20_000, 5: 3_000}


def seconds(run: Callable[[int], None], n: int) -> float:
    started = time.perf_counter()
    run(n)
    return time.perf_counter() - started


def main() -> None:
    print(f"{'input':<46}{'n':>8}{'s at n':>10}{'s at 2n':>10}{'ratio':>8}")
    for number, (name, run) in enumerate(CASES):
        n = SIZES[number]
        small, large = seconds(run, n), seconds(run, 2 * n)
        print(f"{name:<46}{n:>8}{small:>10.3f}{large:>10.3f}{large / small:>8.2f}")


if __name__ == "__main__":
    main()
