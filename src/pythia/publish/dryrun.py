"""The dry-run publisher: each proposal as files in a folder, for a preview without GitHub."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jinja2

from .. import prompts
from ..edits import EditError
from ..models import Proposal
from ..ports import Published, PublishError, one_line
from ..propose import rebase
from ..state import TERMINAL, Ledger
from .render import render_evidence_comment, render_pr_body


class DryRunPublisher:
    """Writes each proposal to `<out_dir>/<fingerprint>/` (proposal.md, change.patch) instead
    of touching GitHub.

    A dry run previews every proposal that passes the pipeline's gates (publish.min_confidence
    and the safety rules included); the PR limits (publish.max_open_prs, max_prs_per_run) only
    pace real pull requests, so they do not hide proposals from the preview.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        templates: jinja2.Environment | None = None,
        ledger: Ledger | None = None,
        evidence_quotes: bool = True,
        read: Callable[[str], str | None] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.templates = templates or prompts.environment()
        self.ledger = ledger
        self.evidence_quotes = evidence_quotes
        self.read = read  # the docs as a real run would find them; None keeps the stored texts
        self._threads: dict[str, list[str]] = {}  # fingerprint -> threads written this run

    def publish(self, proposal: Proposal) -> Published:
        entry = self.ledger.get(proposal.fingerprint) if self.ledger else None
        if entry is not None and entry.status in TERMINAL:
            return Published(action="skipped", reason=f"maintainers already {entry.status} it")
        folder = self.out_dir / proposal.fingerprint
        threads = self._threads.get(proposal.fingerprint)
        if threads is not None or not proposal.edits:
            # A later conversation on this run's proposal, or on a PR already open.
            return self._add_evidence(proposal, folder, threads if threads is not None else [])
        if self.read is not None:
            try:
                proposal = rebase(proposal, read=self.read)
            except EditError as error:
                raise PublishError(
                    f"the docs changed since '{proposal.title}' was proposed and its edits no "
                    f"longer apply ({one_line(error, limit=200)})"
                ) from None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "evidence.md").unlink(missing_ok=True)  # left by an earlier dry run
        body = render_pr_body(proposal, templates=self.templates, quotes=self.evidence_quotes)
        (folder / "proposal.md").write_text(f"# {proposal.title}\n\n{body}", encoding="utf-8")
        (folder / "change.patch").write_text(proposal.diff, encoding="utf-8")
        self._threads[proposal.fingerprint] = [proposal.thread_key]
        return Published(action="previewed", url=folder.resolve().as_uri(), reason="dry run")

    def _add_evidence(self, proposal: Proposal, folder: Path, threads: list[str]) -> Published:
        """A later conversation on a proposal of this run: what a real run adds to its PR as
        an evidence comment goes to `evidence.md`, and the proposal's own files stay."""
        url = folder.resolve().as_uri()
        if proposal.thread_key in threads:
            return Published(action="skipped", url=url, reason="already in the PR")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "evidence.md"
        previous = path.read_text(encoding="utf-8") if path.exists() else None
        body = render_evidence_comment(
            proposal, previous_body=previous, templates=self.templates, quotes=self.evidence_quotes
        )
        path.write_text(body, encoding="utf-8")
        threads.append(proposal.thread_key)
        return Published(action="updated", url=(folder / "evidence.md").resolve().as_uri())
