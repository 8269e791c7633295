"""In-memory adapters: fakes with the same behaviour as the real ones, for unit tests.

Each passes the same contract suite (tests/contract) as its SQLite and AWS siblings.
"""

from fhirflow.adapters.memory.adapters import (
    InMemoryBlobStore,
    InMemoryEventLedger,
    InMemoryEventPublisher,
    InMemorySearchIndex,
)

__all__ = ["InMemoryBlobStore", "InMemoryEventLedger", "InMemoryEventPublisher", "InMemorySearchIndex"]
