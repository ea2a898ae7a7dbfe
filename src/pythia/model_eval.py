"""Measuring a model on labelled conversations: classification and proposal as a run does
them, scored as doc-worthy precision and recall, page accuracy, edit apply rate, facts kept
and invented, safety refusals and cost per conversation.

The set is JSON Lines, one conversation a line:

    {"id": "cache-dir",
     "messages": [{"author": "ana", "text": "how do I move uv's cache?"}, ...],
     "doc_value": true,
     "pages": ["concepts/cache.md"],
     "must_contain": ["UV_CACHE_DIR"],
     "must_not_invent": ["--cache-path"]}

`pages` are docs-relative paths any of which the edit may rightly target (empty when
`doc_value` is false); `must_contain` are facts (plain substrings, matched without regard to
case) the added text must carry; `must_not_invent` are things nobody said that it must not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .checks import EditChecks
from .classify import classify
from .config import Config
from .edits import PathPolicy
from .models import Message, Proposal, Thread
from .ports import LLM, LLMUnavailable, MalformedReply, one_line
from .propose import NoChange, ProposalFailed, Refused, Searcher, propose_for, retrieve
from .safety import check_proposal
from .usage import BudgetExhausted, UsageMeter

STREAM = "eval"
_START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


class EvalSetError(Exception):
    """The labelled set is missing or a line of it is not a labelled conversation."""


@dataclass(frozen=True)
class Case:
    """One labelled conversation."""

    id: str
    messages: tuple[tuple[str, str], ...]  # (author, text)
    doc_value: bool
    pages: tuple[str, ...] = ()
    must_contain: tuple[str, ...] = ()
    must_not_invent: tuple[str, ...] = ()

    def thread(self, number: int) -> Thread:
        """The conversation as a settled thread of its own, ids far apart from the others'."""
        first = number * 1000
        return Thread(
            stream=STREAM,
            messages=tuple(
                Message(
                    stream=STREAM,
                    id=first + offset,
                    author=author,
                    sent_at=_START + timedelta(days=number, minutes=3 * offset),
                    text=text,
                )
                for offset, (author, text) in enumerate(self.messages)
            ),
        )


