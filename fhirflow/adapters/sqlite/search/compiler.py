"""A whole search → SQL: the WHERE of the matches, the ``_sort`` keys and the keyset page.

- WHERE: tenant, the searched types, the compartment (``/Patient/123/Observation``), the access
  policy's constraint and every criterion (:mod:`.criteria`), AND-ed.
- ``_sort``: each key is a correlated subquery on the resource's rows of that parameter — the
  lowest value for an ascending key, the highest for a descending one (search.html#sort); a
  resource without a value sorts last either way. ``type`` and ``id`` follow as tie-breakers,
  so every resource has a unique position and keyset paging is stable.
- paging: a page is the ``count`` rows strictly after (``next``) or before (``previous``) a
  position — a comparison on the sort keys, never an OFFSET — so there is no window limit and
  writes elsewhere in the result do not shift pages.
- shape (:class:`Shape`), chosen by the engine from capped counts of the candidates: a *driver*
  (the most selective positive criterion, or the compartment) is joined to the resource rows
  and every other criterion is a per-row index probe; a *scan* walks a bounded window of the
  type's resources in (type, id) order with probes, for broad queries whose first page lies
  near the start; *sets* evaluates every criterion once as an ``IN`` set, for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from fhirflow.adapters.sqlite.search.conditions import local_reference
from fhirflow.adapters.sqlite.search.criteria import (
    Context,
    condition,
    driver,
    types_condition,
)
from fhirflow.adapters.sqlite.search.sql import FALSE, TRUE, Sql, all_of, any_of, in_list, join, sql
from fhirflow.adapters.sqlite.search.writer import stored_codes
from fhirflow.errors import BadRequest
from fhirflow.query.ast import Filter, Query, SortKey
from fhirflow.search_ports import AccessRule, Admission, SearchScope

_SORT_VALUE = {
    "string": ("search_string", "v.norm", "v.norm"),
    "token": ("search_token", "v.code", "v.code"),
    "date": ("search_date", "v.low", "v.high"),
    "number": ("search_number", "v.low", "v.high"),
    "quantity": ("search_quantity", "v.low", "v.high"),
    "reference": (
        "search_reference",
        "COALESCE(v.target_type || '/' || v.target_id, v.url)",
        "COALESCE(v.target_type || '/' || v.target_id, v.url)",
    ),
    "uri": ("search_uri", "v.value", "v.value"),
}


def sortable(key: SortKey) -> bool:
    return key.param.code in ("_id", "_lastUpdated") or key.param.type in _SORT_VALUE


# ---------------------------------------------------------------------------------------------
# WHERE


@dataclass(frozen=True, slots=True)
class Candidate:
    """Something that can drive a query: ``select`` yields rids (without duplicates)."""

    select: Sql
    criterion: int | None
    """Its place in ``query.criteria``; None for the compartment."""
    exact: bool = True
    """The select is restricted to the tenant and the searched types (its count is a total)."""


@dataclass(frozen=True, slots=True)
class Shape:
    kind: Literal["driver", "scan", "sets"]
    driver: Candidate | None = None
    bound: tuple[str, str] | None = None
    """A scan's last (type, id), inclusive; None: the scan runs to the end."""


def candidates(ctx: Context, scope: SearchScope, query: Query) -> list[Candidate]:
    found: list[Candidate] = []
    if scope.compartment is not None:
        comp_type, comp_id = scope.compartment
        found.append(Candidate(compartment_members(ctx, comp_type, (comp_id,), scope.types), None))
    for n, criterion in enumerate(query.criteria):
        select = driver(ctx, criterion, scope.types)
        if select is not None:
            is_text = isinstance(criterion, Filter) and criterion.param.code in ("_text", "_content")
            found.append(Candidate(select, n, exact=not is_text))
    return found


