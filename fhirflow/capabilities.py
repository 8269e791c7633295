"""The CapabilityStatement (http://hl7.org/fhir/R4/capabilitystatement.html), generated.

What it claims comes from the route table (the interactions that really have a handler)
and from the settings (update-as-create, limits), so it cannot drift from the server.
"""

from __future__ import annotations

from typing import Any

from fhirflow import __version__
from fhirflow.routes import ROUTE_TABLE, RouteTable
from fhirflow.settings import Settings

_TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
_SYSTEM_INTERACTIONS = ("transaction", "batch", "search-system", "history-system")


def capability_statement(
    settings: Settings,
    *,
    base_url: str,
    resource_types: frozenset[str],
    routes: RouteTable = ROUTE_TABLE,
    published: str = "2026-11-22",
) -> dict[str, Any]:
    implemented = {r.interaction for r in routes.routes}
    if "transaction" in implemented:
        implemented.add("batch")  # one route, POST [base], serves both (http.html#transaction)
    type_interactions = [{"code": code} for code in _TYPE_INTERACTIONS if code in implemented]
    resources = [
        {
            "type": rtype,
            "interaction": type_interactions,
            "versioning": "versioned-update",
            "readHistory": "vread" in implemented,
            "updateCreate": settings.update_create,
            "conditionalCreate": False,
            "conditionalRead": "full-support" if "read" in implemented else "not-supported",
            "conditionalUpdate": False,
            "conditionalDelete": "not-supported",
        }
        for rtype in sorted(resource_types)
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "fhirflow",
        "kind": "instance",
        "software": {"name": "fhirflow", "version": __version__},
        "implementation": {"description": "fhirflow FHIR R4 server", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json", "application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "resource": resources,
                "interaction": [{"code": code} for code in _SYSTEM_INTERACTIONS if code in implemented],
            }
        ],
    }
