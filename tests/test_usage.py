"""Usage accounting, per-run caps and the sliding-window rate limiter."""

from __future__ import annotations

import pytest

from pythia.config import Config, Price, parse_config
from pythia.models import StageUsage, Usage
from pythia.usage import BudgetExhausted, RateLimiter, UsageMeter, cost_usd, estimate_tokens


class FakeClock:
    """A clock that only moves when the limiter sleeps, and remembers every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_thinking_tokens_are_billed_at_the_output_rate() -> None:
    price = Price(input=0.30, output=2.50)
    usage = Usage(input_tokens=1_000_000, output_tokens=200_000, thinking_tokens=800_000)

    assert cost_usd(price, usage) == pytest.approx(0.30 + 2.50)
    assert cost_usd(None, usage) == 0.0


def test_meter_totals_per_stage_with_prices_from_config() -> None:
    meter = UsageMeter.from_config(Config())

    meter.record("classify", "gemini-3.5-flash-lite", Usage(1000, 200, 300))
    meter.record("classify", "gemini-3.5-flash-lite", Usage(2000, 100, 0))
    meter.record("propose", "gemini-3.8-flash", Usage(4000, 500, 1500))
    meter.record("embed", "models/gemini-embedding-001", Usage(input_tokens=10_000))

    totals = meter.totals()
    assert totals["classify"] == StageUsage(
        calls=2,
        input_tokens=3000,
        output_tokens=300,
        thinking_tokens=300,
        cost_usd=pytest.approx((3000 * 0.30 + 600 * 2.50) / 1e6),
    )
    assert totals["propose"].cost_usd == pytest.approx((4000 * 1.50 + 2000 * 7.50) / 1e6)
    assert totals["embed"].cost_usd == pytest.approx(10_000 * 0.15 / 1e6)
    # Totals are a copy: the report cannot change the meter.
    totals["classify"].calls = 99
    assert meter.totals()["classify"].calls == 2


def test_an_unpriced_model_costs_nothing_but_is_counted() -> None:
    meter = UsageMeter(prices={})
    meter.record("classify", "some-future-model", Usage(100, 10, 0))

    assert meter.totals()["classify"].calls == 1
    assert meter.totals()["classify"].cost_usd == 0.0


def test_the_call_cap_stops_new_work_with_one_sentence() -> None:
    meter = UsageMeter.from_config(parse_config({"limits": {"max_llm_calls": 2}}))
    meter.record("classify", "gemini-3.5-flash-lite", Usage(10, 10, 0))
    meter.check()
    assert not meter.exhausted

    meter.record("propose", "gemini-3.5-flash", Usage(10, 10, 0))

    assert meter.exhausted
    with pytest.raises(BudgetExhausted) as caught:
        meter.check()
    assert str(caught.value) == (
        "The run reached its cap of 2 LLM calls (limits.max_llm_calls), "
        "so it started no new work and saved what it had done."
    )


def test_the_token_cap_counts_input_output_and_thinking() -> None:
    meter = UsageMeter(max_tokens=1000)
    meter.record("classify", "m", Usage(600, 100, 299))
    assert not meter.exhausted and meter.tokens == 999

    meter.record("classify", "m", Usage(1, 0, 0))

    assert meter.exhausted_reason is not None
    assert "limits.max_tokens" in meter.exhausted_reason


def test_embedding_calls_do_not_count_towards_the_caps() -> None:
    meter = UsageMeter(max_llm_calls=1, max_tokens=1000)
    for _ in range(5):
        meter.record("embed", "gemini-embedding-001", Usage(input_tokens=5000))

    assert not meter.exhausted
    assert meter.llm_calls == 0
    assert meter.totals()["embed"].calls == 5


def test_estimate_tokens_is_about_four_characters_a_token() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("x" * 4000) == 1000


def test_limiter_lets_requests_through_until_the_rpm_is_reached() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        requests_per_minute=3, tokens_per_minute=1_000_000, clock=clock, sleep=clock.sleep
    )

    for _ in range(3):
        assert limiter.acquire(10) == 0
        clock.now += 5  # requests at t=0, 5 and 10

    assert limiter.acquire(10) == pytest.approx(45)  # the t=0 request leaves the window at 60
    assert clock.now == pytest.approx(1060)
    assert limiter.acquire(10) == pytest.approx(5)  # then the t=5 one at 65


def test_limiter_waits_for_enough_tokens_to_leave_the_window() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        requests_per_minute=100, tokens_per_minute=1000, clock=clock, sleep=clock.sleep
    )
    limiter.acquire(400)  # t=0
    clock.now += 10
    limiter.acquire(400)  # t=10
    clock.now += 10

    # 800 used: 500 more fits once the t=0 request leaves, at t=60.
    assert limiter.acquire(500) == pytest.approx(40)
    # Now 400 (t=10) + 500 (t=60) are in the window: 700 more needs both gone, at t=120.
    assert limiter.acquire(700) == pytest.approx(60)
    assert clock.sleeps == [pytest.approx(40), pytest.approx(60)]


def test_limiter_lets_an_oversized_request_through_once_the_window_is_empty() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        requests_per_minute=100, tokens_per_minute=1000, clock=clock, sleep=clock.sleep
    )
    assert limiter.acquire(5000) == 0  # empty window: nothing to wait for

    assert limiter.acquire(5000) == pytest.approx(60)


def test_limiter_reads_its_limits_from_config() -> None:
    config = parse_config({"models": {"requests_per_minute": 7, "tokens_per_minute": 9000}})

    limiter = RateLimiter.from_config(config)

    assert (limiter.requests_per_minute, limiter.tokens_per_minute) == (7, 9000)


def test_a_call_that_would_pass_the_token_cap_is_refused_before_it_is_made() -> None:
    meter = UsageMeter(max_tokens=10_000)
    meter.record("classify", "m", Usage(9000, 0, 0))
    meter.check(1000)  # exactly fits

    with pytest.raises(BudgetExhausted) as caught:
        meter.check(1001)
    assert str(caught.value) == (
        "The next call needs about 1001 tokens but only 1000 of the run's 10000 "
        "(limits.max_tokens) are left, so it started no new work and saved what it had done."
    )
    assert not meter.exhausted  # smaller calls may still go
