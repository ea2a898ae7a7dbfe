"""A verdict and its retrieved docs to a grounded proposal, with the edit-reflection loop."""

from __future__ import annotations

import hashlib
import logging
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import ValidationError

from .checks import EditChecks, Review
from .config import Config
from .edits import EditError, PathPolicy, apply_edits, unified_diff
from .grounding import attribute_lines
from .handles import member_handles
from .models import (
    Demand,
    Edit,
    Evidence,
    Hit,
    LineNote,
    Message,
    Proposal,
    Thread,
    Verdict,
    strongest,
)
from .ports import LLM, GenerateRequest, one_line
from .proposecall import BatchAnswer, ProposePrompt, ProposeReply, message_key, propose_prompt
from .safety import clip, sanitize_for_publishing
from .structured import generate_model, parse_reply

log = logging.getLogger(__name__)

Searcher = Callable[[str, int], list[Hit]]
QUOTE_CHARS = 280


@dataclass(frozen=True)
class NoChange:
    """The model decided the docs need no change, and why."""

    reason: str


@dataclass(frozen=True)
class Refused:
    """The model's edits stayed wrong after the checks' feedback: the reason, and the kind
    of check that refused (as `checks` names them)."""

    reason: str
    kind: str


class ProposalFailed(Exception):
    """No applicable proposal came out of the allowed attempts."""


class AnswerUnusable(Exception):
    """A batch job's answer that would need the model again to become a proposal."""


def search_queries(verdict: Verdict) -> list[str]:
    """What a verdict is searched by: its queries (or summary) and its keywords."""
    queries = [*verdict.queries] or [verdict.summary]
    if verdict.keywords:
        queries.append(" ".join(verdict.keywords))
    return queries


def retrieve(verdict: Verdict, *, search: Searcher, k: int) -> list[Hit]:
    """Best sections for the verdict's queries, fused by reciprocal rank across queries."""
    return fuse([search(query, k) for query in search_queries(verdict)], k=k)


def fuse(rankings: Sequence[Sequence[Hit]], *, k: int) -> list[Hit]:
    """Several result lists as one, by reciprocal rank (each hit scores 1 / (60 + rank))."""
    scores: dict[tuple[str, str, str], float] = {}
    first: dict[tuple[str, str, str], Hit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, 1):
            key = (hit.path, hit.anchor, hit.text[:80])
            scores[key] = scores.get(key, 0.0) + 1.0 / (60 + rank)
            first.setdefault(key, hit)
    ordered = sorted(scores, key=lambda key: scores[key], reverse=True)[:k]
    return [replace(first[key], score=scores[key]) for key in ordered]


def fingerprint(path: str, section: str) -> str:
    """Same file and section, same fingerprint: a later run finds the same branch and PR."""
    return hashlib.sha256(f"{path}#{section}".encode()).hexdigest()[:16]


_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")


def section_of(text: str, search: str) -> str:
    """The heading above where `search` starts in `text` (empty for the top of the file)."""
    if not search.strip():
        return ""
    first = next(line for line in search.splitlines() if line.strip()).strip()
    heading = ""
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line)):
            heading = match.group(2).strip().lower()
        if line.strip() == first or first in line:
            return heading
    return heading


def propose(
    thread: Thread,
    verdict: Verdict,
    *,
    config: Config,
    llm: LLM,
    search: Searcher,
    read: Callable[[str], str | None],
    policy: PathPolicy,
    repo_root: Path | None = None,
    checks: EditChecks | None = None,
) -> Proposal | NoChange | Refused:
    """One conversation's proposal: its own retrieval, then `propose_for`."""
    return propose_for(
        [(thread, verdict)],
        hits=retrieve(verdict, search=search, k=config.limits.search_k),
        config=config,
        llm=llm,
        read=read,
        policy=policy,
        repo_root=repo_root,
        checks=checks,
    )


def propose_for(
    conversations: Sequence[tuple[Thread, Verdict]],
    *,
    hits: Sequence[Hit],
    config: Config,
    llm: LLM,
    read: Callable[[str], str | None],
    policy: PathPolicy,
    repo_root: Path | None = None,
    demand: Demand | None = None,
    checks: EditChecks | None = None,
    answer: BatchAnswer | None = None,
) -> Proposal | NoChange | Refused:
    """One proposal from the conversations about one docs section (oldest first): ask for
    edits, apply them to a scratch copy, and feed failures back at most twice. With `checks`,
    every claim of the edits must rest on the messages they cite or on the docs, and the docs
    must stay sound (`checks.EditChecks`).

    With `answer` (a batch job's reply to `propose_prompt(...).request()`, backfill.py) that
    reply, its evidence renumbered to this prompt, is validated exactly as the model's would
    be; one that would need the model again (it does not parse, its edits no longer apply, the
    checks' findings would go back) is dropped with one log line, and the conversations are
    proposed the normal way."""
    prompt = propose_prompt(conversations, hits=hits, config=config, read=read,
                            repo_root=repo_root)  # fmt: skip
    if prompt is None:
        return NoChange("no documentation file matched the conversation")
    if answer is not None:
        try:
            first = _batch_reply(answer, prompt.by_index)
            return _made(prompt, conversations, llm=llm, read=read, policy=policy,
                         demand=demand, checks=checks, first=first)  # fmt: skip
        except AnswerUnusable as why:
            log.info("the batch answer for %s was not used (%s); proposing it the normal way",
                     conversations[0][0].key, one_line(str(why), limit=160))  # fmt: skip
    return _made(prompt, conversations, llm=llm, read=read, policy=policy, demand=demand,
                 checks=checks)  # fmt: skip


