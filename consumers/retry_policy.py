"""When a failed delivery is tried again, and on which retry tier: pure functions, no I/O.

A retryable failure gets a delay from exponential backoff with jitter (AWS's "full", "equal"
or "decorrelated" jitter), capped; a provider's Retry-After is honoured when it asks for more.
The delay picks the tier: the last tier whose lower bound it reaches (the first tier for
shorter ones, the last tier for all longer ones). A tier's consumer waits for the head
record of a partition, so keeping similar delays together keeps a short retry from waiting
long behind a long one. Attempts and age are bounded per channel; beyond them, a record
goes to the DLQ.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

Uniform = Callable[[float, float], float]  # random.uniform, or a fixed one in tests


class Jitter(StrEnum):
    FULL = "full"  # uniform(0, min(cap, base * 2^(attempt-1)))
    EQUAL = "equal"  # half that ceiling, plus uniform(0, the other half): never shorter than half
    DECORRELATED = "decorrelated"  # min(cap, uniform(base, 3 * previous delay))


@dataclass(frozen=True)
class RetryPolicy:
    tiers_s: tuple[float, ...]  # lower bound of each tier's delays, ascending
    base_s: float
    cap_s: float
    jitter: Jitter
    max_attempts: int  # provider attempts in all, the first included
    max_age_s: float  # how long after its first failure a notification is still retried

    def __post_init__(self) -> None:
        if not self.tiers_s or list(self.tiers_s) != sorted(set(self.tiers_s)) or self.tiers_s[0] < 0:
            raise ValueError(f"retry tiers must be distinct, ascending and >= 0: {self.tiers_s}")
        if not 0 < self.base_s <= self.cap_s:
            raise ValueError(f"backoff needs 0 < base ({self.base_s}) <= cap ({self.cap_s})")
        if self.max_attempts < 1 or self.max_age_s <= 0:
            raise ValueError("max attempts must be >= 1 and max age > 0")


@dataclass(frozen=True)
class Retry:
    tier: int  # 1-based, as in the topic name notifications.<channel>.retry.<tier>
    delay_s: float
    due_at: datetime


@dataclass(frozen=True)
class GiveUp:
    error_class: str  # RetriesExhausted or MaxAgeExceeded
    reason: str


def backoff_delay(policy: RetryPolicy, attempt: int, previous_delay_s: float | None,
                  uniform: Uniform = random.uniform) -> float:
    """Delay before attempt `attempt + 1`, after `attempt` failed ones."""
    ceiling = min(policy.cap_s, policy.base_s * 2 ** min(attempt - 1, 62))
    if policy.jitter is Jitter.FULL:
        return uniform(0.0, ceiling)
    if policy.jitter is Jitter.EQUAL:
        return ceiling / 2 + uniform(0.0, ceiling / 2)
    previous = previous_delay_s if previous_delay_s is not None else policy.base_s
    return min(policy.cap_s, uniform(policy.base_s, max(policy.base_s, previous * 3)))


def tier_for(policy: RetryPolicy, delay_s: float) -> int:
    reached = [n for n, bound in enumerate(policy.tiers_s, start=1) if delay_s >= bound]
    return reached[-1] if reached else 1


def next_step(
    policy: RetryPolicy, *, attempts: int, first_failed_at: datetime, now: datetime,
    previous_delay_s: float | None = None, retry_after_s: float | None = None,
    uniform: Uniform = random.uniform,
) -> Retry | GiveUp:
    """After `attempts` failed attempts (all retryable), retry on a tier or give up."""
    if attempts >= policy.max_attempts:
        return GiveUp("RetriesExhausted", f"{attempts} attempts failed (at most {policy.max_attempts})")
    delay = backoff_delay(policy, attempts, previous_delay_s, uniform)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)  # the provider knows best when it can take more
    return defer_step(policy, first_failed_at=first_failed_at, now=now, delay_s=delay)


def defer_step(policy: RetryPolicy, *, first_failed_at: datetime, now: datetime,
               delay_s: float, bounded_by_age: bool = True) -> Retry | GiveUp:
    """Tried again after `delay_s` on the tier that delay reaches, while the notification is
    young enough to be retried at all. Also, alone, the step of a request that was not
    attempted (its endpoint was busy): no backoff, and no attempt used up. An operator's pause
    is waited out whatever the notification's age (`bounded_by_age` False)."""
    due_at = now + timedelta(seconds=delay_s)
    age_at_due = (due_at - first_failed_at).total_seconds()
    if bounded_by_age and age_at_due > policy.max_age_s:
        return GiveUp("MaxAgeExceeded", f"the next attempt would be {age_at_due:.0f} s after the "
                                        f"first failure (at most {policy.max_age_s:.0f} s)")
    return Retry(tier_for(policy, delay_s), delay_s, due_at)
