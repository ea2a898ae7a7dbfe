"""The shared call machinery (calls.py) every provider's adapter goes through."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from pythia.calls import CallGate, Retryable, RetryPolicy, call_with_retries, parse_retry_after
from pythia.models import Usage
from pythia.ports import LLMUnavailable
from pythia.usage import BudgetExhausted, RateLimiter, UsageMeter


class Flaky(Exception):
    def __init__(self, retry_after: float | None = None) -> None:
        self.retry_after = retry_after


class Refused(Exception):
    pass


class Unavailable(LLMUnavailable):
    pass


class Errors:
    """A provider whose `Flaky` is transient and whose `Refused` is final."""

    name = "Test provider"

    def retryable(self, error: Exception, *, model: str) -> Retryable | None:
        if isinstance(error, Refused):
            raise Unavailable(f"refused by {model}") from None
        if isinstance(error, Flaky):
            return Retryable("503: busy", retry_after=error.retry_after)
        return None

    def unavailable(self, message: str) -> Exception:
        return Unavailable(message)


@dataclass
class Clock:
    now: float = 0.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing(*errors: Exception, answer: str = "ok") -> object:
    pending = list(errors)

    def call() -> str:
        if pending:
            raise pending.pop(0)
        return answer

    return call


def test_transient_failures_are_retried_with_backoff_and_retry_after() -> None:
    clock = Clock()
    policy = RetryPolicy(attempts=4, sleep=clock.sleep, random=lambda: 0.0)

    result = call_with_retries(
        failing(Flaky(), Flaky(retry_after=7.0)),  # type: ignore[arg-type]
        policy=policy, model="m", errors=Errors(),
    )

    assert result == "ok"
    assert clock.slept == [2.0, 7.0]


def test_unknown_exceptions_propagate_unchanged() -> None:
    with pytest.raises(KeyError):
        call_with_retries(
            failing(KeyError("bug")),  # type: ignore[arg-type]
            policy=RetryPolicy(), model="m", errors=Errors(),
        )


def test_a_wait_past_the_time_budget_gives_up_without_sleeping() -> None:
    clock = Clock(now=100.0)
    meter = UsageMeter()
    gate = CallGate(
        meter=meter,
        errors=Errors(),
        retry=RetryPolicy(sleep=clock.sleep),
        deadline=130.0,
        clock=clock,
    )

    with pytest.raises(Unavailable, match=r"waiting 60 s more would pass the run's time budget"):
        gate.send(
            failing(Flaky(retry_after=60.0)),  # type: ignore[arg-type]
            stage="classify", model="m", estimated_tokens=10, usage=lambda _: Usage(),
        )
    assert clock.slept == []


def test_no_new_capped_call_starts_after_the_deadline_but_embedding_still_may() -> None:
    clock = Clock(now=200.0)
    meter = UsageMeter()
    gate = CallGate(meter=meter, errors=Errors(), deadline=100.0, clock=clock)

    with pytest.raises(BudgetExhausted, match="time budget"):
        gate.send(
            failing(), stage="propose", model="m", estimated_tokens=1,  # type: ignore[arg-type]
            usage=lambda _: Usage(),
        )
    answer = gate.send(
        failing(), stage="embed", model="e", estimated_tokens=1,  # type: ignore[arg-type]
        usage=lambda _: Usage(input_tokens=4),
    )
    assert answer == "ok"
    assert meter.totals()["embed"].input_tokens == 4


def test_the_gate_checks_caps_waits_for_the_limiter_and_records_usage() -> None:
    clock = Clock()
    limiter = RateLimiter(
        requests_per_minute=1, tokens_per_minute=1000, clock=clock, sleep=clock.sleep
    )
    meter = UsageMeter(max_llm_calls=2)
    gate = CallGate(meter=meter, errors=Errors(), limiter=limiter, clock=clock)

    for _ in range(2):
        gate.send(
            failing(), stage="classify", model="m", estimated_tokens=10,  # type: ignore[arg-type]
            usage=lambda _: Usage(input_tokens=10, output_tokens=2),
        )
    assert clock.slept == [60.0]  # one request a minute
    assert meter.llm_calls == 2
    with pytest.raises(BudgetExhausted, match="cap of 2 LLM calls"):
        gate.send(
            failing(), stage="classify", model="m", estimated_tokens=10,  # type: ignore[arg-type]
            usage=lambda _: Usage(),
        )


def test_parse_retry_after() -> None:
    assert parse_retry_after(" 3 ") == 3.0
    assert parse_retry_after("-2") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
