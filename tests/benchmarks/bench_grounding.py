"""False refusals of the grounding check and the docs check on faithful proposals to the uv docs.

Run with `.venv/bin/python tests/benchmarks/bench_grounding.py [--docs PATH] [--verbose]`.

Each case in tests/fixtures/grounding/uv-faithful.jsonl is a short conversation and an edit to a
real uv docs page whose every flag, path, variable, version, URL and key was said in the
conversation or is already in the docs. The edit is applied to the corpus (read in place, never
copied), then both checks run as the pipeline will run them. A faithful proposal that either
check would refuse is a false refusal; the goal is 0. Soft findings (numbers and names in prose)
are counted apart, since they lead to a retry, not a refusal, on their own.

uv generates docs/reference/cli.md, settings.md and environment.md at build time, so they are
not in the corpus; they are listed as existing (links to them resolve) but cannot be read (their
anchors are not checked), which is what a repository that declares its generated pages gets.

The same cases, each with one token changed into an invented one (a flag, variable, path, version,
URL or config key the conversation and the docs do not have) or a link sent to a missing page
or heading, measure the other side: how many inventions the checks catch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src")]

from pythia.claims import line_claims  # noqa: E402
from pythia.docscheck import check_docs  # noqa: E402
from pythia.edits import apply_edits  # noqa: E402
from pythia.grounding import (  # noqa: E402
    Grounds,
    added_lines,
    attribute_lines,
    find_ungrounded,
)
from pythia.models import Edit  # noqa: E402
from pythia.pages import read_page  # noqa: E402

CASES = ROOT / "tests" / "fixtures" / "grounding" / "uv-faithful.jsonl"
GENERATED = ("reference/cli.md", "reference/settings.md", "reference/environment.md")


def default_docs() -> Path:
    """The uv docs corpus: shared/ beside the checkout (CI), or the workplace's copy."""
    for candidate in (
        ROOT.parent / "shared" / "corpora" / "uv-docs",
        Path("/work/shared/corpora/uv-docs"),
    ):
        if candidate.is_dir():
            return candidate
    return Path("/work/shared/corpora/uv-docs")


def load_cases(path: Path = CASES) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def evaluate(case: dict[str, Any], *, docs: dict[str, str], paths: set[str]) -> dict[str, Any]:
    """Both checks on one case, as the pipeline runs them, and what each found."""
    path = case["path"]
    edit = Edit(path=path, search=case["search"], replace=case["replace"])
    current = {path: docs[path]} if path in docs else {}
    after = apply_edits(current, [edit], allowed=lambda _: True, new_file_dirs=["."])
    before = {name: docs[name] for name in after if name in docs}
    evidence = [message["text"] for message in case["conversation"]]
    started = time.perf_counter()
    ungrounded = find_ungrounded(before, after, evidence=evidence, docs=docs.values())
    grounding_seconds = time.perf_counter() - started
    started = time.perf_counter()
    problems = check_docs(before, after, read=docs.get, paths=paths)
    docs_seconds = time.perf_counter() - started
    support = attribute_lines(before, after, evidence=evidence, docs=docs.values())
    return {
        "id": case["id"],
        "hard": [item for item in ungrounded if not item.soft],
        "soft": [item for item in ungrounded if item.soft],
        "problems": problems,
        "lines": len(support),
        "supported": sum(1 for line in support if line.messages),
        "grounding_seconds": grounding_seconds,
        "docs_seconds": docs_seconds,
    }


def load_docs(docs_root: Path) -> tuple[dict[str, str], set[str]]:
    docs = {
        str(file.relative_to(docs_root)): file.read_text(encoding="utf-8")
        for file in sorted(docs_root.rglob("*.md"))
    }
    paths = {str(file.relative_to(docs_root)) for file in docs_root.rglob("*") if file.is_file()}
    paths.update(GENERATED)
    return docs, paths


