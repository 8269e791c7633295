"""The CapabilityStatement (http://hl7.org/fhir/R4/capabilitystatement.html), generated.

What it claims comes from the route table (the interactions that really have a handler)
and from the settings (update-as-create, limits), so it cannot drift from the server. The limits
a client must respect are in an extension on ``rest`` (:data:`LIMITS_EXTENSION`): R4 has no
element for them.
"""

from __future__ import annotations

from functools import cache, lru_cache
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
LIMITS_EXTENSION = "https://fhirflow.dev/fhir/StructureDefinition/server-limits"


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
            **(_search_metadata(rtype) if "search-type" in implemented else {}),
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
                "extension": [_limits(settings, respond_async="async-status" in implemented)],
                **_security(settings),
                "resource": resources,
                "interaction": [{"code": code} for code in _SYSTEM_INTERACTIONS if code in implemented],
                **({"searchParam": _common_search_params()} if "search-system" in implemented else {}),
            }
        ],
    }


@lru_cache(maxsize=1)
def _reverse_includes() -> dict[str, tuple[str, ...]]:
    """Target type → the ``Source:param`` pairs whose references may point at it."""
    from fhirflow.searchparams.registry import default_registry

    registry = default_registry()
    out: dict[str, list[str]] = {}
    for source in sorted(registry.resource_types):
        for code, param in sorted(registry.params_for(source).items()):
            if param.type == "reference":
                for target in param.targets or ():
                    out.setdefault(target, []).append(f"{source}:{code}")
    return {target: tuple(pairs) for target, pairs in out.items()}


@cache
def _search_metadata(rtype: str) -> dict[str, Any]:
    """``searchParam``, ``searchInclude`` and ``searchRevInclude`` of one type, from the registry
    (search parameters common to all types are listed once, on ``rest``)."""
    from fhirflow.searchparams.registry import default_registry

    registry = default_registry()
    own = registry.params.get(rtype, {})
    params = [_search_param(p.code, p.url, p.type) for _, p in sorted(own.items())]
    includes = [f"{rtype}:{code}" for code, p in sorted(own.items()) if p.type == "reference"]
    found = {
        "searchInclude": ["*", *includes] if includes else [],
        "searchRevInclude": list(_reverse_includes().get(rtype, ())),
        "searchParam": params,
    }
    return {key: value for key, value in found.items() if value}  # R4 JSON allows no empty arrays


@lru_cache(maxsize=1)
def _common_search_params() -> list[dict[str, Any]]:
    from fhirflow.searchparams.registry import COMMON_BASES, default_registry

    registry = default_registry()
    found = {code: p for base in COMMON_BASES for code, p in registry.params.get(base, {}).items()}
    return [_search_param(code, p.url, p.type) for code, p in sorted(found.items()) if code != "_query"]


def _search_param(code: str, url: str, ptype: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": code, "type": ptype}
    if url:
        out["definition"] = url
    return out


def _limits(settings: Settings, *, respond_async: bool) -> dict[str, Any]:
    """The configurable limits (fhirflow.settings), so that a client can size its requests."""
    values: list[tuple[str, int | bool]] = [
        ("maxBundleEntries", settings.max_bundle_entries),
        ("maxRequestBytes", settings.max_body_bytes),
        ("respondAsync", respond_async),
    ]
    if settings.store == "dynamodb":
        # A transaction is one atomic write up to ``transactionDirectMaxItems`` items; larger ones
        # commit through the multi-batch protocol, ``transactionBatchItems`` versions per batch,
        # and are rolled back if not committed within ``transactionTimeoutSeconds``.
        values += [
            ("transactionDirectMaxItems", min(settings.transaction_direct_max_items, 100)),
            ("transactionBatchItems", settings.transaction_batch_items),
            ("transactionTimeoutSeconds", settings.transaction_timeout_seconds),
        ]
    return {
        "url": LIMITS_EXTENSION,
        "extension": [
            {"url": name, ("valueBoolean" if isinstance(value, bool) else "valueInteger"): value}
            for name, value in values
        ],
    }


def _security(settings: Settings) -> dict[str, Any]:
    """``rest.security`` when authorization is on: SMART service and oauth-uris (fhirflow.authz.discovery)."""
    if settings.auth == "off":
        return {}
    from fhirflow.authz.discovery import capability_security

    security = capability_security(settings)
    return {"security": security} if security else {}
