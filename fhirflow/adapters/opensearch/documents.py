"""An :class:`IndexDocument` as the OpenSearch document of the search index (``mappings.py``).

One document per resource, keyed ``{tenant}/{type}/{id}`` (:func:`document_id`), written with
``version_type=external`` and the resource's version: OpenSearch then refuses (409) a version
that is not newer than the one it holds, so replayed or reordered change events can never
move the index backwards (the SearchIndex port's contract). A deletion is a tombstone document
at the deleting version (a real delete would forget the version after ``index.gc_deletes``).

Numbers and quantities are written as the bounds matching compares against (``low``/``high``):
a stated value is its own bounds (``lt100`` means less than *exactly* 100, search.html#number;
only the search value's precision widens ``eq``), a Quantity with a comparator (``<5``) and a
Range are intervals, infinite ends being ±:data:`MAX_DOUBLE`. ``value`` is the stated value,
used for sorting. Key order is fixed so that documents (and golden files) are deterministic.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from fhirflow.adapters.opensearch.mappings import MAX_COMPONENTS, MAX_KEYWORD, PATHS
from fhirflow.searchparams.content import content_text
from fhirflow.searchparams.extract import IndexDocument
from fhirflow.searchparams.values import (
    CompositeValue,
    DateValue,
    IndexValue,
    NumberValue,
    PositionValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    as_local_reference,
)

MAX_DOUBLE = 1.7976931348623157e308  # an open end of a Range or comparator


def document_id(tenant: str, type_: str, id_: str) -> str:
    return f"{tenant}/{type_}/{id_}"


def _kw(text: str | None) -> str | None:
    return text[:MAX_KEYWORD] if text is not None else None


def _double(value: Decimal) -> float:
    if value.is_infinite():
        return MAX_DOUBLE if value > 0 else -MAX_DOUBLE
    return float(value)


def _compact(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None and v != []}


def _bounds(value: Decimal | None, low: Decimal, high: Decimal) -> tuple[float, float]:
    """What matching compares: the stated value exactly, or the interval of a comparator/Range."""
    if value is None:
        return _double(low), _double(high)
    if low.is_infinite():
        return -MAX_DOUBLE, float(value)
    if high.is_infinite():
        return float(value), MAX_DOUBLE
    return float(value), float(value)


def _token(value: TokenValue) -> dict[str, Any]:
    sc = f"{value.system}|{value.code}" if value.system is not None and value.code is not None else None
    return _compact(
        {
            "system": _kw(value.system),
            "code": _kw(value.code),
            "sc": _kw(sc),
            "text": _kw(value.text),
            "of_type": [f"{s or ''}|{c or ''}" for s, c in value.of_type],
        }
    )


def _reference(value: ReferenceValue, base_url: str | None) -> dict[str, Any]:
    """``ref``/``type``/``id`` only for references to this server: relative ones, and absolute
    ones under ``base_url``; others are matched by ``url`` alone (search.html#reference)."""
    value = as_local_reference(value)
    local = value.type is not None and value.id is not None and (value.url is None or _under(value.url, base_url))
    return _compact(
        {
            "ref": f"{value.type}/{value.id}" if local else None,
            "type": value.type if local else None,
            "id": value.id if local or (value.type is None and value.url is None) else None,
            "version": value.version,
            "url": _kw(value.url),
            "isys": _kw(value.identifier_system),
            "ival": _kw(value.identifier_value),
        }
    )


def _under(url: str, base_url: str | None) -> bool:
    return base_url is not None and url.startswith(base_url.rstrip("/") + "/")


def value_fields(value: IndexValue, base_url: str | None = None) -> dict[str, Any]:
    """The fields of one value (without the parameter code)."""
    if isinstance(value, StringValue):
        return {"exact": _kw(value.exact), "norm": _kw(value.normalized)}
    if isinstance(value, TokenValue):
        return _token(value)
    if isinstance(value, DateValue):
        return {"start": value.low, "end": value.high}
    if isinstance(value, QuantityValue):
        low, high = _bounds(value.value, value.low, value.high)
        number = {"value": None if value.value is None else float(value.value), "low": low, "high": high}
        return _compact({**number, "system": _kw(value.system), "code": _kw(value.code), "unit": _kw(value.unit)})
    if isinstance(value, NumberValue):
        low, high = _bounds(value.value, value.low, value.high)
        return _compact({"value": None if value.value is None else float(value.value), "low": low, "high": high})
    if isinstance(value, ReferenceValue):
        return _reference(value, base_url)
    if isinstance(value, UriValue):
        return {"uri": _kw(value.value)}
    if isinstance(value, PositionValue):
        return {"point": {"lat": float(value.latitude), "lon": float(value.longitude)}}
    return {f"c{i}": value_fields(c, base_url) for i, c in enumerate(value.components[:MAX_COMPONENTS])}


def _path_of(value: IndexValue) -> str:
    if isinstance(value, StringValue):
        return PATHS["string"]
    if isinstance(value, TokenValue):
        return PATHS["token"]
    if isinstance(value, DateValue):
        return PATHS["date"]
    if isinstance(value, QuantityValue):  # before NumberValue: both are tuples, but types differ
        return PATHS["quantity"]
    if isinstance(value, NumberValue):
        return PATHS["number"]
    if isinstance(value, ReferenceValue):
        return PATHS["reference"]
    if isinstance(value, UriValue):
        return PATHS["uri"]
    if isinstance(value, PositionValue):
        return PATHS["special"]
    return PATHS["composite"]


def typed_values(values: dict[str, list[IndexValue]], base_url: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Nested path → value documents ``{"p": code, ...fields}``, parameters in code order.

    A token without code and system (a CodeableConcept.text) is kept: ``:text`` matches it.
    Composites with more components than the mapping holds are left out (none in R4)."""
    out: dict[str, list[dict[str, Any]]] = {path: [] for path in PATHS.values()}
    for code in sorted(values):
        for value in values[code]:
            if isinstance(value, CompositeValue) and len(value.components) > MAX_COMPONENTS:
                continue
            fields = value_fields(value, base_url)
            if fields:
                out[_path_of(value)].append({"p": code, **fields})
    return {path: docs for path, docs in out.items() if docs}


def build_document(
    doc: IndexDocument,
    *,
    tenant: str,
    version: int,
    last_updated: int,
    resource: dict[str, Any] | None = None,
    base_url: str | None = None,
) -> dict[str, Any]:
    """The OpenSearch ``_source`` for one current resource version."""
    assert doc.id is not None, "an indexed resource has an id"
    body: dict[str, Any] = {
        "tenant": tenant,
        "type": doc.resource_type,
        "id": doc.id,
        "key": f"{doc.resource_type}/{doc.id}",
        "version": version,
        "lastUpdated": last_updated,
        "deleted": False,
        "compartments": sorted(f"{ctype}/{cid}" for ctype, cid in doc.compartments),
    }
    if doc.text:
        body["narrative"] = doc.text
    if resource is not None:
        content = content_text(resource)
        body["content"] = " ".join(filter(None, (doc.text, content)))
    body.update(typed_values(doc.values, base_url))
    if resource is not None:
        body["resource"] = resource
    return body


def tombstone(*, tenant: str, type_: str, id_: str, version: int, last_updated: int) -> dict[str, Any]:
    """What a deletion leaves: enough to hold the version, matched by no search."""
    return {
        "tenant": tenant,
        "type": type_,
        "id": id_,
        "key": f"{type_}/{id_}",
        "version": version,
        "lastUpdated": last_updated,
        "deleted": True,
    }
