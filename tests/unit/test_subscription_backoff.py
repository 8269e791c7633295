"""The retry schedule: Standard Webhooks' steps, jittered within ±20 %, about three days in all."""

from __future__ import annotations

import random

import pytest

from fhirflow_subscriptions.backoff import DEFAULT_HORIZON_SECONDS, JITTER, SCHEDULE_SECONDS, next_delay


def test_the_first_attempt_is_immediate() -> None:
    assert next_delay(0) == 0.0


@pytest.mark.parametrize(("attempt", "base"), [(1, 5), (2, 300), (3, 1800), (4, 7200), (5, 18000), (9, 86400)])
def test_each_retry_waits_its_step_give_or_take_the_jitter(attempt: int, base: float) -> None:
    rng = random.Random(attempt)
    delays = [next_delay(attempt, rng=rng) for _ in range(500)]
    assert all(base * (1 - JITTER) <= d <= base * (1 + JITTER) for d in delays)
    assert max(delays) - min(delays) > base * JITTER  # jittered, not constant


def test_after_the_schedule_the_last_step_repeats() -> None:
    rng = random.Random(1)
    assert all(86400 * 0.8 <= next_delay(n, rng=rng) <= 86400 * 1.2 for n in (10, 11, 50))


def test_the_schedule_grows_and_spans_about_three_days() -> None:
    assert list(SCHEDULE_SECONDS) == sorted(SCHEDULE_SECONDS)
    assert 2.5 * 86400 < sum(SCHEDULE_SECONDS) < 3.5 * 86400
    assert DEFAULT_HORIZON_SECONDS == 3 * 86400


def test_the_same_seed_gives_the_same_delays() -> None:
    assert [next_delay(n, rng=random.Random(7)) for n in range(1, 6)] == [
        next_delay(n, rng=random.Random(7)) for n in range(1, 6)
    ]