def _strings(value: Any, *, where: str, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise EvalSetError(f"{where}: `{name}` must be a list of non-empty strings")
    return tuple(value)


def load_cases(path: Path) -> list[Case]:
    """Read a labelled set; EvalSetError names the line and what is wrong with it."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise EvalSetError(f"{path}: cannot be read ({error.strerror})") from None
    cases: list[Case] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            raise EvalSetError(f"{where}: not valid JSON") from None
        if not isinstance(data, dict):
            raise EvalSetError(f"{where}: each line must be a JSON object")
        case_id = str(data.get("id") or f"line-{number}")
        if case_id in seen:
            raise EvalSetError(f"{where}: the id '{case_id}' is used twice")
        seen.add(case_id)
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise EvalSetError(f"{where}: `messages` must be a non-empty list")
        rows = []
        for message in messages:
            if not isinstance(message, dict) or not str(message.get("text", "")).strip():
                raise EvalSetError(f"{where}: every message needs a `text` (and an `author`)")
            rows.append((str(message.get("author") or "someone"), str(message["text"])))
        doc_value = data.get("doc_value")
        if not isinstance(doc_value, bool):
            raise EvalSetError(f"{where}: `doc_value` must be true or false")
        pages = _strings(data.get("pages"), where=where, name="pages")
        if doc_value and not pages:
            raise EvalSetError(f"{where}: a doc-worthy conversation needs its expected `pages`")
        cases.append(
            Case(
                id=case_id,
                messages=tuple(rows),
                doc_value=doc_value,
                pages=pages,
                must_contain=_strings(data.get("must_contain"), where=where, name="must_contain"),
                must_not_invent=_strings(
                    data.get("must_not_invent"), where=where, name="must_not_invent"
                ),
            )
        )
    if not cases:
        raise EvalSetError(f"{path}: holds no conversations")
    return cases


@dataclass
class Outcome:
    """What the model did with one conversation."""

    case: Case
    judged_doc_value: bool = False
    outcome: str = "not proposed"  # proposed, no change, edits failed, refused, error, ...
    pages: tuple[str, ...] = ()  # docs-relative pages the proposal edited
    facts_found: int = 0
    invented: tuple[str, ...] = ()
    problem: str = ""


@dataclass
class Results:
    """Every conversation's outcome and what the model calls cost."""

    outcomes: list[Outcome] = field(default_factory=list)
    cost_usd: float = 0.0
    tokens: int = 0
    calls: int = 0
    stopped: str = ""

    def _count(self, test: Callable[[Outcome], bool]) -> int:
        return sum(1 for outcome in self.outcomes if test(outcome))

    @property
    def precision(self) -> float | None:
        judged = self._count(lambda o: o.judged_doc_value)
        if not judged:
            return None
        return self._count(lambda o: o.judged_doc_value and o.case.doc_value) / judged

    @property
    def recall(self) -> float | None:
        labelled = self._count(lambda o: o.case.doc_value)
        found = self._count(lambda o: o.judged_doc_value and o.case.doc_value)
        return found / labelled if labelled else None

    @property
    def proposals(self) -> list[Outcome]:
        """Outcomes where edits applied (published or refused by safety)."""
        return [o for o in self.outcomes if o.outcome in ("proposed", "refused")]

    @property
    def page_accuracy(self) -> float | None:
        """Of the applied proposals for doc-worthy conversations, the share that edited one of
        the expected pages."""
        scored = [o for o in self.proposals if o.case.doc_value]
        if not scored:
            return None
        return sum(1 for o in scored if set(o.pages) & set(o.case.pages)) / len(scored)

    @property
    def apply_rate(self) -> float | None:
        """Of the proposal calls that asked for a change, the share whose edits applied."""
        tried = self._count(lambda o: o.outcome in ("proposed", "refused", "edits failed"))
        return len(self.proposals) / tried if tried else None

    @property
    def facts_kept(self) -> float | None:
        wanted = sum(len(o.case.must_contain) for o in self.proposals)
        return sum(o.facts_found for o in self.proposals) / wanted if wanted else None

    @property
    def invented(self) -> int:
        return sum(len(o.invented) for o in self.proposals)

    @property
    def refusals(self) -> int:
        return self._count(lambda o: o.outcome == "refused")

    @property
    def cost_per_conversation(self) -> float:
        return self.cost_usd / len(self.outcomes) if self.outcomes else 0.0


def added_text(before: str, after: str) -> str:
    """The lines `after` has that `before` had not (a cheap diff, enough to look for facts)."""
    old = set(before.splitlines())
    return "\n".join(line for line in after.splitlines() if line not in old)


def evaluate(
    cases: Sequence[Case],
    *,
    config: Config,
    llm: LLM,
    search: Searcher,
    read: Callable[[str], str | None],
    meter: UsageMeter,
    docs_prefix: str = "",
    repo_root: Path | None = None,
    docs_domains: Iterable[str] = (),
    checks: EditChecks | None = None,
) -> Results:
    """Classify every conversation in batches, propose for those judged doc-worthy (each on
    its own, as a first run would), and score each against its labels. With `checks`, the
    grounding and docs checks run as in a real run, and what they refuse counts as refused."""
    threads = {case.id: case.thread(number) for number, case in enumerate(cases, 1)}
    by_key = {threads[case.id].key: case for case in cases}
    results = Results(outcomes=[Outcome(case) for case in cases])
    outcomes = {o.case.id: o for o in results.outcomes}
    classification = classify(list(threads.values()), config=config, llm=llm, repo_root=repo_root)
    if classification.stopped:
        results.stopped = classification.stopped
    for key, reason in classification.failed.items():
        outcomes[by_key[key].id].outcome, outcomes[by_key[key].id].problem = "error", reason
    policy = PathPolicy.from_config(config.docs)
    for key, verdict in classification.verdicts.items():
        outcome = outcomes[by_key[key].id]
        outcome.judged_doc_value = verdict.doc_value
        if not verdict.doc_value or results.stopped:
            continue
        try:
            result = propose_for(
                [(threads[outcome.case.id], verdict)],
                hits=retrieve(verdict, search=search, k=config.limits.search_k),
                config=config,
                llm=llm,
                read=read,
                policy=policy,
                repo_root=repo_root,
                checks=checks,
            )
        except (LLMUnavailable, BudgetExhausted) as error:
            results.stopped = one_line(error)
            continue
        except ProposalFailed as error:
            outcome.outcome, outcome.problem = "edits failed", one_line(error)
            continue
        except MalformedReply as error:
            outcome.outcome, outcome.problem = "error", one_line(error)
            continue
        if isinstance(result, NoChange):
            outcome.outcome, outcome.problem = "no change", result.reason
            continue
        if isinstance(result, Refused):
            outcome.outcome, outcome.problem = "refused", f"{result.kind}: {result.reason}"
            continue
        _score_proposal(outcome, result, read=read, config=config, docs_prefix=docs_prefix,
                        docs_domains=set(docs_domains))  # fmt: skip
    totals = meter.totals()
    results.cost_usd = sum(stage.cost_usd for stage in totals.values())
    results.tokens = meter.tokens
    results.calls = meter.llm_calls
    return results


def _score_proposal(
    outcome: Outcome,
    proposal: Proposal,
    *,
    read: Callable[[str], str | None],
    config: Config,
    docs_prefix: str,
    docs_domains: set[str],
) -> None:
    before = {path: read(path) or "" for path, _ in proposal.files}
    after = dict(proposal.files)
    outcome.pages = tuple(sorted(path.removeprefix(docs_prefix) for path in after))
    problems = check_proposal(
        before=before,
        after=after,
        docs_domains=docs_domains,
        allowed_domains=config.docs.allowed_link_domains,
        max_changed_lines=config.limits.max_changed_lines,
        max_changed_chars=config.limits.max_changed_chars,
    )
    outcome.outcome = "refused" if problems else "proposed"
    outcome.problem = "; ".join(problems)
    new = " ".join(added_text(before[path], after[path]) for path in after).lower()
    case = outcome.case
    outcome.facts_found = sum(1 for fact in case.must_contain if fact.lower() in new)
    outcome.invented = tuple(fact for fact in case.must_not_invent if fact.lower() in new)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def render(results: Results, *, model: str) -> str:
    """The figures as a table, then each conversation that went wrong, one line each."""
    labelled = sum(1 for o in results.outcomes if o.case.doc_value)
    rows = [
        ("conversations", f"{len(results.outcomes)} ({labelled} doc-worthy)"),
        ("doc-worthy precision", _percent(results.precision)),
        ("doc-worthy recall", _percent(results.recall)),
        ("page accuracy", _percent(results.page_accuracy)),
        ("edit apply rate", _percent(results.apply_rate)),
        ("facts kept", _percent(results.facts_kept)),
        ("facts invented", str(results.invented)),
        ("safety refusals", str(results.refusals)),
        ("LLM calls", str(results.calls)),
        ("cost per conversation", f"${results.cost_per_conversation:.4f}"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"models: {model}", *(f"{name:<{width}}  {value}" for name, value in rows)]
    if results.stopped:
        lines.append(f"stopped early: {results.stopped}")
    wrong = [o for o in results.outcomes if _went_wrong(o)]
    if wrong:
        lines.append("")
        lines.append("what went wrong:")
        for o in wrong:
            lines.append(f"  {o.case.id}: {_what_went_wrong(o)}")
    return "\n".join(lines)


def _went_wrong(o: Outcome) -> bool:
    return bool(_what_went_wrong(o))


def _what_went_wrong(o: Outcome) -> str:
    case = o.case
    if o.outcome == "error":
        return f"error: {o.problem}"
    if o.judged_doc_value != case.doc_value:
        if o.judged_doc_value:
            return "judged doc-worthy, labelled not"
        return "missed: labelled doc-worthy"
    if o.outcome == "no change" and case.doc_value:
        return f"no change proposed: {o.problem}"
    if o.outcome == "edits failed":
        return f"edits did not apply: {o.problem}"
    if o.outcome == "refused":
        return f"refused by safety: {o.problem}"
    if o.outcome == "proposed" and case.doc_value and not set(o.pages) & set(case.pages):
        return f"edited {', '.join(o.pages)}, expected {' or '.join(case.pages)}"
    if o.outcome == "proposed" and o.invented:
        return f"invented {', '.join(o.invented)}"
    if o.outcome == "proposed" and o.facts_found < len(case.must_contain):
        return f"kept {o.facts_found} of {len(case.must_contain)} facts"
    return ""


def as_json(results: Results) -> dict[str, Any]:
    return {
        "conversations": len(results.outcomes),
        "precision": results.precision,
        "recall": results.recall,
        "page_accuracy": results.page_accuracy,
        "apply_rate": results.apply_rate,
        "facts_kept": results.facts_kept,
        "facts_invented": results.invented,
        "safety_refusals": results.refusals,
        "llm_calls": results.calls,
        "tokens": results.tokens,
        "cost_usd": round(results.cost_usd, 6),
        "cost_per_conversation_usd": round(results.cost_per_conversation, 6),
        "stopped": results.stopped,
        "outcomes": [
            {
                "id": o.case.id,
                "doc_value": o.case.doc_value,
                "judged_doc_value": o.judged_doc_value,
                "outcome": o.outcome,
                "pages": list(o.pages),
                "facts_found": o.facts_found,
                "invented": list(o.invented),
                "problem": o.problem,
            }
            for o in results.outcomes
        ],
    }
