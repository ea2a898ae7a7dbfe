"""`/pythia revise`: regenerate a proposal's edits on its branch with a maintainer's instruction.

With the edit checks, what a revision adds must be in the instruction, already on the branch
(whose additions were checked when the proposal was made) or in the docs: a maintainer asking
for "shorter" must not get a new flag. Findings go back to the model once, as for a proposal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .checks import EditChecks, Review
from .config import Config
from .edits import PathPolicy, apply_edits, unified_diff
from .models import Proposal
from .ports import LLM, GenerateRequest, MalformedReply
from .propose import Edited, NoChange, ProposalFailed, Refused, edit_loop
from .proposecall import DocFile, ProposeReply
from .safety import check_proposal, sanitize_for_publishing
from .state import LedgerEntry
from .structured import request_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Revision:
    """The proposal's files as they are on its branch, and as they are on the base branch."""

    current: Mapping[str, str]
    base: Mapping[str, str]


def revise_proposal(
    entry: LedgerEntry,
    instruction: str,
    *,
    revision: Revision,
    config: Config,
    llm: LLM,
    docs_domains: set[str],
    repo_root: Path | None = None,
    checks: EditChecks | None = None,
) -> Proposal | str:
    """The revised proposal, or one sentence saying why there is none."""
    policy = PathPolicy.from_config(config.docs)
    files = [DocFile(path, text) for path, text in sorted(revision.current.items())]
    texts = dict(revision.current)

    def request(feedback: str) -> GenerateRequest:
        return request_for(
            config,
            stage="revise",
            model=config.models.propose,
            template="revise.md.j2",
            schema=ProposeReply,
            repo_root=repo_root,
            title=entry.title,
            category=entry.category,
            instruction=instruction,
            files=files,
            feedback=feedback,
        )

    def review(edited: Edited) -> Review:
        assert checks is not None
        before = {path: texts[path] for path in edited.changed if path in texts}
        return checks.review(before, edited.changed, evidence=[instruction])

    try:
        edited = edit_loop(
            llm,
            request,
            texts=texts,
            apply=lambda current, edits: apply_edits(
                current, edits, allowed=policy, new_file_dirs=()
            ),
            attempts=config.limits.max_edit_retries + 1,
            review=review if checks is not None else None,
        )
    except MalformedReply as error:
        return str(error)
    except ProposalFailed as failed:
        return f"the revised edits did not apply: {failed}"
    if isinstance(edited, NoChange):
        return edited.reason or "the model saw nothing to change"
    if isinstance(edited, Refused):
        return f"the revision was refused: {edited.reason}"
    after = {**texts, **edited.changed}
    problems = check_proposal(
        before=dict(revision.base),
        after=after,
        docs_domains=docs_domains,
        allowed_domains=config.docs.allowed_link_domains,
        max_changed_lines=config.limits.max_changed_lines,
        max_changed_chars=config.limits.max_changed_chars,
    )
    if problems:
        return "the revision was refused: " + "; ".join(problems)
    old = {path: revision.base[path] for path in after if path in revision.base}
    return Proposal(
        fingerprint=entry.fingerprint,
        stream="",
        thread_key=entry.thread_keys[0] if entry.thread_keys else "",
        category=entry.category,
        title=entry.title,
        summary=sanitize_for_publishing(edited.reply.summary.strip()),
        reasoning=sanitize_for_publishing(edited.reply.reasoning.strip()),
        confidence=entry.confidence,
        edits=edited.edits,
        diff=unified_diff(old, after),
        files=tuple(sorted(after.items())),
    )
