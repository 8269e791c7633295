"""Every read has a bounded cost: a time budget per request (issue: no input may stall a worker).

A read-only request (``GET``, ``POST _search``) runs under a deadline held in a context variable,
set once by :class:`fhirflow.http.Application`. Work whose cost the client controls checks it:

- SQLite statements of a search run with a progress handler that interrupts them once the
  deadline has passed (:func:`interrupt_when_late`);
- Python loops that grow with the input (terminology expansion, ``_include:iterate``) call
  :func:`check` between steps.

Past the deadline the request answers ``503`` with an OperationOutcome (issue code
``too-costly``) instead of holding its worker; other requests never wait for it, because the
local gateway runs such work off its event loop. Writes carry no budget: a transaction is
all-or-nothing and must not fail half-way for being slow (its cost is bounded by its size).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

from fhirflow.errors import FhirError

if TYPE_CHECKING:
    import sqlite3

_deadline: ContextVar[float | None] = ContextVar("fhirflow_request_deadline", default=None)
_budget: ContextVar[float] = ContextVar("fhirflow_request_budget", default=0.0)

PROGRESS_STEPS = 20_000
"""SQLite virtual-machine steps between two looks at the clock (a few hundred microseconds)."""


class TooCostly(FhirError):
    """The request used up its time budget (OperationOutcome issue code ``too-costly``)."""

    status, code = 503, "too-costly"


@contextmanager
def request_budget(seconds: float | None) -> Iterator[None]:
    """Run the block with a deadline ``seconds`` from now (None or ≤ 0: no budget)."""
    if not seconds or seconds <= 0:
        yield
        return
    deadline_token = _deadline.set(time.monotonic() + seconds)
    budget_token = _budget.set(seconds)
    try:
        yield
    finally:
        _deadline.reset(deadline_token)
        _budget.reset(budget_token)


def expired() -> bool:
    deadline = _deadline.get()
    return deadline is not None and time.monotonic() > deadline


def active() -> bool:
    return _deadline.get() is not None


def too_costly() -> TooCostly:
    seconds = _budget.get()
    return TooCostly(
        f"The request needed more than its time budget of {seconds:g} s and was stopped; "
        "narrow it (fewer values, fewer chains or includes, a smaller _count)",
        headers={"Retry-After": "1"},
    )


def check() -> None:
    """Raise :class:`TooCostly` when the current request's deadline has passed."""
    if expired():
        raise too_costly()


@contextmanager
def interrupt_when_late(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the block's statements on ``conn`` under the current deadline: SQLite interrupts a
    statement once it has passed, and the block raises :class:`TooCostly`."""
    import sqlite3

    if _deadline.get() is None:
        yield
        return
    conn.set_progress_handler(expired, PROGRESS_STEPS)
    try:
        yield
    except sqlite3.OperationalError as exc:
        if expired():
            raise too_costly() from exc
        raise
    finally:
        conn.set_progress_handler(None, 0)
