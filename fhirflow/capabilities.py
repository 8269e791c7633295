"""The CapabilityStatement (http://hl7.org/fhir/R4/capabilitystatement.html), generated.

What it claims comes from the route table (the interactions that really have a handler)
and from the settings (update-as-create, limits), so it cannot drift from the server. The limits
a client must respect are in an extension on ``rest`` (:data:`LIMITS_EXTENSION`): R4 has no
element for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

from fhirflow import __version__
from fhirflow.routes import ROUTE_TABLE, RouteTable
from fhirflow.settings import Settings

if TYPE_CHECKING:
    from fhirflow.reindex_ports import CustomParam

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
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata"
_EXPORT_OPERATIONS = {
    # interaction → (resource type or None for rest.operation, OperationDefinition canonical)
    "export": (None, f"{BULK_DATA}/OperationDefinition/export"),
    "export-patient": ("Patient", f"{BULK_DATA}/OperationDefinition/patient-export"),
    "export-group": ("Group", f"{BULK_DATA}/OperationDefinition/group-export"),
}
REINDEX_OPERATION = "https://fhirflow.dev/fhir/OperationDefinition/reindex"
"""``$reindex`` (system and type level; fhirflow_search.reindex): no standard definition exists."""
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport"
TOPIC_EXTENSION = f"{BACKPORT}/StructureDefinition/capabilitystatement-subscriptiontopic-canonical"
TOPIC_BASE = "https://fhirflow.dev/fhir/SubscriptionTopic/"
"""The built-in topic of each type (fhirflow_subscriptions.spec): its create, update and delete."""
_SUBSCRIPTION_OPERATIONS = {
    "subscription-status": ("status", f"{BACKPORT}/OperationDefinition/backport-subscription-status"),
    "subscription-events": ("events", f"{BACKPORT}/OperationDefinition/backport-subscription-events"),
}
CONDITIONAL_PATCH_EXTENSION = (
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-CapabilityStatement.rest.resource.conditionalPatch"
)


def capability_statement(
    settings: Settings,
    *,
    base_url: str,
    resource_types: frozenset[str],
    routes: RouteTable = ROUTE_TABLE,
    published: str = "2026-11-22",
    custom_params: Sequence[CustomParam] = (),
) -> dict[str, Any]:
    """``custom_params``: the tenant's runtime SearchParameters; the searchable ones are listed."""
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
            # If-None-Exist is part of create; the others have routes of their own (PUT|DELETE|PATCH [type]?...).
            "conditionalCreate": "create" in implemented,
            "conditionalRead": "full-support" if "read" in implemented else "not-supported",
            "conditionalUpdate": "conditional-update" in implemented,
            "conditionalDelete": (
                ("multiple" if settings.conditional_delete_max > 1 else "single")
                if "conditional-delete" in implemented
                else "not-supported"
            ),
            **_conditional_patch("conditional-patch" in implemented),
            **(_search_metadata(rtype) if "search-type" in implemented else {}),
        }
        for rtype in sorted(resource_types)
    ]
    for resource in resources:
        operations = _operations(implemented, resource["type"])
        if operations:
            resource["operation"] = operations
    if "subscription-status" in implemented:
        _subscription_topics(resources, implemented)
    system_operations = _operations(implemented, None)
    if "reindex" in implemented:
        system_operations.append({"name": "reindex", "definition": REINDEX_OPERATION})
    common_params = _common_search_params() if "search-system" in implemented else []
    if "search-type" in implemented:
        common_params = _with_custom(resources, common_params, custom_params)
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
        **({"instantiates": [f"{BULK_DATA}/CapabilityStatement/bulk-data"]} if system_operations else {}),
        "rest": [
            {
                "mode": "server",
                "extension": [_limits(settings, respond_async="async-status" in implemented)],
                **_security(settings),
                "resource": resources,
                "interaction": [{"code": code} for code in _SYSTEM_INTERACTIONS if code in implemented],
                **({"searchParam": common_params} if common_params else {}),
                **({"operation": system_operations} if system_operations else {}),
            }
        ],
    }


def _with_custom(
    resources: list[dict[str, Any]], common: list[dict[str, Any]], custom: Sequence[CustomParam]
) -> list[dict[str, Any]]:
    """Add the searchable runtime parameters to their types' ``searchParam`` (those on
    Resource/DomainResource to ``rest.searchParam``, returned); the cached lists stay untouched."""
    searchable = [p for p in custom if p.searchable]
    if not searchable:
        return common
    by_type = {resource["type"]: resource for resource in resources}
    common = list(common)
    for param in sorted(searchable, key=lambda p: (p.base, p.code)):
        entry = _search_param(param.code, param.url, param.type)
        if param.base in ("Resource", "DomainResource"):
            common.append(entry)
        elif param.base in by_type:
            resource = by_type[param.base]
            resource["searchParam"] = [*resource.get("searchParam", []), entry]
    return common


def _subscription_topics(resources: list[dict[str, Any]], implemented: set[str]) -> None:
    """Backport IG: each type's built-in topic on its resource entry, ``$status``/``$events`` on Subscription."""
    for resource in resources:
        topic = {"url": TOPIC_EXTENSION, "valueCanonical": TOPIC_BASE + resource["type"]}
        resource["extension"] = [*resource.get("extension", []), topic]
        if resource["type"] == "Subscription":
            resource["operation"] = [
                *resource.get("operation", []),
                *(
                    {"name": name, "definition": url}
                    for i, (name, url) in _SUBSCRIPTION_OPERATIONS.items()
                    if i in implemented
                ),
            ]


_RESOURCE_OPERATIONS = {
    # interaction → (operation name, R4 OperationDefinition), on every resource type
    "validate": ("validate", "http://hl7.org/fhir/OperationDefinition/Resource-validate"),
    "meta": ("meta", "http://hl7.org/fhir/OperationDefinition/Resource-meta"),
    "meta-add": ("meta-add", "http://hl7.org/fhir/OperationDefinition/Resource-meta-add"),
    "meta-delete": ("meta-delete", "http://hl7.org/fhir/OperationDefinition/Resource-meta-delete"),
}
PATIENT_EVERYTHING = "http://hl7.org/fhir/OperationDefinition/Patient-everything"


def _operations(implemented: set[str], rtype: str | None) -> list[dict[str, str]]:
    """Bulk data export's operations (bulk data IG STU2), and the R4 operations on resources
    (Resource-validate, Resource-meta*, Patient-everything), where the route table has them."""
    found = [
        {"name": "export", "definition": definition}
        for interaction, (on, definition) in _EXPORT_OPERATIONS.items()
        if on == rtype and interaction in implemented
    ]
    if rtype is not None:
        found += [
            {"name": name, "definition": definition}
            for interaction, (name, definition) in _RESOURCE_OPERATIONS.items()
            if interaction in implemented
        ]
    if rtype == "Patient" and "everything" in implemented:
        found.append({"name": "everything", "definition": PATIENT_EVERYTHING})
    return found


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


def _conditional_patch(supported: bool) -> dict[str, Any]:
    """R4 has no ``conditionalPatch`` element (R5 added it): the official R5 cross-version
    extension says it (http://hl7.org/fhir/versions.html#extensions)."""
    if not supported:
        return {}
    return {"extension": [{"url": CONDITIONAL_PATCH_EXTENSION, "valueBoolean": True}]}


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
