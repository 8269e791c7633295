"""The embedded mode's reindex worker: the local worker loop drains the ``reindex`` queue of the
embedded database (DESIGN.md §6), one chunk of a ``$reindex`` job per message, off the request
path (:mod:`fhirflow_search.reindex_queue`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhirflow.local.loop import Worker
    from fhirflow.settings import Settings


def start_reindex_worker(settings: Settings, *, interval: float = 0.5) -> Worker | None:
    """The background reindex worker ``fhirflow serve`` runs; none where ``$reindex`` cannot run
    (OpenSearch fed by the SQLite store) or an SQS queue carries the work."""
    if settings.search_index != "sqlite" and settings.store != "dynamodb":
        return None
    from fhirflow_search.reindex_queue import start_reindex_worker as start

    return start(settings, interval=interval)
