"""index-sync's composition root: settings → adapters → the use case, built once per process."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhirflow.ports import BlobStore, CommittedChange
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


def _sequence(record: Mapping[str, Any]) -> str:
    return str(record["dynamodb"]["SequenceNumber"])


class StreamBatch:
    """The record handler of one invocation.

    The first record's call processes the whole batch (one ``apply_batch`` on the index: a single
    bulk request on OpenSearch, instead of a request per record); each record's call then answers
    with that record's outcome, which Powertools turns into ``batchItemFailures``.

    Lambda re-delivers a stream batch from the lowest failed sequence number, so everything after
    the first failure comes again anyway; announcing it now would only announce later versions
    before earlier ones. So every record after the first failed one fails too, untried.
    """

    def __init__(self, parts: Components, records: Sequence[dict[str, Any]]) -> None:
        self.parts = parts
        self.records = list(records)
        self._failures: dict[str, Exception] | None = None

    def handle(self, record: DynamoDBRecord) -> None:
        if self._failures is None:
            self._failures = self._process()
        failure = self._failures.get(_sequence(record.raw_event))
        if failure is not None:
            raise failure

    def _process(self) -> dict[str, Exception]:
        """The failure of each record that failed, by sequence number."""
        changes: list[CommittedChange] = []
        positions: list[int] = []  # the record each change came from
        first_failed, error = len(self.records), None
        for position, raw in enumerate(self.records):
            try:
                change = change_from_record(raw, self.parts.blobs)
            except Exception as exc:  # e.g. an offloaded body that cannot be read yet
                first_failed, error = position, exc
                break
            if change is not None:
                changes.append(change)
                positions.append(position)
        report = self.parts.sync.process(changes)
        if report.error is not None:
            first_failed, error = positions[report.done], report.error
        if error is None:
            return {}
        failures: dict[str, Exception] = {_sequence(self.records[first_failed]): error}
        for raw in self.records[first_failed + 1 :]:
            failures[_sequence(raw)] = NotAttempted("an earlier record of this batch failed")
        return failures


def stream_batch(event: Mapping[str, Any]) -> StreamBatch:
    return StreamBatch(components(), event.get("Records") or [])
