"""Writing a resource's search rows: delete-then-insert of its current version's values.

The index writer (:class:`fhirflow.adapters.sqlite.index.SqliteSearchIndex`) calls
:func:`index_resource` inside its own transaction, after its version guard passed, so the rows
always describe the version the index holds. Building the rows (:func:`prepare_resource`: the
FHIRPath extraction, most of the work) needs no database, so a writer can do it before it takes
SQLite's write lock and hand the result in.

Each value becomes one row in the table of its type (:mod:`.schema`); a composite value becomes
one row per component, in the component's table, under ``{code}${n}`` and tied together by
``grp``. Two kinds of token rows serve reference and identifier modifiers: ``{code}:identifier``
holds Reference.identifier (reference ``:identifier``) and ``{code}:of-type`` holds
Identifier.type codings with the identifier's value in ``text`` (token ``:of-type``).
``_id`` and ``_lastUpdated`` are columns of ``search_resource``, not rows.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from decimal import Decimal
from functools import lru_cache
from typing import Any

from fhirflow.adapters.sqlite.search.schema import VALUE_TABLES
from fhirflow.searchparams.content import content_text
from fhirflow.searchparams.extract import IndexDocument, index_document
from fhirflow.searchparams.registry import Registry, SearchParam, default_registry
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

RESOURCE_COLUMNS = frozenset(("_id", "_lastUpdated"))
"""Parameters answered from ``search_resource`` itself."""
IDENTIFIER_SUFFIX = ":identifier"
OF_TYPE_SUFFIX = ":of-type"

_COLUMNS = {
    "search_string": "tenant, type, param, norm, exact, grp",
    "search_token": "tenant, type, param, system, code, text, grp",
    "search_date": "tenant, type, param, low, high, grp",
    "search_number": "tenant, type, param, low, high, grp",
    "search_quantity": "tenant, type, param, low, high, system, code, unit, grp",
    "search_reference": "tenant, type, param, target_type, target_id, version, url, grp",
    "search_uri": "tenant, type, param, value, grp",
    "search_position": "tenant, type, param, latitude, longitude, grp",
    "search_compartment": "tenant, comp_type, comp_id, type",
}
_INSERT = {
    table: f"INSERT INTO {table} (rid, seq, {columns}) VALUES (?, ?{', ?' * (columns.count(',') + 1)})"
    for table, columns in _COLUMNS.items()
}
STORED_AS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Observation", "combo-code"): ("code", "component-code"),
    ("Observation", "combo-value-quantity"): ("value-quantity", "component-value-quantity"),
    ("Observation", "combo-value-concept"): ("value-concept", "component-value-concept"),
    ("Observation", "combo-data-absent-reason"): ("data-absent-reason", "component-data-absent-reason"),
    ("Observation", "combo-code-value-quantity"): ("code-value-quantity", "component-code-value-quantity"),
    ("Observation", "combo-code-value-concept"): ("code-value-concept", "component-code-value-concept"),
    **{(rtype, "phonetic"): ("name",) for rtype in ("Patient", "Person", "Practitioner", "RelatedPerson")},
}
"""Official parameters whose values are exactly those of others of the same base (R4 defines
``phonetic`` as ``X.name``, and each ``combo-*`` as the union of the plain and the ``component-``
parameter): their rows would repeat those rows, so none are written and queries read the others'
(:func:`stored_codes`). ``tests/unit/test_sqlite_search_aliases.py`` checks each against the
registry's expressions and compares results with and without."""


JOINED: dict[tuple[str, str], tuple[str, str]] = {
    ("Observation", f"code-value-{kind}"): ("code", f"value-{kind}") for kind in ("quantity", "concept", "date")
}
"""Composite parameters rooted at the resource itself whose two components are what two plain
parameters of it hold: an Observation's ``code-value-quantity`` values are every (coded ``code``
token, ``value-quantity``) pair of it, each part exactly the plain parameter's values (the
plain ``value-quantity`` also names SampledData, for which no quantity is indexed; not so
``code-value-string``: the plain ``value-string`` also holds a CodeableConcept's text). No rows are
written for them: a query joins the two plain parameters' rows of one resource, instead of the
``$0``/``$1`` rows of one ``grp`` (:func:`.criteria.composite_probe`). Two of an Observation's
~11 rows. ``tests/search/test_aliases.py`` checks the equality on every fixture Observation."""


