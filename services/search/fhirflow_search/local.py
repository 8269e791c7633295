"""The embedded mode's reindex worker: the local worker loop advances ``$reindex`` jobs in the
background (DESIGN.md §6), off the request path, a few batches per turn."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhirflow.local.worker import Worker
    from fhirflow.settings import Settings


def start_reindex_worker(settings: Settings, *, interval: float = 0.5) -> Worker | None:
    """The background reindex worker ``fhirflow serve`` runs; none without the embedded index."""
    if settings.search_index != "sqlite":
        return None
    from fhirflow.local.worker import Worker
    from fhirflow_search.app import reindex_parts
    from fhirflow_search.reindex import ReindexRunner

    return Worker(ReindexRunner(reindex_parts(settings)), interval=interval).start()
