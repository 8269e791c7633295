"""When to try a failed notification again: the Standard Webhooks retry schedule, with jitter.

Standard Webhooks ("Retry schedule") suggests: immediately, then after 5 s, 5 min, 30 min, 2 h,
5 h, 10 h, 14 h, 20 h and 24 h, about three days in all. Peers that give up after a minute lose
notifications whenever a receiver restarts (HAPI issue #6002); this
schedule rides out a weekend's outage. Jitter (±20 %) spreads the retries of many subscriptions
that failed together, so a recovering receiver is not hit by all of them in the same second.
"""

from __future__ import annotations

import random

SCHEDULE_SECONDS = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)
"""Delay before retry n (n = 1, 2, ...); the last value repeats until the horizon."""
JITTER = 0.2
DEFAULT_HORIZON_SECONDS = 3 * 24 * 3600
MIN_RETRY_AFTER_SECONDS = 1.0
"""A ``Retry-After: 0`` must not turn a failing endpoint into a tight loop."""

_shared = random.Random()  # noqa: S311 (jitter, not cryptography)


def next_delay(attempt: int, *, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``attempt``-th failed attempt (1 = the first delivery failed)."""
    if attempt <= 0:
        return 0.0
    base = SCHEDULE_SECONDS[min(attempt, len(SCHEDULE_SECONDS)) - 1]
    return base * (1.0 + (rng or _shared).uniform(-JITTER, JITTER))
