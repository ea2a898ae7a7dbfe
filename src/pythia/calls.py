"""What every paid model call goes through, whichever provider answers it: the run's caps and
time budget, the rate limit, retries with backoff and Retry-After, and usage metering.

A provider adapter says only how to send one call and how to read its own errors (an
`ErrorReading`); the policy itself lives here once, so Gemini and an OpenAI-compatible server
fail, wait and give up in the same way.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Protocol, TypeVar

from .models import Usage
from .usage import UNCAPPED_STAGES, BudgetExhausted, RateLimiter, UsageMeter, estimate_tokens

log = logging.getLogger(__name__)

T = TypeVar("T")

# Transient answers worth another try; every other 4xx means the request itself is wrong.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; `sleep` and `random` are injectable for tests."""

    attempts: int = 6
    initial_delay: float = 2.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.25
    max_retry_after: float = 300.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    random: Callable[[], float] = field(default=random.random, compare=False)

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1 for the first retry)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (retry - 1))
        return base * (1 + self.jitter * self.random())


@dataclass(frozen=True)
class Retryable:
    """A failure worth another try: `reason` in one line (`429 RESOURCE_EXHAUSTED: ...`), the
    wait the provider asked for, and whether there was no answer at all (a timeout)."""

    reason: str
    retry_after: float | None = None
    no_answer: bool = False


class ErrorReading(Protocol):
    """How one provider's failures read. `retryable` returns a `Retryable` for a transient
    failure, raises the provider's own rejection for an answer retrying cannot fix, and
    returns None for an exception it does not know (which then propagates unchanged)."""

    name: str  # as the messages say it: "Gemini", "The OpenAI-compatible server"

    def retryable(self, error: Exception, *, model: str) -> Retryable | None: ...

    def unavailable(self, message: str) -> Exception:
        """The provider's LLMUnavailable for `message`."""
        ...


def parse_retry_after(value: str, *, now: datetime | None = None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP-date (RFC 9110, section 10.2.3)."""
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def call_with_retries(
    call: Callable[[], T],
    *,
    policy: RetryPolicy,
    model: str,
    errors: ErrorReading,
    wait_allowed: Callable[[float], bool] = lambda _seconds: True,
) -> T:
    """Run `call`, retrying what `errors` calls transient; anything else fails at once.

    A Retry-After is waited out exactly, unless it is longer than `policy.max_retry_after` (a
    daily quota will not come back within one run) or `wait_allowed` refuses the wait (it
    would end past the run's time budget).
    """
    name = errors.name
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except Exception as error:
            retry = errors.retryable(error, model=model)
            if retry is None:
                raise
        if retry.retry_after is not None and retry.retry_after > policy.max_retry_after:
            raise errors.unavailable(
                f"{name} asked to wait {retry.retry_after:.0f} s before calling {model} again "
                f"({retry.reason}); the quota is probably used up, so try a later run."
            ) from None
        if attempt == policy.attempts:
            if retry.no_answer:
                raise errors.unavailable(
                    f"{name} did not answer for {model} after {policy.attempts} attempts "
                    f"(last: {retry.reason}); check the network and try again later."
                ) from None
            raise errors.unavailable(
                f"{name} kept failing for {model} after {policy.attempts} attempts "
                f"(last: {retry.reason}); try again later or lower models.requests_per_minute."
            ) from None
        delay = retry.retry_after if retry.retry_after is not None else policy.backoff(attempt)
        if not wait_allowed(delay):
            raise errors.unavailable(
                f"{name} failed for {model} ({retry.reason}) and waiting {delay:.0f} s more "
                "would pass the run's time budget (limits.time_budget_minutes); the work "
                "waits for the next run."
            ) from None
        log.warning(
            "%s %s for %s; retrying in %.1f s (attempt %d of %d)",
            name,
            retry.reason,
            model,
            delay,
            attempt + 1,
            policy.attempts,
        )
        policy.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


@dataclass
class CallGate:
    """The one door a provider's paid calls go through.

    Before a call: the run's caps (`UsageMeter.check`; embedding is not capped) and its time
    budget, then the rate limit. The call itself is retried by `call_with_retries`, never
    waiting past the deadline. After it: the usage is recorded, even for an answer the
    adapter will then find unusable (it was billed all the same).
    """

    meter: UsageMeter
    errors: ErrorReading
    limiter: RateLimiter | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    deadline: float | None = None  # on `clock`; None: no time budget
    clock: Callable[[], float] = time.monotonic

    def send(
        self,
        call: Callable[[], T],
        *,
        stage: str,
        model: str,
        estimated_tokens: int,
        usage: Callable[[T], Usage],
    ) -> T:
        """Check, wait, call with retries and record; returns the provider's response."""
        if stage not in UNCAPPED_STAGES:
            if self.deadline is not None and self.clock() >= self.deadline:
                raise BudgetExhausted(
                    "The run's time budget (limits.time_budget_minutes) is spent, so it started "
                    "no new work and saved what it had done."
                )
            self.meter.check(estimated_tokens)  # a big prompt must not overshoot the cap
        if self.limiter is not None:
            self.limiter.acquire(estimated_tokens)
        response = call_with_retries(
            call,
            policy=self.retry,
            model=model,
            errors=self.errors,
            wait_allowed=self._wait_allowed,
        )
        self.meter.record(stage, model, usage(response))
        return response

    def _wait_allowed(self, seconds: float) -> bool:
        return self.deadline is None or self.clock() + seconds < self.deadline


# --- embedding helpers both providers share ----------------------------------------------------


def plan_batches(
    texts: Sequence[str], *, max_texts: int, max_tokens: int
) -> Iterator[tuple[int, int]]:
    """(start, stop) slices of at most `max_texts` texts and about `max_tokens` tokens each.

    A single text over the token budget still goes alone: the APIs truncate long inputs
    rather than refusing them.
    """
    start = 0
    while start < len(texts):
        stop, tokens = start, 0
        while stop < len(texts) and stop - start < max_texts:
            cost = estimate_tokens(texts[stop])
            if stop > start and tokens + cost > max_tokens:
                break
            tokens += cost
            stop += 1
        yield start, stop
        start = stop


class ZeroVector(ValueError):
    """A provider returned an embedding whose values are all zero."""


def normalise(values: Sequence[float]) -> list[float]:
    """Scale a vector to unit length (cosine distance over truncated, Matryoshka, vectors only
    means something once they are re-normalised); ZeroVector for an all-zero one."""
    norm = math.sqrt(math.fsum(value * value for value in values))
    if norm == 0:
        raise ZeroVector("all-zero embedding")
    return [value / norm for value in values]
