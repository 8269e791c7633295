"""``ResourceChanged`` v1: one event per committed change of a resource (DESIGN.md §3).

Published on the EventBridge bus with ``source = "fhirflow"`` and ``detail-type =
"ResourceChanged"``; the model is the event's ``detail``. It names the change and never carries
the resource body (events are not a PHI channel): consumers read the version they are told
about through the FHIR API (``{type}/{id}/_history/{versionId}``).

Delivery is at least once and in version order per resource. ``metadata.eventId`` is derived
from (tenant, type, id, version), so a consumer deduplicates redeliveries by it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, model_validator

EVENT_SOURCE = "fhirflow"
"""The EventBridge ``source`` of every fhirflow event."""

ChangeOperation = Literal["create", "update", "delete"]

# A fixed namespace makes event ids stable across processes and deployments.
_EVENT_NAMESPACE = uuid.UUID("5b0f3f7e-8a43-4f52-9d4c-3f1f5c6b1a10")


def change_event_id(tenant: str, resource_type: str, resource_id: str, version: int) -> str:
    """The id of the one event for one committed version: the same on every redelivery."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{tenant}\x1f{resource_type}\x1f{resource_id}\x1f{version}"))


class EventMetadata(BaseModel):
    """What every fhirflow message carries beside its payload."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    event_type: str = Field(alias="eventType", description="The message's name, e.g. ResourceChanged.")
    version: str = Field(description="The contract's major version, e.g. v1; changes within it are additive.")
    event_id: str = Field(alias="eventId", description="Stable per fact: redeliveries carry the same id.")
    occurred_at: AwareDatetime = Field(alias="occurredAt", description="When the fact happened (UTC).")
    source: str = Field(default=EVENT_SOURCE)

    @field_serializer("occurred_at")
    def _instant(self, value: datetime) -> str:
        return _instant(value)


class ResourceChanged(BaseModel):
    """A resource version was committed: created, updated or deleted (http.html#history)."""

    DETAIL_TYPE: ClassVar[str] = "ResourceChanged"
    VERSION: ClassVar[str] = "v1"

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    metadata: EventMetadata
    tenant: str
    resource_type: str = Field(alias="resourceType", description="The FHIR resource type, e.g. Patient.")
    id: str = Field(description="The resource's logical id.")
    version_id: str = Field(alias="versionId", description="meta.versionId of the committed version.")
    operation: ChangeOperation
    last_updated: AwareDatetime = Field(alias="lastUpdated", description="meta.lastUpdated of that version.")
    request_id: str = Field(default="", alias="requestId", description="The API request that made the change.")

    @field_serializer("last_updated")
    def _instant(self, value: datetime) -> str:
        return _instant(value)

    @model_validator(mode="after")
    def _this_contract(self) -> ResourceChanged:
        # A v1 consumer must not silently misread another major version or another message.
        if self.metadata.event_type != self.DETAIL_TYPE or self.metadata.version != self.VERSION:
            raise ValueError(
                f"not a {self.DETAIL_TYPE} {self.VERSION} message ({self.metadata.event_type} {self.metadata.version})"
            )
        return self

    @classmethod
    def of(
        cls,
        *,
        tenant: str,
        resource_type: str,
        id: str,  # noqa: A002 (the FHIR element's name)
        version: int,
        operation: ChangeOperation,
        last_updated_ms: int,
        request_id: str = "",
    ) -> ResourceChanged:
        """The event for one committed version, with its stable id."""
        moment = datetime.fromtimestamp(last_updated_ms / 1000, tz=UTC)
        return cls(
            metadata=EventMetadata(
                event_type=cls.DETAIL_TYPE,
                version=cls.VERSION,
                event_id=change_event_id(tenant, resource_type, id, version),
                occurred_at=moment,
            ),
            tenant=tenant,
            resource_type=resource_type,
            id=id,
            version_id=str(version),
            operation=operation,
            last_updated=moment,
            request_id=request_id,
        )

    def to_json(self) -> str:
        """The EventBridge ``detail``: camelCase keys, instants in UTC with milliseconds."""
        return self.model_dump_json(by_alias=True)


def _instant(value: datetime) -> str:
    moment = value.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