@lru_cache(maxsize=1024)
def aliased_codes(registry: Registry, resource_type: str) -> frozenset[str]:
    """The parameters of ``resource_type`` stored as others (:data:`STORED_AS`, :data:`JOINED`):
    neither extracted nor written. (A tenant's SearchParameter cannot take an official code, so these are always
    the official parameters; the check keeps it so should that change.)"""
    params = registry.params_for(resource_type)
    return frozenset(
        code
        for (rtype, code) in (*STORED_AS, *JOINED)
        if rtype == resource_type and code in params and not params[code].custom
    )


_ADDRESS_PARTS = ("address-city", "address-country", "address-postalcode", "address-state")
SUBSUMES: dict[tuple[str, str], tuple[str, ...]] = {
    **{(rtype, "name"): ("family", "given") for rtype in ("Patient", "Practitioner")},
    **{
        (rtype, "address"): _ADDRESS_PARTS
        for rtype in ("InsurancePlan", "Location", "Organization", "Patient", "Person", "Practitioner", "RelatedPerson")
    },
}
"""Official string parameters whose values include all of others' (search.html#string: ``name``
matches any part of a HumanName, so ``Patient.name`` ⊇ ``Patient.name.family``; likewise an
Address and its city, state, postal code and country). A value the smaller parameters have is
written only under them, and queries read the parameter together with those
(:func:`stored_codes`): a Patient's ``name`` and ``address`` rows were a quarter of its rows."""


@lru_cache(maxsize=1024)
def subsumed_codes(registry: Registry, resource_type: str) -> dict[str, tuple[str, ...]]:
    """:data:`SUBSUMES` for ``resource_type``, where ``registry`` has those official parameters."""
    params = registry.params_for(resource_type)
    out = {}
    for (rtype, code), parts in SUBSUMES.items():
        if rtype == resource_type and all(c in params and not params[c].custom for c in (code, *parts)):
            out[code] = parts
    return out


def stored_codes(param: SearchParam) -> tuple[str, ...]:
    """The ``param`` values its rows are stored under."""
    if param.custom:
        return (param.code,)
    codes = STORED_AS.get((param.base, param.code), (param.code,))
    return tuple(stored for code in codes for stored in (code, *SUBSUMES.get((param.base, code), ())))


_BITS = {table: 1 << position for position, table in enumerate(VALUE_TABLES)}
_FTS_BIT = 1 << len(VALUE_TABLES)


def as_real(value: Decimal) -> float:
    """A Decimal as SQLite REAL (infinite for an open end of a Range)."""
    return float(value)


def number_bounds(value: Decimal | None, low: Decimal, high: Decimal) -> tuple[float, float]:
    """What a number or quantity row stores: the stated value as a point, a Range's bounds, or
    the open side of a comparator (``<5`` is (-inf, 5])."""
    if value is None:
        return as_real(low), as_real(high)
    point = as_real(value)
    if low.is_infinite():
        return float("-inf"), point
    if high.is_infinite():
        return point, float("inf")
    return point, point


