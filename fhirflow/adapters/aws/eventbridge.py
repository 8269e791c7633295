"""``EventBridgeEventPublisher``: change events onto an EventBridge bus (DESIGN.md §3).

Each event is one entry with ``source = "fhirflow"``, ``detail-type`` the contract's name and
``detail`` its JSON. PutEvents takes 10 entries per call and may accept some and refuse others;
refused entries are retried a few times, then the publish fails and the caller (index-sync)
reports the records as failed, so the stream delivers them again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fhirflow.adapters.aws import clients

if TYPE_CHECKING:
    from fhirflow_contracts import ResourceChanged

_ENTRIES_PER_CALL = 10
_ATTEMPTS = 4


class PublishFailed(RuntimeError):
    """EventBridge refused some entries after retries."""


class EventBridgeEventPublisher:
    def __init__(
        self, bus_name: str, *, client: Any = None, endpoint_url: str | None = None, region: str | None = None
    ) -> None:
        self.bus_name = bus_name
        self.client = client or clients.lazy_client("events", endpoint_url=endpoint_url, region=region)

    def publish(self, events: Sequence[ResourceChanged]) -> None:
        for start in range(0, len(events), _ENTRIES_PER_CALL):
            self._put([self._entry(e) for e in events[start : start + _ENTRIES_PER_CALL]])

    def _entry(self, event: ResourceChanged) -> dict[str, Any]:
        return {
            "Source": event.metadata.source,
            "DetailType": event.metadata.event_type,
            "Detail": event.to_json(),
            "EventBusName": self.bus_name,
            "Time": event.metadata.occurred_at,
        }

    def _put(self, entries: list[dict[str, Any]]) -> None:
        for attempt in range(_ATTEMPTS):
            with clients.translated("The event bus"):
                reply = self.client.put_events(Entries=entries)
            if not reply.get("FailedEntryCount"):
                return
            # Results are positional; entries without an ErrorCode were accepted.
            entries = [e for e, r in zip(entries, reply["Entries"], strict=True) if r.get("ErrorCode")]
            time.sleep(min(0.05 * 2**attempt, 0.5))
        raise PublishFailed(f"EventBridge refused {len(entries)} event(s) after {_ATTEMPTS} attempts")
