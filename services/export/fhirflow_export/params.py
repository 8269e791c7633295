"""The kick-off request's parameters (https://hl7.org/fhir/uv/bulkdata/STU2/export.html#query-parameters).

- ``_outputFormat``: ``application/fhir+ndjson`` (the default), ``application/ndjson`` or ``ndjson``;
  anything else is a 400 (this server writes NDJSON only).
- ``_since``: a FHIR instant; resources last updated at or after it (as ``_since`` in history).
- ``_type``: comma-separated and/or repeated resource types; an unknown type is a 400. In a Patient-
  or Group-level export, types outside the Patient compartment are exported as the resources the
  exported ones reference (Organization, Practitioner...: the IG's "MAY also be returned"); naming
  *only* such types is a 400 (export.html: "asks for only resource types that are outside the
  Patient Compartment"), or with ``Prefer: handling=lenient`` they are ignored and reported in the
  manifest's error file.
- ``_typeFilter``: FHIR search queries (``Observation?category=laboratory``), comma-separated and/or
  repeated; a resource of a type that has filters is exported when it matches any of them.
- Anything else the IG defines but this server does not do (``_elements``, ``patient``,
  ``includeAssociatedData``, ``_until``...) and any unknown parameter: 400 under
  ``Prefer: handling=strict``, otherwise ignored and reported in the manifest's error file.

The POST form of the kick-off carries the same parameters in a ``Parameters`` resource.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from fhirflow import timefmt
from fhirflow.bodies import operation_parameters
from fhirflow.errors import BadRequest, Issue
from fhirflow.model import FhirRequest
from fhirflow.query.parser import parse
from fhirflow.search_ports import SearchEngine
from fhirflow.searchparams.registry import Registry

NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
KNOWN = frozenset({"_outputFormat", "_since", "_type", "_typeFilter"})
NOT_SUPPORTED = {
    "_elements": "_elements is not supported by this server's export",
    "patient": "the 'patient' parameter is not supported by this server's export",
    "includeAssociatedData": "includeAssociatedData is not supported by this server's export",
    "_until": "_until is not supported by this server's export",
    "organizeOutputBy": "organizeOutputBy is not supported by this server's export",
    "allowPartialManifests": "allowPartialManifests is not supported by this server's export",
}

_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})", re.ASCII)
_NEXT_QUERY = re.compile(r",(?=[A-Z][A-Za-z]*\?)")
"""Where one ``_typeFilter`` query ends and the next begins: a comma before ``Type?``; commas inside
a query (a search parameter's "or" values) are followed by a value, not by a type and ``?``."""
_RESULT_PARAMS = ("_include", "_revinclude", "_sort", "_count", "_elements", "_summary", "_total", "_contained")


@dataclass(frozen=True, slots=True)
class ExportParameters:
    output_format: str = NDJSON
    since_ms: int | None = None
    types: tuple[str, ...] | None = None
    """None: ``_type`` was not given (every type the level and the token allow)."""
    referenced: tuple[str, ...] = ()
    """Patient/Group level: the named types outside the Patient compartment (exported as referenced)."""
    type_filters: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    issues: list[Issue] = field(default_factory=list)
    """What lenient handling ignored."""


def kickoff_pairs(request: FhirRequest) -> list[tuple[str, str]]:
    """The parameters: the URL's, and for POST those of its ``Parameters`` body."""
    return operation_parameters(request, operation="A POST kick-off", with_body=request.method == "POST")


def parse_parameters(
    pairs: Sequence[tuple[str, str]],
    *,
    strict: bool,
    registry: Registry,
    engine: SearchEngine,
    patient_level: bool,
    lenient: bool = False,
) -> ExportParameters:
    """Check every parameter; 400 for what is wrong, and (strict) for what is not supported.
    ``lenient``: the request said ``Prefer: handling=lenient`` (the IG's condition for ignoring
    a ``_type`` of only types outside the Patient compartment)."""
    issues: list[Issue] = []

    def refuse(name: str, message: str) -> None:
        if strict:
            raise BadRequest(message, expression=name)
        issues.append(Issue("not-supported", f"{message}; ignored", (name,), "warning"))

    output_format = NDJSON
    since_ms: int | None = None
    types: list[str] | None = None
    filters: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    seen: set[str] = set()
    for name, value in pairs:
        if name in ("_outputFormat", "_since") and name in seen:
            raise BadRequest(f"{name} may appear only once", expression=name)
        seen.add(name)
        if name == "_outputFormat":
            if value.strip().lower() not in OUTPUT_FORMATS:
                raise BadRequest(
                    f"_outputFormat '{value[:64]}' is not supported; this server writes {NDJSON}",
                    expression="_outputFormat",
                )
        elif name == "_since":
            since_ms = _since(value)
        elif name == "_type":
            types = [*(types or []), *_types(value, registry)]
        elif name == "_typeFilter":
            filters += _type_filters(value, registry, patient_level=patient_level)
        elif name in NOT_SUPPORTED:
            refuse(name, NOT_SUPPORTED[name])
        else:
            refuse(name, f"'{name[:64]}' is not a bulk data export parameter")
    chosen = tuple(dict.fromkeys(types)) if types is not None else None
    referenced: tuple[str, ...] = ()
    if patient_level and chosen is not None:
        inside = tuple(t for t in chosen if in_patient_compartment(registry, t))
        referenced = tuple(t for t in chosen if t not in inside)
        if referenced and not inside:
            message = (
                f"_type names only types outside the Patient compartment ({', '.join(referenced)}), "
                "so a Patient- or Group-level export has nothing to start from"
            )
            if not lenient:
                raise BadRequest(message, expression="_type")
            issues.append(
                Issue("not-supported", f"{message}; ignored (Prefer: handling=lenient)", ("_type",), "warning")
            )
            referenced = ()
        chosen = inside
    admitted: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    for rtype, params in filters:
        if chosen is not None and rtype not in chosen:
            refuse("_typeFilter", f"_typeFilter names {rtype}, which _type does not ask for")
            continue
        if _check_filter(rtype, params, strict=strict, engine=engine, refuse=refuse, issues=issues):
            admitted.append((rtype, params))
    return ExportParameters(output_format, since_ms, chosen, referenced, tuple(admitted), issues)


def in_patient_compartment(registry: Registry, rtype: str) -> bool:
    return rtype == "Patient" or bool(registry.compartment_params("Patient", rtype))


def patient_compartment_types(registry: Registry) -> tuple[str, ...]:
    """The types a Patient- or Group-level export covers: those of the Patient compartment."""
    return tuple(sorted(t for t in registry.resource_types if in_patient_compartment(registry, t)))


def _since(value: str) -> int:
    if not _INSTANT.fullmatch(value.strip()):
        raise BadRequest(
            f"_since '{value[:64]}' is not a FHIR instant (e.g. 2024-01-31T12:00:00Z)", expression="_since"
        )
    return timefmt.datetime_range(value, name="_since")[0]


def _types(value: str, registry: Registry) -> list[str]:
    out: list[str] = []
    for raw in value.split(","):
        rtype = raw.strip()
        if not rtype:
            continue
        _check_type(rtype, registry, patient_level=False, name="_type")
        out.append(rtype)
    return out


def _check_type(rtype: str, registry: Registry, *, patient_level: bool, name: str) -> None:
    if not registry.is_resource_type(rtype):
        raise BadRequest(f"{name}: '{rtype[:64]}' is not a FHIR R4 resource type this server knows", expression=name)
    if patient_level and not in_patient_compartment(registry, rtype):
        raise BadRequest(
            f"{name}: {rtype} is not in the Patient compartment, so a Patient- or Group-level export has none",
            expression=name,
        )


def _type_filters(
    value: str, registry: Registry, *, patient_level: bool
) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    out: list[tuple[str, tuple[tuple[str, str], ...]]] = []
    for raw in _NEXT_QUERY.split(value):
        query = raw.strip()
        if not query:
            continue
        rtype, question, rest = query.partition("?")
        if not question or not rest:
            raise BadRequest(
                f"_typeFilter '{query[:100]}' is not a search query of the form Type?param=value",
                expression="_typeFilter",
            )
        _check_type(rtype, registry, patient_level=patient_level, name="_typeFilter")
        out.append((rtype, tuple(parse_qsl(rest, keep_blank_values=True))))
    return out


def _check_filter(
    rtype: str,
    params: tuple[tuple[str, str], ...],
    *,
    strict: bool,
    engine: SearchEngine,
    refuse: Any,
    issues: list[Issue],
) -> bool:
    """Parse the query as the worker will (malformed values are a 400 either way); False when
    lenient handling left nothing of it."""
    for name, _ in params:
        if name in _RESULT_PARAMS:
            refuse("_typeFilter", f"_typeFilter {rtype}: '{name}' does not select resources")
    query = parse(rtype, [p for p in params if p[0] not in _RESULT_PARAMS], strict=strict)
    issues.extend(query.ignored)
    kept = 0
    for criterion in query.criteria:
        reason = engine.unsupported(criterion)
        if reason is None:
            kept += 1
        else:
            refuse("_typeFilter", f"_typeFilter {rtype}: {reason}")
    if not kept:
        refuse("_typeFilter", f"_typeFilter {rtype} has no search criterion this server can evaluate")
    return kept > 0


def query_pairs(params: Sequence[Sequence[str]]) -> list[tuple[str, str]]:
    """A stored filter's parameters as the worker parses them (selection only)."""
    return [(str(p[0]), str(p[1])) for p in params if p[0] not in _RESULT_PARAMS]