def restrictions(ctx: Context, scope: SearchScope, query: Query, alias: str, shape: Shape) -> Sql:
    """Everything but the tenant and types, as conditions on ``alias``: probes per row when a
    driver or a scan supplies the rows, ``IN`` sets otherwise."""
    correlated = shape.kind != "sets"
    skip = shape.driver
    types = scope.types
    parts: list[Sql] = []
    if scope.compartment is not None and not (skip is not None and skip.criterion is None):
        parts.append(compartment_condition(ctx, scope.compartment, alias, types))
    if scope.access is not None:
        parts.append(access_condition(ctx, scope.access, alias))
    for n, criterion in enumerate(query.criteria):
        if skip is None or skip.criterion != n:
            parts.append(condition(ctx, criterion, alias, types, correlated=correlated))
    return all_of(parts)


def base(scope: SearchScope, alias: str) -> Sql:
    return all_of((sql(f"{alias}.tenant = ?", scope.tenant), types_condition(f"{alias}.type", scope.types)))


def source(ctx: Context, scope: SearchScope, query: Query, shape: Shape, *, forward: bool = True) -> Sql:
    """``FROM … WHERE …`` of the matches as rows ``r`` of ``search_resource``."""
    rest = restrictions(ctx, scope, query, "r", shape)
    if shape.kind == "driver":
        assert shape.driver is not None
        head = shape.driver.select.wrap("FROM (", ") d CROSS JOIN search_resource r ON r.rid = d.rid WHERE ")
        return head + all_of((base(scope, "r"), rest))
    if shape.kind == "scan" and shape.bound is not None:
        rest = all_of((beyond("r.type", "r.id", scope, shape.bound, "<=" if forward else ">="), rest))
    return Sql("FROM search_resource r WHERE ") + all_of((base(scope, "r"), rest))


def compartment_members(ctx: Context, comp_type: str, ids: Sequence[str] | None, types: tuple[str, ...]) -> Sql:
    """The rids (without duplicates) of the resources of ``types`` (every type when empty) in the
    ``comp_type`` compartment of one of ``ids`` (of any when None), as
    :func:`fhirflow.searchparams.compartments.compartments_of` defines membership: a compartment
    parameter of the resource's type references the compartment's resource (relatively, or
    absolutely under this server's base), or the resource is that resource itself.

    It reads the reference rows the parameters have anyway, so the index keeps no compartment
    rows of its own (they were two of an Observation's ~14 rows); each parameter is one index
    range on ``(tenant, param, target_id, type)``."""
    registry = ctx.registry
    links = registry.compartments.get(comp_type, {})  # resource type → its compartment parameters
    by_code: dict[str, list[str]] = {}
    for rtype in types or sorted(links):
        for code in links.get(rtype, ()):
            by_code.setdefault(code, []).append(rtype)
    arms = []
    for code, rtypes in sorted(by_code.items()):
        m = ctx.alias("k")
        parts = (
            sql(f"{m}.tenant = ? AND {m}.param = ?", ctx.tenant, code),
            in_list(f"{m}.target_id", ids) if ids is not None else TRUE,
            in_list(f"{m}.type", rtypes),
            sql(f"{m}.target_type = ?", comp_type),
            local_reference(m, ctx.base_url),
        )
        arms.append(all_of(parts).wrap(f"SELECT {m}.rid FROM search_reference {m} WHERE "))
    if comp_type in registry.compartments and (not types or comp_type in types):
        own = ctx.alias("k")
        itself = (
            sql(f"{own}.tenant = ? AND {own}.type = ?", ctx.tenant, comp_type),
            in_list(f"{own}.id", ids) if ids is not None else TRUE,
        )
        arms.append(all_of(itself).wrap(f"SELECT {own}.rid FROM search_resource {own} WHERE "))
    if not arms:
        return Sql("SELECT rid FROM search_resource WHERE 0")
    return join(" UNION ", arms)


def compartment_condition(ctx: Context, compartment: tuple[str, str], alias: str, types: tuple[str, ...]) -> Sql:
    comp_type, comp_id = compartment
    return compartment_members(ctx, comp_type, (comp_id,), types).wrap(f"{alias}.rid IN (", ")")