class _Rows:
    """The rows of one resource, per table, without their ``(rid, seq)`` key yet."""

    def __init__(self, tenant: str, rtype: str) -> None:
        self.key = (tenant, rtype)
        self.tables: dict[str, list[tuple[Any, ...]]] = {}

    def add(self, table: str, row: tuple[Any, ...]) -> None:
        rows = self.tables.get(table)
        if rows is None:
            self.tables[table] = [row]
        else:
            rows.append(row)

    def value(self, code: str, value: IndexValue, grp: int | None = None) -> None:
        key = self.key
        if isinstance(value, TokenValue):
            self.add("search_token", (*key, code, value.system, value.code, value.text, grp))
            for type_system, type_code in value.of_type:
                self.add("search_token", (*key, code + OF_TYPE_SUFFIX, type_system, type_code, value.code, grp))
        elif isinstance(value, ReferenceValue):
            value = as_local_reference(value)
            if value.id is not None or value.url is not None:
                row = (*key, code, value.type, value.id, value.version, value.url, grp)
                self.add("search_reference", row)
            if value.identifier_system is not None or value.identifier_value is not None:
                token = (*key, code + IDENTIFIER_SUFFIX, value.identifier_system, value.identifier_value, None, grp)
                self.add("search_token", token)
        elif isinstance(value, DateValue):
            self.add("search_date", (*key, code, value.low, value.high, grp))
        elif isinstance(value, StringValue):
            self.add("search_string", (*key, code, value.normalized, value.exact, grp))
        elif isinstance(value, QuantityValue):
            low, high = number_bounds(value.value, value.low, value.high)
            self.add("search_quantity", (*key, code, low, high, value.system, value.code, value.unit, grp))
        elif isinstance(value, NumberValue):
            self.add("search_number", (*key, code, *number_bounds(value.value, value.low, value.high), grp))
        elif isinstance(value, UriValue):
            self.add("search_uri", (*key, code, value.value, grp))
        elif isinstance(value, PositionValue):
            self.add("search_position", (*key, code, float(value.latitude), float(value.longitude), grp))
        elif isinstance(value, CompositeValue):
            for position, component in enumerate(value.components):
                self.value(f"{code}${position}", component, grp)

    def document(self, doc: IndexDocument, aliased: frozenset[str], subsumed: dict[str, tuple[str, ...]]) -> None:
        for code, found in doc.values.items():
            if code in RESOURCE_COLUMNS or code in aliased:
                continue
            parts = subsumed.get(code)
            if parts is not None:
                written = {value for part in parts for value in doc.values.get(part, ())}
                own = [value for value in found if value not in written]
            else:
                own = found
            values = _without_repeated_texts(own) if len(own) > 1 and isinstance(own[0], TokenValue) else own
            for grp, value in enumerate(values):
                self.value(code, value, grp if isinstance(value, CompositeValue) else None)

    @property
    def bits(self) -> int:
        return sum(_BITS[table] for table in self.tables)


def _without_repeated_texts(values: list[IndexValue]) -> list[IndexValue]:
    """Tokens without a text-only entry whose text a coding of the same parameter already has
    (a CodeableConcept's ``text`` equal to a coding's display): ``:text`` finds it either way,
    and it saves a row per such concept."""
    texts = {v.text for v in values if isinstance(v, TokenValue) and v.code is not None and v.text}
    if not texts:
        return values
    return [
        v
        for v in values
        if not (isinstance(v, TokenValue) and v.code is None and v.system is None and not v.of_type and v.text in texts)
    ]


def _delete_values(conn: sqlite3.Connection, rid: int, bits: int) -> None:
    for table, bit in _BITS.items():
        if bits & bit:
            conn.execute(f"DELETE FROM {table} WHERE rid = ?", (rid,))
    if bits & _FTS_BIT:
        conn.execute("DELETE FROM search_fts WHERE rowid = ?", (rid,))


@dataclasses.dataclass(frozen=True, slots=True)
class PreparedRows:
    """One resource version's search rows, built without the database (and so outside its
    write lock): what :func:`store_search_rows` writes."""

    resource_type: str
    id: str
    version: int
    last_updated: int
    tables: dict[str, list[tuple[Any, ...]]]
    bits: int
    text: str | None
    content: str | None


def prepare_search_rows(
    tenant: str,
    doc: IndexDocument,
    *,
    version: int | None = None,
    last_updated: int | None = None,
    content: str | None = None,
    registry: Registry | None = None,
) -> PreparedRows:
    """The search rows of ``doc``'s resource.

    ``version``/``last_updated`` default to the document's ``meta``; ``content`` is the text
    ``_content`` searches (:func:`content_text`), None to leave it out.
    """
    if doc.id is None:
        raise ValueError("a resource without an id cannot be indexed")
    rows = _Rows(tenant, doc.resource_type)
    registry = registry or default_registry()
    rows.document(doc, aliased_codes(registry, doc.resource_type), subsumed_codes(registry, doc.resource_type))
    with_text = bool(doc.text or content)
    return PreparedRows(
        resource_type=doc.resource_type,
        id=doc.id,
        version=version if version is not None else int(doc.version_id or 0),
        last_updated=last_updated if last_updated is not None else doc.last_updated or 0,
        tables=rows.tables,
        bits=rows.bits | (_FTS_BIT if with_text else 0),
        text=doc.text,
        content=content if with_text else None,
    )