def measure(docs_root: Path, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    docs, paths = load_docs(docs_root)
    return [evaluate(case, docs=docs, paths=paths) for case in cases]


# How each kind of token is turned into a plausible invention.
_INVENT = {
    "flag": lambda token: token + "-all",
    "env": lambda token: token + "_MODE",
    "path": lambda token: re.sub(r"([^/\\]+)$", r"extra/\1", token, count=1),
    "version": lambda token: re.sub(r"(\d+)(\D*)$", lambda m: f"{int(m[1]) + 7}{m[2]}", token),
    "url": lambda token: token.rstrip("/") + "/v2",
    "config-key": lambda token: token + "-mode",
}


def inventions(case: dict[str, Any], docs: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
    """Copies of a case with one added token changed into one nobody said: (kind, token, case)."""
    path, replace = case["path"], case["replace"]
    edit = Edit(path=path, search=case["search"], replace=replace)
    current = {path: docs[path]} if path in docs else {}
    after = apply_edits(current, [edit], allowed=lambda _: True, new_file_dirs=["."])[path]
    page = read_page(after, path=path)
    grounds = Grounds([*(message["text"] for message in case["conversation"]), *docs.values()])
    found: list[tuple[str, str, dict[str, Any]]] = []
    seen: set[str] = set()
    for number in added_lines(docs.get(path), after):
        line = page.lines[number]
        for claim in line_claims(line, page.roles[number]):
            if claim.kind not in _INVENT or claim.token in seen or claim.token not in line:
                continue
            seen.add(claim.token)
            invented = _INVENT[claim.kind](claim.token)
            probe = line_claims(invented, page.roles[number])
            if invented == claim.token or any(grounds.holds(item) for item in probe[:1]):
                continue  # the "invention" happens to exist: not a test of anything
            # Change the token on its own line only, not the same word elsewhere in prose.
            changed = replace.replace(line, line.replace(claim.token, invented, 1), 1)
            found.append((claim.kind, invented, {**case, "replace": changed}))
    for match in re.finditer(r"\]\(([^)#\s]+\.md)(#[\w-]+)?\)", replace):
        target, anchor = match.group(1), match.group(2)
        broken = target.replace(".md", "-old.md") if not anchor else f"{target}{anchor}-old"
        whole = match.group(0)
        found.append(
            ("link", broken, {**case, "replace": replace.replace(whole, f"]({broken})", 1)})
        )
    return found


def catch_rate(docs_root: Path, cases: list[dict[str, Any]]) -> Counter[tuple[str, bool]]:
    """For each kind of invention, how many were caught (True) and missed (False)."""
    docs, paths = load_docs(docs_root)
    tally: Counter[tuple[str, bool]] = Counter()
    for case in cases:
        for kind, _, variant in inventions(case, docs):
            result = evaluate(variant, docs=docs, paths=paths)
            tally[(kind, bool(result["hard"] or result["problems"]))] += 1
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=Path, default=default_docs())
    parser.add_argument("--verbose", action="store_true", help="print every case")
    args = parser.parse_args()
    if not args.docs.is_dir():
        print(f"No uv docs at {args.docs}; pass --docs PATH.", file=sys.stderr)
        return 2
    cases = load_cases()
    results = measure(args.docs, cases)
    refused = [r for r in results if r["hard"] or r["problems"]]
    softened = [r for r in results if r["soft"]]
    for result in results:
        if args.verbose or result in refused or result in softened:
            verdict = "REFUSED" if result in refused else ("soft" if result["soft"] else "ok")
            print(f"{verdict:8} {result['id']}")
            for item in result["hard"] + result["soft"]:
                print(f"         {item.kind}: {item.token} ({item.path}:{item.line})")
            for problem in result["problems"]:
                print(f"         {problem.kind}: {problem.message}")
    kinds = Counter(item.kind for r in results for item in r["hard"] + r["soft"])
    lines = sum(r["lines"] for r in results)
    supported = sum(r["supported"] for r in results)
    slowest = max(r["grounding_seconds"] + r["docs_seconds"] for r in results)
    print(f"faithful proposals: {len(results)} (uv docs at {args.docs})")
    print(f"false refusals: {len(refused)}")
    print(f"proposals with soft findings (retry, not refusal): {len(softened)}")
    print(f"findings by kind: {dict(kinds) or '{}'}")
    print(f"added lines attributed to a message: {supported}/{lines}")
    print(f"slowest proposal: {slowest * 1000:.0f} ms for both checks")
    tally = catch_rate(args.docs, cases)
    caught = sum(count for (_, hit), count in tally.items() if hit)
    print(f"inventions caught: {caught}/{sum(tally.values())}")
    for kind in sorted({kind for kind, _ in tally}):
        print(f"  {kind}: {tally[(kind, True)]}/{tally[(kind, True)] + tally[(kind, False)]}")
    return 1 if refused else 0


if __name__ == "__main__":
    raise SystemExit(main())