def access_condition(ctx: Context, rules: Sequence[AccessRule], alias: str) -> Sql:
    """The policy's constraint (DESIGN.md §5): each resource must satisfy its type's rule."""
    alternatives = []
    for rule in rules:
        types = (rule.resource_type,) if rule.resource_type else ()
        admitted = any_of(admission_condition(ctx, admission, alias, types) for admission in rule.admissions)
        parts = [types_condition(f"{alias}.type", types), admitted]
        if rule.patients is not None:
            parts.append(patients_condition(ctx, rule.patients, alias))
        alternatives.append(all_of(parts))
    return any_of(alternatives)


def admission_condition(ctx: Context, admission: Admission, alias: str, types: tuple[str, ...]) -> Sql:
    parts = [condition(ctx, criterion, alias, types) for criterion in admission.criteria]
    if admission.compartment is not None:
        parts.append(compartment_condition(ctx, admission.compartment, alias, types))
    return all_of(parts)


def patients_condition(ctx: Context, patients: frozenset[str], alias: str) -> Sql:
    """In no Patient compartment, or in the compartment of one of ``patients``."""
    in_any = compartment_members(ctx, "Patient", None, ())
    allowed = compartment_members(ctx, "Patient", sorted(patients), ())
    return any_of((in_any.wrap(f"{alias}.rid NOT IN (", ")"), allowed.wrap(f"{alias}.rid IN (", ")")))


# ---------------------------------------------------------------------------------------------
# ORDER BY and keyset


@dataclass(frozen=True, slots=True)
class Column:
    """One ordering column of the page query: an expression and its direction."""

    expression: str
    descending: bool


def sort_expression(key: SortKey, alias: str) -> Sql:
    code = key.param.code
    if code == "_id":
        return Sql(f"{alias}.id")
    if code == "_lastUpdated":
        return Sql(f"{alias}.last_updated")
    found = _SORT_VALUE.get(key.param.type)
    if found is None:
        raise BadRequest(f"_sort: cannot sort by {key.param.type} parameter '{code}'", expression="_sort")
    table, lowest, highest = found
    aggregate = f"MAX({highest})" if key.descending else f"MIN({lowest})"
    return in_list("v.param", stored_codes(key.param)).wrap(
        f"(SELECT {aggregate} FROM {table} v WHERE v.rid = {alias}.rid AND ", ")"
    )


def columns(keys: Sequence[SortKey]) -> list[Column]:
    """The ordering columns over the page query's output (``k0``, ``k1``... then type, id):
    each key's "missing" flag first, so resources without a value sort last."""
    out: list[Column] = []
    for n, key in enumerate(keys):
        out.append(Column(f"(k{n} IS NULL)", descending=False))
        out.append(Column(f"k{n}", descending=key.descending))
    out.extend((Column("type", descending=False), Column("id", descending=False)))
    return out


def expanded(position: Sequence[Any], nkeys: int) -> list[Any]:
    """A position (k0..kn-1, type, id) as values for :func:`columns` (flags added)."""
    values: list[Any] = []
    for value in position[:nkeys]:
        values.extend((int(value is None), value))
    values.extend(position[nkeys:])
    return values


def keyset(cols: Sequence[Column], values: Sequence[Any], *, forward: bool) -> Sql:
    """Rows strictly after (``forward``) or before ``values`` in the order of ``cols``."""
    terms: list[Sql] = []
    for n, column in enumerate(cols):
        ascending = column.descending is not forward
        beyond = sql(f"{column.expression} {'>' if ascending else '<'} ?", values[n])
        if values[n] is None:
            beyond = FALSE  # nothing sorts beyond a missing value within its flag group
        equal = [sql(f"{c.expression} IS ?", v) for c, v in zip(cols[:n], values[:n], strict=True)]
        terms.append(all_of([*equal, beyond]))
    return any_of(terms)