def store_search_rows(conn: sqlite3.Connection, tenant: str, prepared: PreparedRows) -> int:
    """Replace the search rows of ``prepared``'s resource with them; returns its rid. Runs on
    ``conn`` as is: the caller owns the transaction."""
    rtype, id_, bits = prepared.resource_type, prepared.id, prepared.bits
    found = conn.execute(
        "SELECT rid, tables FROM search_resource WHERE tenant = ? AND type = ? AND id = ?", (tenant, rtype, id_)
    ).fetchone()
    if found is None:
        cursor = conn.execute(
            "INSERT INTO search_resource (tenant, type, id, version, last_updated, tables) VALUES (?, ?, ?, ?, ?, ?)",
            (tenant, rtype, id_, prepared.version, prepared.last_updated, bits),
        )
        assert cursor.lastrowid is not None
        rid = cursor.lastrowid
    else:
        rid = int(found[0])
        _delete_values(conn, rid, int(found[1]))
        conn.execute(
            "UPDATE search_resource SET version = ?, last_updated = ?, tables = ? WHERE rid = ?",
            (prepared.version, prepared.last_updated, bits, rid),
        )
    for table, table_rows in prepared.tables.items():
        conn.executemany(_INSERT[table], [(rid, seq, *row) for seq, row in enumerate(table_rows)])
    if bits & _FTS_BIT:
        conn.execute(
            "INSERT INTO search_fts (rowid, narrative, content) VALUES (?, ?, ?)",
            (rid, prepared.text, prepared.content),
        )
    return rid


def delete_search_rows(conn: sqlite3.Connection, tenant: str, type_: str, id_: str) -> bool:
    """Remove a resource from search (it was deleted); False when it had no rows."""
    row = conn.execute(
        "SELECT rid, tables FROM search_resource WHERE tenant = ? AND type = ? AND id = ?", (tenant, type_, id_)
    ).fetchone()
    if row is None:
        return False
    rid = int(row[0])
    _delete_values(conn, rid, int(row[1]))
    conn.execute("DELETE FROM search_resource WHERE rid = ?", (rid,))
    return True


def prepare_resource(
    tenant: str,
    type_: str,
    id_: str,
    version: int,
    last_updated: int,
    resource: dict[str, Any],
    *,
    registry: Registry | None = None,
) -> PreparedRows:
    """Everything the index writes for one live version: extraction, compartments and text."""
    registry = registry or default_registry()
    doc = index_document(resource, registry=registry, skip=aliased_codes(registry, type_))
    if doc.id != id_ or doc.resource_type != type_:
        doc = dataclasses.replace(doc, resource_type=type_, id=id_)
    content = content_text(resource)
    return prepare_search_rows(
        tenant, doc, version=version, last_updated=last_updated, content=content, registry=registry
    )


def index_resource(
    conn: sqlite3.Connection,
    tenant: str,
    type_: str,
    id_: str,
    version: int,
    last_updated: int,
    resource: dict[str, Any] | None,
    *,
    registry: Registry | None = None,
    prepared: PreparedRows | None = None,
) -> None:
    """What the index writer calls for one change, inside its transaction, once its version
    guard has passed: the resource's search rows for ``version``, or none when it was deleted.
    ``prepared`` is the rows :func:`prepare_resource` built beforehand for this very version."""
    if resource is None:
        delete_search_rows(conn, tenant, type_, id_)
        return
    if prepared is None:
        prepared = prepare_resource(tenant, type_, id_, version, last_updated, resource, registry=registry)
    store_search_rows(conn, tenant, prepared)
