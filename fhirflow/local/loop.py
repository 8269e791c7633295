"""The embedded mode's background loop: a daemon thread that drains something every interval.

A module of its own, apart from :mod:`fhirflow.local.worker` (which wires the index-sync and
bundle services into the outbox drainer and stream poller), so that a service's local wiring can
run its own drainer on it without importing the other services (docs/architecture.md, Layers).
"""

from __future__ import annotations

import logging
import threading
from typing import Protocol

logger = logging.getLogger("fhirflow.worker")


class Drainer(Protocol):
    def drain(self) -> int: ...


class Worker:
    """A daemon thread that drains every ``interval`` seconds until stopped."""

    def __init__(self, drainer: Drainer, *, interval: float = 1.0) -> None:
        self.drainer = drainer
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fhirflow-worker", daemon=True)

    def start(self) -> Worker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self.drainer.drain()
                upkeep = getattr(self.drainer, "housekeeping", None)
                if upkeep is not None:
                    upkeep()
                failures = 0
            except Exception:
                failures += 1
                logger.exception("worker drain failed (%d in a row); retrying", failures)
            # Back off while a dependency stays down, rather than hammer it and flood the log.
            self._stop.wait(min(self.interval * 2 ** min(failures, 5), 30.0))
