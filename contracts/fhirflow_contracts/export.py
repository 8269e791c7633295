"""Bulk export (https://hl7.org/fhir/uv/bulkdata/STU2/export.html): the ``StartExport`` v1 command
and the ``ExportJob`` v1 record.

``StartExport`` is what the kick-off (and a worker that ran out of time) puts on the export queue:
it names a job, never its content. ``ExportJob`` is the job as the job store keeps it: the request
as the kick-off validated it, the access constraint of the token that asked (the worker runs long
after the token is gone, and must export no more than that token could read), the worker's
checkpoint, and the files written. It carries no resource data and no token.

Both follow the contract rules of this package: ``metadata.version`` is the major version, changes
within it are additive, and ``tests/unit/test_contracts.py`` compares the JSON Schemas with the
snapshots in ``schemas/``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, model_validator

from fhirflow_contracts.events import EventMetadata

ExportStatus = Literal["accepted", "in-progress", "completed", "failed", "cancelled"]
ExportLevel = Literal["system", "patient", "group"]
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})

_COMMAND_NAMESPACE = uuid.UUID("0d5c2b8e-6f0b-4b8e-9a51-7c2f3e1d9a44")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def instant_of(ms: int) -> datetime:
    """Epoch milliseconds → an aware datetime, exactly (no float rounding)."""
    return _EPOCH + timedelta(milliseconds=ms)


def ms_of(moment: datetime) -> int:
    """An aware datetime → epoch milliseconds, exactly."""
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _instant(value: datetime) -> str:
    moment = value.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


class StartExport(_Model):
    """Run (or go on running) export job ``jobId`` of ``tenant``: the export queue's message."""

    DETAIL_TYPE: ClassVar[str] = "StartExport"
    VERSION: ClassVar[str] = "v1"

    metadata: EventMetadata
    tenant: str
    job_id: str = Field(alias="jobId")
    step: int = Field(default=0, description="0 for the kick-off, n for the n-th continuation of the job.")

    @model_validator(mode="after")
    def _this_contract(self) -> StartExport:
        if self.metadata.event_type != self.DETAIL_TYPE or self.metadata.version != self.VERSION:
            raise ValueError(
                f"not a {self.DETAIL_TYPE} {self.VERSION} message ({self.metadata.event_type} {self.metadata.version})"
            )
        return self

    @classmethod
    def of(cls, *, tenant: str, job_id: str, now_ms: int, step: int = 0) -> StartExport:
        """The command for one step of one job; a redelivery of it carries the same event id."""
        return cls(
            metadata=EventMetadata(
                event_type=cls.DETAIL_TYPE,
                version=cls.VERSION,
                event_id=str(uuid.uuid5(_COMMAND_NAMESPACE, f"{tenant}\x1f{job_id}\x1f{step}")),
                occurred_at=instant_of(now_ms),
            ),
            tenant=tenant,
            job_id=job_id,
            step=step,
        )

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


class ExportOwner(_Model):
    """Who started the job: only the same issuer, subject and client may see it (None: authorization off)."""

    issuer: str | None = None
    subject: str | None = None
    client_id: str | None = Field(default=None, alias="clientId")


class ExportAdmission(_Model):
    """One way the token admits resources of a type: a compartment (None: any) and granular
    search parameters they must also match (SMART v2 ``?param=value`` scopes)."""

    compartment: tuple[str, str] | None = None
    filters: list[tuple[str, str]] = Field(default_factory=list)


class TypeAccess(_Model):
    """What exported resources of one type must satisfy: one of ``alternatives`` and, when
    ``patients`` is set, be in no Patient compartment or in the compartment of one of them."""

    resource_type: str = Field(alias="resourceType")
    alternatives: list[ExportAdmission]
    patients: list[str] | None = None


class TypeFilter(_Model):
    """One ``_typeFilter`` query: resources of ``resourceType`` matching all of ``params``."""

    resource_type: str = Field(alias="resourceType")
    params: list[tuple[str, str]]