def order_by(cols: Sequence[Column], *, forward: bool) -> str:
    """``forward``: the query's order; otherwise its reverse (for a ``previous`` page)."""
    return ", ".join(f"{c.expression} {'DESC' if c.descending is forward else 'ASC'}" for c in cols)


@dataclass(frozen=True, slots=True)
class PageStatement:
    sql: Sql
    nkeys: int


def beyond(type_column: str, id_column: str, scope: SearchScope, position: Sequence[Any], op: str) -> Sql:
    """``(type, id) op position``. With one searched type, a plain comparison on the id: SQLite
    then ranges over (tenant, type, id) exactly, where a row value may start from the tenant's
    first type."""
    if len(scope.types) == 1:
        return sql(f"{id_column} {op} ?", position[-1])
    return sql(f"({type_column}, {id_column}) {op} (?, ?)", *position[-2:])


def scan_bound(scope: SearchScope, *, size: int, position: Sequence[Any] | None, forward: bool) -> Sql:
    """The (type, id) ``size`` resources further than ``position`` (no row: fewer remain)."""
    where = base(scope, "w")
    if position is not None:
        where = all_of((where, beyond("w.type", "w.id", scope, position[-2:], ">" if forward else "<")))
    direction = "ASC" if forward else "DESC"
    statement = Sql("SELECT w.type, w.id FROM search_resource w WHERE ") + where
    return statement + sql(f" ORDER BY w.type {direction}, w.id {direction} LIMIT 1 OFFSET ?", size - 1)


def page_statement(
    ctx: Context,
    scope: SearchScope,
    query: Query,
    shape: Shape,
    *,
    limit: int,
    after: Sequence[Any] | None,
    before: Sequence[Any] | None,
    with_total: bool = False,
) -> PageStatement:
    """``SELECT rid, type, id, k0.. [, total]`` of one page (``limit`` rows) in the query's
    order; with ``before``, in reverse order (the caller reverses the rows). ``with_total`` adds
    the number of all matches to each row (a window count, for shapes that see every match)."""
    keys = query.sort
    forward = before is None
    position = after if forward else before
    cols = columns(keys)
    selected = join(
        ", ",
        [
            Sql("r.rid AS rid, r.type AS type, r.id AS id"),
            *(sort_expression(key, "r").wrap("", f" AS k{n}") for n, key in enumerate(keys)),
            *([Sql("COUNT(*) OVER () AS total")] if with_total else []),
        ],
    )
    assert not (keys and shape.kind == "scan"), "a scan walks the default order"
    inner = selected.wrap("SELECT ", " ") + source(ctx, scope, query, shape, forward=forward)
    if position is None:
        condition_sql = TRUE
    elif not keys:
        # A row-value comparison SQLite answers from the (tenant, type, id) index.
        condition_sql = beyond("type", "id", scope, position, ">" if forward else "<")
    else:
        condition_sql = keyset(cols, expanded(position, len(keys)), forward=forward)
    outer = inner.wrap("SELECT * FROM (", ") WHERE ") + condition_sql
    statement = outer + sql(f" ORDER BY {order_by(cols, forward=forward)} LIMIT ?", limit)
    return PageStatement(statement, len(keys))


def count_statement(ctx: Context, scope: SearchScope, query: Query, shape: Shape) -> Sql:
    if shape.kind == "driver" and shape.driver is not None and only_restriction(scope, query, shape.driver):
        return shape.driver.select.wrap("SELECT COUNT(*) FROM (", ")")
    return source(ctx, scope, query, shape).wrap("SELECT COUNT(*) ")


def only_restriction(scope: SearchScope, query: Query, candidate: Candidate) -> bool:
    """Whether ``candidate`` alone decides the matches (nothing else restricts them)."""
    if not candidate.exact or scope.access is not None:
        return False
    return len(query.criteria) + (scope.compartment is not None) == 1
