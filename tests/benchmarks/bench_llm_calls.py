"""How many LLM calls and tokens classification and proposals make per 1,000 chat messages.

Run on demand: `.venv/bin/python tests/benchmarks/bench_llm_calls.py [--messages N]`.
A synthetic community chat (questions with answers, chatter, greetings, long
troubleshooting threads) goes through the real prefilter, batching, prompts and proposal loop;
the LLM is a counting double that answers like a model would, so the figures are the calls and
prompt tokens Pythia itself would send. Target: at most 10 classification calls per 1,000
messages (the Node.js original made at least 34 with batches of 30).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from doubles import FunctionLLM
from pythia.classify import classify
from pythia.config import parse_config
from pythia.edits import PathPolicy
from pythia.models import Hit, Message, Thread
from pythia.ports import GenerateRequest
from pythia.propose import NoChange, ProposalFailed, propose
from pythia.threads import group_threads
from pythia.usage import estimate_tokens

START = datetime(2026, 6, 1, 8, 0, tzinfo=timezone.utc)
DOC = "# Guide\n\n## Setup\n\nInstall the tool, then run it.\n\n## Cache\n\nThe cache is local.\n"
QUESTIONS = [
    "How do I point the remote cache at our internal server behind the proxy?",
    "Why does the build rerun every task after I upgraded to the new release?",
    "Is there a way to limit how many jobs run at once on a small CI machine?",
    "Where does the tool keep its local cache on Linux since the last major version?",
    "The Windows build fails with a file name too long error, any fix?",
]
ANSWERS = [
    "Set HTTPS_PROXY and point the CA bundle variable at your corporate certificate file.",
    "The cache key now includes the tool version, so the first run after an upgrade is cold.",
    "Use --jobs 2, the default is the number of CPUs on the machine.",
    "It moved to the XDG cache folder, so look under ~/.cache on Linux now.",
    "Enable long paths with git config core.longpaths true and the registry setting.",
]
CHATTER = ["hi all", "thanks!", "+1", "good morning", "lol", "nice", "ok", "see you"]
SMALL_TALK = [
    "Anyone going to the meetup in Lisbon next month? Would be great to meet.",
    "Our pipeline went from fourteen minutes to four after switching, very happy.",
    "Off-topic but the football last night was something else.",
]


def synthetic_chat(count: int, seed: int = 7) -> list[Message]:
    rng = random.Random(seed)
    messages: list[Message] = []
    moment = START
    next_id = 1

    def add(text: str, author: int, reply_to: int | None = None) -> int:
        nonlocal next_id, moment
        moment += timedelta(minutes=rng.randint(1, 9))
        messages.append(
            Message(
                stream="bench",
                id=next_id,
                author=f"user-{author}",
                sent_at=moment,
                text=text,
                reply_to=reply_to,
            )
        )
        next_id += 1
        return next_id - 1

    while len(messages) < count:
        kind = rng.random()
        if kind < 0.45:  # a question, an answer, follow-ups
            topic = rng.randrange(len(QUESTIONS))
            asked = add(QUESTIONS[topic], rng.randrange(50))
            answered = add(ANSWERS[topic], rng.randrange(50), asked)
            for _ in range(rng.randint(0, 6)):
                answered = add(
                    rng.choice([*ANSWERS, "That worked, thank you so much!"]),
                    rng.randrange(50),
                    answered,
                )
        elif kind < 0.75:
            add(rng.choice(CHATTER), rng.randrange(50))
        else:
            first = add(rng.choice(SMALL_TALK), rng.randrange(50))
            for _ in range(rng.randint(0, 3)):
                add(rng.choice(SMALL_TALK), rng.randrange(50), first)
        moment += timedelta(minutes=rng.choice([5, 45, 120]))
    return messages[:count]


CONVERSATION = re.compile(r'<conversation id="(T\d+)">(.*?)</conversation>', re.DOTALL)


def answer(request: GenerateRequest) -> str:
    if request.stage == "classify":
        verdicts = []
        for thread_id, body in CONVERSATION.findall(request.prompt):
            useful = any(q.split()[2] in body for q in QUESTIONS)
            verdicts.append(
                {
                    "thread": thread_id,
                    "category": "question" if useful else "no-doc-value",
                    "doc_value": useful,
                    "summary": "s",
                    "reason": "r",
                    "queries": ["cache setup"],
                    "keywords": [],
                    "confidence": 0.8,
                }
            )
        return json.dumps({"verdicts": verdicts})
    return json.dumps(
        {
            "change": True,
            "title": "t",
            "summary": "s",
            "reasoning": "r",
            "confidence": 0.8,
            "evidence": [1],
            "edits": [
                {
                    "path": "docs/guide.md",
                    "search": "The cache is local.",
                    "replace": "The cache is local, under ~/.cache.",
                }
            ],
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1000)
    args = parser.parse_args()
    config = parse_config({"docs": {"root": "docs"}})
    messages = synthetic_chat(args.messages)
    threads = group_threads(
        messages,
        gap_minutes=config.threads.gap_minutes,
        context_messages=config.threads.context_messages,
    )
    llm = FunctionLLM(answer)
    result = classify(threads, config=config, llm=llm)
    classify_requests = list(llm.requests)
    policy = PathPolicy.from_config(config.docs)
    by_key: dict[str, Thread] = {t.key: t for t in threads}

    def search(query: str, k: int) -> list[Hit]:
        return [Hit("docs/guide.md", "Guide > Cache", "cache", 1.0, "The cache is local.")]

    proposed = failed = 0
    for verdict in result.verdicts.values():
        if not verdict.doc_value:
            continue
        try:
            outcome = propose(
                by_key[verdict.thread_key],
                verdict,
                config=config,
                llm=llm,
                search=search,
                read={"docs/guide.md": DOC}.get,
                policy=policy,
            )
            proposed += not isinstance(outcome, NoChange)
        except ProposalFailed:
            failed += 1
    propose_requests = llm.requests[len(classify_requests) :]

    def tokens(requests: list[GenerateRequest]) -> int:
        return sum(estimate_tokens(r.system) + estimate_tokens(r.prompt) for r in requests)

    per = 1000 / len(messages)
    rows = [
        ("messages", len(messages), ""),
        ("threads", len(threads), ""),
        ("dropped by the prefilter", len(result.dropped), ""),
        ("classify calls", len(classify_requests), f"{len(classify_requests) * per:.1f}"),
        (
            "classify prompt tokens",
            tokens(classify_requests),
            f"{tokens(classify_requests) * per:,.0f}",
        ),
        ("threads with doc value", sum(v.doc_value for v in result.verdicts.values()), ""),
        ("propose calls", len(propose_requests), f"{len(propose_requests) * per:.1f}"),
        (
            "propose prompt tokens",
            tokens(propose_requests),
            f"{tokens(propose_requests) * per:,.0f}",
        ),
        ("proposals", proposed, ""),
    ]
    print(f"{'figure':<28}{'total':>12}{'per 1,000 msgs':>18}")
    for name, total, normalised in rows:
        print(f"{name:<28}{total:>12}{normalised:>18}")
    target = len(classify_requests) * per <= 10
    print(
        f"\nclassification target (<= 10 calls per 1,000 messages): {'met' if target else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