class ExportFile(_Model):
    """One file of the manifest's ``output`` or ``error``: the resource type it holds, its name
    under the job and how many resources (lines) it has."""

    type: str
    file: str
    count: int


class ExportIssue(_Model):
    """Something the export left out or could not do, reported as an OperationOutcome in the
    manifest's error file (what lenient handling ignored, a filter that failed to run)."""

    severity: Literal["error", "warning", "information"]
    code: str
    diagnostics: str
    expression: list[str] = Field(default_factory=list)


class ExportCheckpoint(_Model):
    """Where the worker is: the next segment of the plan, the keyset position inside it, the
    parts written per type, and how many resources were exported so far."""

    segment: int = 0
    position: list[Any] | None = None
    parts: dict[str, int] = Field(default_factory=dict)
    exported: int = 0
    segments: int | None = Field(default=None, description="How many segments the plan has, once known.")
    group_version: int | None = Field(
        default=None, alias="groupVersion", description="The Group version whose members are being exported."
    )
    step: int = Field(default=0, description="The StartExport step that wrote this checkpoint.")


class ExportJob(_Model):
    """One bulk export, as the job store keeps it (revision by revision)."""

    DETAIL_TYPE: ClassVar[str] = "ExportJob"
    VERSION: ClassVar[str] = "v1"

    metadata: EventMetadata = Field(description="eventId is the job id, occurredAt when it was requested.")
    id: str
    tenant: str
    owner: ExportOwner | None = None
    status: ExportStatus
    revision: int = Field(default=0, description="Bumped by every write; writes are conditional on it.")
    level: ExportLevel
    group_id: str | None = Field(default=None, alias="groupId")
    request: str = Field(description="The kick-off request URL (the manifest's 'request').")
    base_url: str = Field(alias="baseUrl", description="The FHIR base the client used (for file URLs).")
    transaction_time: AwareDatetime = Field(alias="transactionTime")
    types: list[str]
    referenced_types: list[str] = Field(
        default_factory=list,
        alias="referencedTypes",
        description="Patient/Group level: types outside the Patient compartment exported only as the "
        "resources the exported ones reference (Bulk Data IG 2.0 _type: Organization, Practitioner...).",
    )
    since: AwareDatetime | None = None
    type_filters: list[TypeFilter] = Field(default_factory=list, alias="typeFilters")
    output_format: str = Field(default="application/fhir+ndjson", alias="outputFormat")
    access: list[TypeAccess] | None = Field(
        default=None, description="None: the token's reads are unconstrained; types not listed are unconstrained."
    )
    requires_access_token: bool = Field(default=False, alias="requiresAccessToken")
    checkpoint: ExportCheckpoint = Field(default_factory=ExportCheckpoint)
    output: list[ExportFile] = Field(default_factory=list)
    error: list[ExportFile] = Field(default_factory=list)
    issues: list[ExportIssue] = Field(
        default_factory=list, description="What the export left out or failed to do, for the error file."
    )
    failure: str | None = Field(default=None, description="Why a failed job failed (no resource data).")
    updated_at: AwareDatetime = Field(alias="updatedAt")

    @field_serializer("transaction_time", "since", "updated_at")
    def _instants(self, value: datetime | None) -> str | None:
        return None if value is None else _instant(value)

    @model_validator(mode="after")
    def _this_contract(self) -> ExportJob:
        if self.metadata.event_type != self.DETAIL_TYPE or self.metadata.version != self.VERSION:
            raise ValueError(
                f"not a {self.DETAIL_TYPE} {self.VERSION} record ({self.metadata.event_type} {self.metadata.version})"
            )
        return self

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> ExportJob:
        return cls.model_validate_json(raw)

    @staticmethod
    def job_metadata(job_id: str, requested_ms: int) -> EventMetadata:
        return EventMetadata(
            event_type=ExportJob.DETAIL_TYPE,
            version=ExportJob.VERSION,
            event_id=job_id,
            occurred_at=instant_of(requested_ms),
        )
