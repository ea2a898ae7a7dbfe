"""Token and cost accounting per stage, the per-run caps, and the shared rate limiter."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace

from .config import Config, Price
from .models import StageUsage, Usage

# Embedding calls are accounted and priced, but they do not count towards the per-run caps:
# `max_llm_calls` and `max_tokens` bound the generation work a run starts, and an index rebuild
# must not starve classification of its budget.
UNCAPPED_STAGES = frozenset({"embed"})

WINDOW_SECONDS = 60.0


def estimate_tokens(text: str) -> int:
    """A cheap token estimate (about four characters a token) for budgets and rate limits."""
    return (len(text) + 3) // 4


class BudgetExhausted(Exception):
    """A per-run cap (`limits.max_llm_calls` or `limits.max_tokens`) has been reached."""


def cost_usd(price: Price | None, usage: Usage) -> float:
    """The estimated cost of one call; thinking tokens are billed at the output rate."""
    if price is None:
        return 0.0
    billed_output = usage.output_tokens + usage.thinking_tokens
    return (usage.input_tokens * price.input + billed_output * price.output) / 1_000_000


class UsageMeter:
    """Running totals per stage, and the per-run caps on LLM calls and tokens."""

    def __init__(
        self,
        *,
        prices: Mapping[str, Price] | None = None,
        max_llm_calls: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.prices = dict(prices or {})
        self.max_llm_calls = max_llm_calls
        self.max_tokens = max_tokens
        self._stages: dict[str, StageUsage] = {}
        self._capped_calls = 0
        self._capped_tokens = 0
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config) -> UsageMeter:
        return cls(
            prices=config.models.prices,
            max_llm_calls=config.limits.max_llm_calls,
            max_tokens=config.limits.max_tokens,
        )

    def price(self, model: str) -> Price | None:
        """The configured price of a model, also found under its `models/` resource name."""
        return self.prices.get(model) or self.prices.get(model.removeprefix("models/"))

    def record(self, stage: str, model: str, usage: Usage, *, price_factor: float = 1.0) -> None:
        """Add one call's tokens and estimated cost to its stage's totals; `price_factor`
        scales the price (0.5 for answers of the Gemini Batch API)."""
        with self._lock:
            totals = self._stages.setdefault(stage, StageUsage())
            totals.calls += 1
            totals.input_tokens += usage.input_tokens
            totals.output_tokens += usage.output_tokens
            totals.thinking_tokens += usage.thinking_tokens
            totals.cost_usd += cost_usd(self.price(model), usage) * price_factor
            if stage not in UNCAPPED_STAGES:
                self._capped_calls += 1
                self._capped_tokens += (
                    usage.input_tokens + usage.output_tokens + usage.thinking_tokens
                )

    @property
    def llm_calls(self) -> int:
        """Calls that count towards `max_llm_calls` (every stage but embedding)."""
        return self._capped_calls

    @property
    def tokens(self) -> int:
        """Tokens that count towards `max_tokens` (input, output and thinking)."""
        return self._capped_tokens

    def cap_reached(self, share: float = 1.0) -> str | None:
        """The setting of the first cap the run has used `share` of ("limits.max_llm_calls",
        "limits.max_tokens"), or None."""
        if self.max_llm_calls is not None and self._capped_calls >= share * self.max_llm_calls:
            return "limits.max_llm_calls"
        if self.max_tokens is not None and self._capped_tokens >= share * self.max_tokens:
            return "limits.max_tokens"
        return None

    @property
    def exhausted_reason(self) -> str | None:
        """One sentence saying which cap was reached, or None while work may go on."""
        cap = self.cap_reached()
        if cap is None:
            return None
        size = (
            f"{self.max_llm_calls} LLM calls" if cap == "limits.max_llm_calls"
            else f"{self.max_tokens} tokens"
        )  # fmt: skip
        return (
            f"The run reached its cap of {size} ({cap}), so it started no new work and saved "
            "what it had done."
        )

    @property
    def exhausted(self) -> bool:
        return self.exhausted_reason is not None

    def check(self, upcoming_tokens: int = 0) -> None:
        """Raise BudgetExhausted when a cap has been reached, or when a call of about
        `upcoming_tokens` input tokens would pass `max_tokens`; call before starting a call.
        """
        reason = self.exhausted_reason
        if reason is None and self.max_tokens is not None:
            left = self.max_tokens - self._capped_tokens
            if upcoming_tokens > left:
                reason = (
                    f"The next call needs about {upcoming_tokens} tokens but only {left} of the "
                    f"run's {self.max_tokens} (limits.max_tokens) are left, so it started no new "
                    "work and saved what it had done."
                )
        if reason is not None:
            raise BudgetExhausted(reason)

    def totals(self) -> dict[str, StageUsage]:
        """A copy of the per-stage totals, for the run report."""
        with self._lock:
            return {stage: replace(totals) for stage, totals in self._stages.items()}


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits over a sliding 60-second window."""

    def __init__(
        self,
        *,
        requests_per_minute: int,
        tokens_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if requests_per_minute < 1 or tokens_per_minute < 1:
            raise ValueError("rate limits must be at least 1 per minute")
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        embedding: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> RateLimiter:
        """The generation limiter, or with `embedding` the embedding one: separate quotas."""
        models = config.models
        return cls(
            requests_per_minute=(
                models.embedding_requests_per_minute if embedding else models.requests_per_minute
            ),
            tokens_per_minute=(
                models.embedding_tokens_per_minute if embedding else models.tokens_per_minute
            ),
            clock=clock,
            sleep=sleep,
        )

    def acquire(self, tokens: int) -> float:
        """Wait until one more request of `tokens` fits both limits; returns the seconds waited.

        A single request larger than the whole token limit is let through once the window
        is empty, since waiting longer could never make it fit.
        """
        tokens = max(0, tokens)
        waited = 0.0
        with self._lock:
            while True:
                now = self._clock()
                self._forget_before(now - WINDOW_SECONDS)
                delay = self._delay(now, tokens)
                if delay <= 0:
                    self._sent.append((now, tokens))
                    return waited
                self._sleep(delay)
                waited += delay

    def _forget_before(self, cutoff: float) -> None:
        while self._sent and self._sent[0][0] <= cutoff:
            self._sent.popleft()

    def _delay(self, now: float, tokens: int) -> float:
        """Seconds until the oldest requests leave the window far enough for this one."""
        if not self._sent:
            return 0.0
        delay = 0.0
        if len(self._sent) >= self.requests_per_minute:
            oldest_to_drop = self._sent[len(self._sent) - self.requests_per_minute]
            delay = max(delay, oldest_to_drop[0] + WINDOW_SECONDS - now)
        used = sum(sent for _, sent in self._sent)
        if used + tokens > self.tokens_per_minute:
            # Free tokens from the oldest requests until this one fits (or the window is empty).
            freed, free_at = 0, now
            for sent_at, sent in self._sent:
                freed += sent
                free_at = sent_at + WINDOW_SECONDS
                if used - freed + tokens <= self.tokens_per_minute:
                    break
            delay = max(delay, free_at - now)
        return delay
