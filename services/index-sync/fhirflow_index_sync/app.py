"""index-sync's composition root: settings → adapters → the use case, built once per process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fhirflow.ports import BlobStore
from fhirflow.settings import Settings
from fhirflow_index_sync.records import change_from_record
from fhirflow_index_sync.sync import IndexSync

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord


@dataclass(frozen=True, slots=True)
class Components:
    sync: IndexSync
    blobs: BlobStore | None
    """Where offloaded bodies are read from (the stream image holds only their key)."""


_components: Components | None = None


def build(settings: Settings | None = None) -> Components:
    from fhirflow import runtime

    settings = settings or Settings.from_env()
    sync = IndexSync(
        index=runtime.build_index(settings),
        ledger=runtime.build_ledger(settings),
        publisher=runtime.build_events(settings),
    )
    return Components(sync=sync, blobs=runtime.build_blobs(settings))


def components() -> Components:
    """Built on the first invocation, not at import: no I/O at import time."""
    global _components
    if _components is None:
        _components = build()
    return _components


def use(chosen: Components | None) -> None:
    """Install the components to use (the local worker, tests); None rebuilds from settings."""
    global _components
    _components = chosen


class NotAttempted(Exception):
    """A record after a failed one in the same batch: left for the retry, to keep version order."""


class StreamBatch:
    """The record handler of one invocation.

    Lambda re-delivers a stream batch from the lowest failed sequence number, so everything after
    the first failure comes again anyway; processing it now would only announce later versions
    before earlier ones. After the first failure the remaining records fail without being tried.
    """

    def __init__(self, parts: Components) -> None:
        self.parts = parts
        self.failed = False

    def handle(self, record: DynamoDBRecord) -> None:
        if self.failed:
            raise NotAttempted("an earlier record of this batch failed")
        try:
            change = change_from_record(record.raw_event, self.parts.blobs)
            if change is not None:
                self.parts.sync.process_one(change)
        except Exception:
            self.failed = True
            raise


def stream_batch() -> StreamBatch:
    return StreamBatch(components())
