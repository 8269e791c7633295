"""``AdvanceReindex`` v1: the reindex queue's message (DESIGN.md §4, runtime SearchParameters).

A ``$reindex`` kick-off and every chunk of its job that ends before the job does put one on the
queue: it names the job and the revision of the job record the chunk must start from, never
its content. The revision is what makes a delivery idempotent: a chunk runs only while the
stored job is still at that revision, so a redelivered message (SQS is at least once) finds the
job moved on and does nothing, and two deliveries can never both advance it.
"""

from __future__ import annotations

import uuid
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhirflow_contracts.events import EventMetadata
from fhirflow_contracts.export import instant_of

_COMMAND_NAMESPACE = uuid.UUID("5b0e6c0d-2f7a-4c39-8f0e-1d4b7a9e3c21")


class AdvanceReindex(BaseModel):
    """Advance reindex job ``jobId`` of ``tenant`` by one chunk, from job revision ``revision``."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")

    DETAIL_TYPE: ClassVar[str] = "AdvanceReindex"
    VERSION: ClassVar[str] = "v1"

    metadata: EventMetadata
    tenant: str
    job_id: str = Field(alias="jobId")
    revision: int = Field(ge=0, description="The job record's revision this chunk starts from.")

    @model_validator(mode="after")
    def _this_contract(self) -> AdvanceReindex:
        if self.metadata.event_type != self.DETAIL_TYPE or self.metadata.version != self.VERSION:
            raise ValueError(
                f"not a {self.DETAIL_TYPE} {self.VERSION} message ({self.metadata.event_type} {self.metadata.version})"
            )
        return self

    @classmethod
    def of(cls, *, tenant: str, job_id: str, revision: int, now_ms: int) -> AdvanceReindex:
        """The command for the chunk of ``job_id`` at ``revision``; a resend of it has the same event id."""
        return cls(
            metadata=EventMetadata(
                event_type=cls.DETAIL_TYPE,
                version=cls.VERSION,
                event_id=str(uuid.uuid5(_COMMAND_NAMESPACE, f"{tenant}\x1f{job_id}\x1f{revision}")),
                occurred_at=instant_of(now_ms),
            ),
            tenant=tenant,
            job_id=job_id,
            revision=revision,
        )

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)
