"""The checks an edit must pass before it is proposed: every claim grounded in what was said or
what the docs say, the docs still sound, and the repository's own docs build, if it has one.

Deterministic and offline (the build aside), so they run in dry runs too. What they find goes
back to the model once; what is still wrong after that refuses the proposal with one line.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from .checkcommand import CommandResult
from .docscheck import check_docs, docs_feedback
from .grounding import find_ungrounded, grounding_feedback, refusal_reason

# Refusal kinds, as the run report and the dashboard count them.
SAFETY = "safety"  # safety.check_proposal: secrets, links, markup, size
UNGROUNDED = "ungrounded"
BROKEN_DOCS = "broken docs"
FAILED_BUILD = "failed build"


@dataclass(frozen=True)
class Review:
    """What the checks found: what to tell the model, and why to refuse if it stays so."""

    feedback: str = ""
    refusal: str = ""  # empty: publishable (the feedback, if any, is advice only)
    kind: str = ""


@dataclass(frozen=True)
class EditChecks:
    """What the checks need of the repository: every docs page's text (claims found there are
    grounded), every file's path (links to them resolve), a reader for any file, and the
    repository's build run on edited files, when it has one."""

    docs_texts: Sequence[str]
    paths: Collection[str]
    read: Callable[[str], str | None]
    build: Callable[[Mapping[str, str]], CommandResult] | None = None

    def review(
        self, before: Mapping[str, str], after: Mapping[str, str], *, evidence: Sequence[str]
    ) -> Review:
        """The first check that finds something: grounding, then the docs, then the build."""
        found = find_ungrounded(before, after, evidence=evidence, docs=self.docs_texts)
        if found:
            hard = [item for item in found if not item.soft]
            return Review(
                feedback=grounding_feedback(found),
                refusal=refusal_reason(hard) if hard else "",
                kind=UNGROUNDED,
            )
        problems = check_docs(before, after, read=self.read, paths=self.paths)
        if problems:
            first = problems[0].message.rstrip(".")
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return Review(
                feedback=docs_feedback(problems),
                refusal=f"The edit breaks the docs: {first}{more}.",
                kind=BROKEN_DOCS,
            )
        if self.build is not None:
            result = self.build(after)
            if not result.ok:
                last = result.tail.strip().splitlines()[-1:] or ["no output"]
                return Review(
                    feedback=result.feedback(),
                    refusal=f"The docs check `{result.command}` failed: {last[0][:200]}",
                    kind=FAILED_BUILD,
                )
        return Review()