def _made(
    prompt: ProposePrompt,
    conversations: Sequence[tuple[Thread, Verdict]],
    *,
    llm: LLM,
    read: Callable[[str], str | None],
    policy: PathPolicy,
    demand: Demand | None,
    checks: EditChecks | None,
    first: ProposeReply | None = None,
) -> Proposal | NoChange | Refused:
    """`propose_for` past its prompt: the edit loop with the checks, then the proposal."""
    config, by_index = prompt.config, prompt.by_index
    texts = {file.path: file.text for file in prompt.files}
    attempts = config.limits.max_edit_retries + 1

    def review(edited: Edited) -> Review:
        assert checks is not None
        before = {path: texts[path] for path in edited.changed if path in texts}
        context = [m.text for thread, _ in prompt.shown for m in thread.context]
        evidence = [*_cited(edited, by_index), *context]
        return checks.review(before, edited.changed, evidence=evidence)

    try:
        edited = edit_loop(
            llm,
            prompt.request,
            texts=texts,
            apply=lambda current, edits: apply_edits(current, edits, allowed=policy),
            attempts=attempts,
            read=read,
            review=review if checks is not None else None,
            first=first,
        )
    except ProposalFailed as failed:
        raise ProposalFailed(f"edits did not apply after {attempts} attempts: {failed}") from None
    if isinstance(edited, NoChange):
        return NoChange(edited.reason or "the model proposed no change")
    if isinstance(edited, Refused):
        return edited
    thread, verdict = conversations[0]
    proposal = _proposal(
        thread, verdict, edited, texts, prompt.hits, config, by_index=by_index, demand=demand
    )
    return replace(
        proposal,
        support=_support(proposal, texts, edited, by_index, checks),
        answered=strongest(thread.answered for thread, _ in conversations),
    )


def _cited(edited: Edited, by_index: Mapping[int, Message]) -> list[str]:
    """The texts of the messages the model cites; all it was shown when it cites none. (The
    grounding check also accepts what the conversation's earlier, context messages said.)"""
    cited = [by_index[i].text for i in dict.fromkeys(edited.reply.evidence) if i in by_index]
    return cited or [message.text for message in by_index.values()]


def _support(
    proposal: Proposal,
    before: Mapping[str, str],
    edited: Edited,
    by_index: Mapping[int, Message],
    checks: EditChecks | None,
) -> tuple[LineNote, ...]:
    """Which of the proposal's evidence items each added line rests on."""
    cited = [by_index[i] for i in dict.fromkeys(edited.reply.evidence) if i in by_index]
    if not cited or not proposal.evidence:
        return ()
    position = {item.message_id: n for n, item in enumerate(proposal.evidence)}
    lines = attribute_lines(
        {path: before[path] for path in edited.changed if path in before},
        edited.changed,
        evidence=[message.text for message in cited],
        docs=checks.docs_texts if checks is not None else (),
    )
    return tuple(
        LineNote(
            line.path,
            line.line,
            tuple(position[cited[n].id] for n in line.messages if cited[n].id in position),
        )
        for line in lines
        if line.messages
    )


@dataclass(frozen=True)
class Edited:
    """What the edit loop produced: the model's reply, its edits, and the files they changed."""

    reply: ProposeReply
    edits: tuple[Edit, ...]
    changed: dict[str, str]


