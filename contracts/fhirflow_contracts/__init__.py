"""Event and command contracts between fhirflow's services and with integrators (DESIGN.md §3).

A leaf package: it imports pydantic and nothing else of fhirflow, so any consumer (a
subscriptions Lambda, an integrator's own code) can depend on it alone. Every message carries
``metadata.version``; within a major version changes are additive only, and
``tests/unit/test_contracts.py`` compares each model's JSON Schema with the snapshot committed
in ``schemas/`` so that a breaking change fails the build.
"""

from fhirflow_contracts.events import (
    EVENT_SOURCE,
    ChangeOperation,
    EventMetadata,
    ResourceChanged,
    change_event_id,
)
from fhirflow_contracts.export import (
    ExportAdmission,
    ExportCheckpoint,
    ExportFile,
    ExportIssue,
    ExportJob,
    ExportOwner,
    StartExport,
    TypeAccess,
    TypeFilter,
    instant_of,
    ms_of,
)
from fhirflow_contracts.reindex import AdvanceReindex

__all__ = [
    "CONTRACTS",
    "EVENT_SOURCE",
    "AdvanceReindex",
    "ChangeOperation",
    "EventMetadata",
    "ExportAdmission",
    "ExportCheckpoint",
    "ExportFile",
    "ExportIssue",
    "ExportJob",
    "ExportOwner",
    "ResourceChanged",
    "StartExport",
    "TypeAccess",
    "TypeFilter",
    "change_event_id",
    "instant_of",
    "ms_of",
]

CONTRACTS = (ResourceChanged, StartExport, ExportJob, AdvanceReindex)
"""Every published contract model (each has a committed JSON Schema snapshot)."""
