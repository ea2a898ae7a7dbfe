"""What a run reports of each conversation and proposal: skipped with a reason, refused by a
check, published (opened, previewed, updated), or failed to publish; and the proposals that
waited for room under the PR limits, published first."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .models import Proposal, RunReport
from .ports import (
    Published,
    Publisher,
    PublishError,
    PublisherUnavailable,
    PublishingBlocked,
    one_line,
)
from .safety import sanitize_for_publishing
from .state import Ledger

log = logging.getLogger(__name__)


def publish_parked(ledger: Ledger, publisher: Publisher, report: RunReport) -> None:
    """Proposals that waited under the PR limits go first: they were judged already."""
    for proposal in ledger.parked():
        report.publish_attempts += 1
        try:
            published = publisher.publish(proposal)
        except PublishingBlocked as error:
            report.fatal = one_line(error)
            log.info("publishing blocked: %s", report.fatal)
            return
        except PublisherUnavailable as error:
            publish_failed(report, proposal.thread_key, error)
            report.stopped_early = one_line(error)
            return
        except PublishError as error:
            publish_failed(report, proposal.thread_key, error)
            report.failed.append((proposal.thread_key, sanitize_for_publishing(str(error))))
            continue
        note(report, proposal, published)


def note(report: RunReport, proposal: Proposal, published: Published) -> None:
    report.proposal_lines[published.url] = (
        f"[{proposal.category}, confidence {proposal.confidence:.2f}] {proposal.title} "
        f"({', '.join(proposal.paths)})"
    )
    if published.action == "opened":
        report.proposals_opened.append(published.url)
    elif published.action == "previewed":
        report.proposals_previewed.append(published.url)
    elif published.action == "updated":
        report.proposals_updated.append(published.url)
    else:
        skip(report, proposal.thread_key, published.reason or published.action)


def refuse(report: RunReport, keys: Sequence[str], kind: str, reason: str) -> None:
    """A proposal the checks refused: its conversations are skipped with the reason, and the
    run counts the refusal by kind, so maintainers see how often the model was caught."""
    report.refused[kind] = report.refused.get(kind, 0) + 1
    for key in keys:
        skip(report, key, f"refused ({kind}): {reason}")


def publish_failed(report: RunReport, thread_key: str, error: PublishError) -> None:
    """Remember why a proposal did not get through, by cause, for the run's annotations."""
    report.publish_failed.append((thread_key, sanitize_for_publishing(one_line(error.cause))))


def skip(report: RunReport, thread_key: str, reason: str) -> None:
    report.skipped.append((thread_key, sanitize_for_publishing(reason)))