def edit_loop(
    llm: LLM,
    request: Callable[[str], GenerateRequest],
    *,
    texts: dict[str, str],
    apply: Callable[[Mapping[str, str], tuple[Edit, ...]], dict[str, str]],
    attempts: int,
    read: Callable[[str], str | None] | None = None,
    review: Callable[[Edited], Review] | None = None,
    first: ProposeReply | None = None,
) -> Edited | NoChange | Refused:
    """Ask for edits and apply them to `texts`; a failure goes back to the model as feedback.

    `request(feedback)` builds the call ("" the first time). With `read`, a page the prompt did
    not show still counts as existing, so an empty search cannot "create" it over the real one.
    With `review`, edits that apply are checked too: what it finds goes back to the model once,
    and what it still refuses after that is the answer. Raises ProposalFailed with the last
    feedback when no attempt applied. With `first` the first reply is that one (a batch
    job's, already paid for); where a second call would follow, AnswerUnusable is raised.
    """
    feedback = ""
    reviewed = False
    for attempt in range(1, attempts + 1):
        if first is None:
            reply, _ = generate_model(llm, request(feedback), ProposeReply)
        elif attempt == 1:
            reply = first
        else:
            raise AnswerUnusable(feedback)
        if not reply.change or not reply.edits:
            return NoChange(reply.reason.strip())
        edits = tuple(Edit(e.path.strip(), e.search, e.replace, e.reason) for e in reply.edits)
        if read is not None:
            for edit in edits:
                if edit.path not in texts and (current := read(edit.path)) is not None:
                    texts[edit.path] = current
        try:
            changed = apply(texts, edits)
        except EditError as error:
            feedback = str(error)
            log.info("edits did not apply (attempt %d of %d)", attempt, attempts)
            continue
        if not changed:
            feedback = "Your edits changed nothing: the replace text equals the search text."
            continue
        edited = Edited(reply, edits, changed)
        found = review(edited) if review is not None else Review()
        if found.feedback and not reviewed and attempt < attempts:
            reviewed = True
            feedback = found.feedback
            log.info("the checks sent the edits back (attempt %d of %d)", attempt, attempts)
            continue
        if found.refusal:
            return Refused(found.refusal, found.kind)
        return edited
    raise AnswerUnusable(feedback) if first is not None else ProposalFailed(feedback)


def _batch_reply(answer: BatchAnswer, by_index: Mapping[int, Message]) -> ProposeReply:
    """The batch answer parsed, the messages it cites renumbered as this prompt numbers them
    (a message this prompt does not show is no longer cited)."""
    try:
        reply = parse_reply(answer.generation.text, ProposeReply)
    except ValidationError as error:
        raise AnswerUnusable(f"it did not match the schema: {error.errors()[0]['msg']}") from None
    now = {message_key(message): number for number, message in by_index.items()}
    then = dict(enumerate(answer.numbered, 1))
    cited = [now[then[n]] for n in reply.evidence if then.get(n, "") in now]
    return reply.model_copy(update={"evidence": cited})


def _proposal(
    thread: Thread,
    verdict: Verdict,
    edited: Edited,
    before: dict[str, str],
    hits: Sequence[Hit],
    config: Config,
    *,
    by_index: Mapping[int, Message],
    demand: Demand | None,
) -> Proposal:
    reply, edits, after = edited.reply, edited.edits, edited.changed
    first = edits[0]
    section = section_of(before.get(first.path, ""), first.search)
    members = member_handles(by_index.values())
    evidence = tuple(
        Evidence(
            message_id=message.id,
            author=message.author,
            sent_at=message.sent_at,
            quote=quote_of(message.text, members=members) if config.publish.evidence_quotes else "",
            permalink=message.permalink,
        )
        for index in dict.fromkeys(reply.evidence)
        if (message := by_index.get(index)) is not None
    )
    old = {path: before[path] for path in after if path in before}  # missing: a new page
    return Proposal(
        fingerprint=fingerprint(first.path, section),
        stream=thread.stream,
        thread_key=thread.key,
        category=verdict.category,
        # One line: a title is also a markdown heading and a commit subject.
        title=clip(
            sanitize_for_publishing(
                " ".join((reply.title or verdict.summary).split()), members=members
            ),
            120,
        ),
        summary=sanitize_for_publishing(reply.summary.strip() or verdict.summary, members=members),
        reasoning=sanitize_for_publishing(
            reply.reasoning.strip() or verdict.reason, members=members
        ),
        confidence=min(max(reply.confidence, 0.0), 1.0),
        edits=edits,
        diff=unified_diff(old, after),
        files=tuple(sorted(after.items())),
        evidence=evidence,
        sources=tuple(hits),
        demand=demand,
    )


def quote_of(text: str, *, members: Mapping[str, str] | None = None) -> str:
    """A message as its evidence quote: redacted and neutralised whole, then clipped on a word
    boundary (clipping first could cut a token so that no detector sees it). `members` as for
    `sanitize_for_publishing`."""
    return clip(sanitize_for_publishing(" ".join(text.split()), members=members), QUOTE_CHARS)


def rebase(proposal: Proposal, *, read: Callable[[str], str | None]) -> Proposal:
    """The proposal's edits applied again to the docs as `read` sees them now.

    A proposal is computed against the docs as they were read; publishing its stored file texts
    would revert whatever maintainers changed meanwhile (on the base branch, or while it waited
    under the PR limits). The paths were authorised when the proposal was made; only the text
    may differ. Raises EditError when the edits no longer apply.
    """
    texts = {e.path: text for e in proposal.edits if (text := read(e.path)) is not None}
    created = [posixpath.dirname(e.path) for e in proposal.edits if not e.search.strip()]
    changed = apply_edits(
        texts, proposal.edits, allowed=lambda _path: True, new_file_dirs=created
    )
    old = {path: texts[path] for path in changed if path in texts}
    return replace(proposal, files=tuple(sorted(changed.items())), diff=unified_diff(old, changed))
