import random
from datetime import UTC, datetime, timedelta

import pytest

from herald.consumers.retry_policy import (
    GiveUp,
    Jitter,
    Retry,
    RetryPolicy,
    backoff_delay,
    next_step,
    tier_for,
)

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def policy(**overrides):
    values = {"tiers_s": (5.0, 30.0, 300.0), "base_s": 5.0, "cap_s": 300.0, "jitter": Jitter.FULL,
              "max_attempts": 8, "max_age_s": 3600.0}
    values.update(overrides)
    return RetryPolicy(**values)


def highest(low, high):
    return high


def lowest(low, high):
    return low


def test_full_jitter_ceiling_doubles_per_attempt_and_is_capped():
    assert [backoff_delay(policy(), n, None, highest) for n in range(1, 9)] == [
        5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0]
    assert backoff_delay(policy(), 3, None, lowest) == 0.0


def test_full_jitter_stays_within_its_bounds_for_random_draws():
    rng = random.Random(7)
    for attempt in range(1, 30):
        delay = backoff_delay(policy(), attempt, None, rng.uniform)
        assert 0.0 <= delay <= min(300.0, 5.0 * 2 ** (attempt - 1))


def test_equal_jitter_keeps_half_the_ceiling_and_draws_the_other_half():
    equal = policy(jitter=Jitter.EQUAL)
    assert [backoff_delay(equal, n, None, lowest) for n in (1, 2, 3, 9)] == [2.5, 5.0, 10.0, 150.0]
    assert [backoff_delay(equal, n, None, highest) for n in (1, 2, 3, 9)] == [5.0, 10.0, 20.0, 300.0]


def test_decorrelated_jitter_grows_from_the_previous_delay_and_is_capped():
    decorrelated = policy(jitter=Jitter.DECORRELATED)
    assert backoff_delay(decorrelated, 1, None, highest) == 15.0
    assert backoff_delay(decorrelated, 2, 15.0, highest) == 45.0
    assert backoff_delay(decorrelated, 5, 200.0, highest) == 300.0
    assert backoff_delay(decorrelated, 2, 15.0, lowest) == 5.0, "never below the base"


def test_the_delay_picks_the_last_tier_it_reaches():
    assert [tier_for(policy(), d) for d in (0.0, 4.9, 5.0, 29.9, 30.0, 299.0, 300.0, 9999.0)] == [
        1, 1, 1, 1, 2, 2, 3, 3]


def test_a_retry_is_due_after_its_delay_on_its_tier():
    step = next_step(policy(), attempts=4, first_failed_at=T0, now=T0, uniform=highest)
    assert step == Retry(tier=2, delay_s=40.0, due_at=T0 + timedelta(seconds=40))


def test_retry_after_is_honoured_when_it_asks_for_more():
    step = next_step(policy(), attempts=1, first_failed_at=T0, now=T0, retry_after_s=120.0,
                     uniform=highest)
    assert isinstance(step, Retry) and (step.delay_s, step.tier) == (120.0, 2)
    shorter = next_step(policy(), attempts=2, first_failed_at=T0, now=T0, retry_after_s=1.0,
                        uniform=highest)
    assert isinstance(shorter, Retry) and shorter.delay_s == 10.0


def test_attempts_are_bounded():
    step = next_step(policy(max_attempts=3), attempts=3, first_failed_at=T0, now=T0)
    assert isinstance(step, GiveUp) and step.error_class == "RetriesExhausted"
    assert "3 attempts" in step.reason


def test_age_is_bounded_from_the_first_failure():
    late = T0 + timedelta(seconds=3595)
    step = next_step(policy(), attempts=2, first_failed_at=T0, now=late, uniform=highest)
    assert isinstance(step, GiveUp) and step.error_class == "MaxAgeExceeded"
    assert isinstance(next_step(policy(), attempts=2, first_failed_at=T0, now=late, uniform=lowest), Retry)


@pytest.mark.parametrize("bad", [
    {"tiers_s": ()}, {"tiers_s": (30.0, 5.0)}, {"tiers_s": (5.0, 5.0)}, {"base_s": 0.0},
    {"base_s": 10.0, "cap_s": 5.0}, {"max_attempts": 0}, {"max_age_s": 0.0},
])
def test_a_policy_that_makes_no_sense_is_rejected(bad):
    with pytest.raises(ValueError):
        policy(**bad)
