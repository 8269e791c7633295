"""Criteria of the query AST → SQL conditions on a ``search_resource`` alias.

Every criterion becomes one condition on the resource row, in one of two forms:

- uncorrelated, ``alias.rid IN (SELECT rid FROM <value table> WHERE …)``: SQLite builds the set
  once (the *sets* shape, and anything nested);
- correlated, ``EXISTS (SELECT 1 FROM <value table> WHERE rid = alias.rid AND …)``: an index probe
  on the resource's own rows, for when another criterion or a scan supplies the rows.

AND is several conditions; OR is OR inside one subquery; ``:not`` and ``:missing=true`` are the
negated forms. A chain (search.html#chaining) is joins through each hop's reference rows and
resource rows; a reverse chain (search.html#has) the same the other way. When chains and
``_has`` alternate, each further level is a CTE, so the statement's text stays flat (nested
subqueries overflow SQLite's parser within a few levels). :func:`driver` gives a positive
criterion's rids as a set that can drive a whole query.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

from fhirflow.adapters.sqlite.search.conditions import (
    date_condition,
    local_reference,
    near_condition,
    number_query_condition,
    quantity_condition,
    reference_condition,
    string_condition,
    token_condition,
    token_text_condition,
    uri_condition,
)
from fhirflow.adapters.sqlite.search.fts_terms import fts_tokens
from fhirflow.adapters.sqlite.search.sql import FALSE, TRUE, Sql, all_of, any_of, in_list, join, sql
from fhirflow.adapters.sqlite.search.writer import IDENTIFIER_SUFFIX, JOINED, OF_TYPE_SUFFIX, stored_codes
from fhirflow.errors import BadRequest
from fhirflow.query.ast import (
    Chain,
    CompositeQuery,
    Criterion,
    DateQuery,
    Filter,
    Has,
    MissingQuery,
    NearQuery,
    NumberQuery,
    OfTypeQuery,
    QuantityQuery,
    QueryValue,
    ReferenceQuery,
    SpecialQuery,
    StringQuery,
    TokenQuery,
    UriQuery,
)
from fhirflow.search_ports import AccessRule
from fhirflow.searchparams.registry import Registry, SearchParam

TABLES = {
    "string": "search_string",
    "token": "search_token",
    "date": "search_date",
    "number": "search_number",
    "quantity": "search_quantity",
    "reference": "search_reference",
    "uri": "search_uri",
    "special": "search_position",
}
TERMINOLOGY_MODIFIERS = frozenset(("above", "below", "in", "not-in"))


@dataclass
class Context:
    """What compiling one search needs besides the AST."""

    tenant: str
    base_url: str
    now_ms: int
    registry: Registry
    _aliases: itertools.count[int] = field(default_factory=itertools.count)
    ctes: list[tuple[str, Sql]] = field(default_factory=list)

    def alias(self, prefix: str) -> str:
        return f"{prefix}{next(self._aliases)}"

    def cte(self, body: Sql) -> str:
        """Name ``body`` as a common table expression of the statement (see :meth:`statement`)."""
        name = self.alias("q")
        self.ctes.append((name, body))
        return name

    def statement(self, main: Sql) -> Sql:
        """``main`` preceded by the CTEs registered so far (unused ones cost nothing)."""
        if not self.ctes:
            return main
        head = join(", ", (body.wrap(f"{name} AS (", ")") for name, body in self.ctes))
        return head.wrap("WITH ", " ") + main


def nested_condition(ctx: Context, criterion: Criterion, alias: str, rtype: str) -> Sql:
    """The condition a chain's last hop or a ``_has``'s source must meet. A further chain or
    ``_has`` goes into a CTE, so the statement's text stays flat however the two alternate
    (nested subqueries overflow SQLite's parser within a few levels)."""
    if isinstance(criterion, Filter):
        return condition(ctx, criterion, alias, (rtype,))
    y = ctx.alias("y")
    scope = sql(f"{y}.tenant = ? AND {y}.type = ?", ctx.tenant, rtype)
    body = all_of((scope, condition(ctx, criterion, y, (rtype,)))).wrap(
        f"SELECT {y}.rid FROM search_resource {y} WHERE "
    )
    return Sql(f"{alias}.rid IN {ctx.cte(body)}")


def types_condition(column: str, types: tuple[str, ...]) -> Sql:
    """Restrict to the searched types (no restriction for a system search over every type)."""
    return in_list(column, types) if types else TRUE


@dataclass(frozen=True, slots=True)
class Probe:
    """The value rows that make a filter match: ``FROM source WHERE where``, the resource being
    ``row.rid``. ``negated``: the filter matches the resources that have no such row."""

    source: Sql
    row: str
    where: Sql
    negated: bool = False

    def rids(self, ctx: Context, types: tuple[str, ...], *, distinct: bool = False) -> Sql:
        """Uncorrelated: the rids of the tenant's resources of ``types`` that have such a row."""
        scope = all_of((sql(f"{self.row}.tenant = ?", ctx.tenant), types_condition(f"{self.row}.type", types)))
        head = Sql(f"SELECT {'DISTINCT ' if distinct else ''}{self.row}.rid FROM ") + self.source
        return head + all_of((scope, self.where)).wrap(" WHERE ")

    def exists(self, alias: str) -> Sql:
        """Correlated: does the resource ``alias`` have such a row (an index probe on its rid)?"""
        head = Sql("EXISTS (SELECT 1 FROM ") + self.source
        return head + all_of((Sql(f"{self.row}.rid = {alias}.rid"), self.where)).wrap(" WHERE ", ")")


@dataclass(frozen=True, slots=True)
class AnyProbe:
    """Rows of any of ``parts`` make the filter match (a parameter read from rows of two shapes)."""

    parts: tuple[Probe, ...]
    negated: bool = False

    def rids(self, ctx: Context, types: tuple[str, ...], *, distinct: bool = False) -> Sql:
        return join(" UNION ", (part.rids(ctx, types) for part in self.parts))

    def exists(self, alias: str) -> Sql:
        return any_of(part.exists(alias) for part in self.parts)


def _one_of(parts: list[Probe], negated: bool = False) -> Probe | AnyProbe:
    if len(parts) == 1:
        return dataclasses.replace(parts[0], negated=negated)
    return AnyProbe(tuple(parts), negated)


def condition(
    ctx: Context, criterion: Criterion, alias: str, types: tuple[str, ...], *, correlated: bool = False
) -> Sql:
    """``criterion`` as a condition on the ``search_resource`` row ``alias`` of one of ``types``:
    an uncorrelated ``IN`` (SQLite evaluates it once), or with ``correlated`` a per-row probe, for
    when a more selective criterion drives the query."""
    if isinstance(criterion, Filter):
        return filter_condition(ctx, criterion, alias, types, correlated=correlated)
    if isinstance(criterion, Chain):
        return chain_condition(ctx, criterion, alias, types, correlated=correlated)
    return has_condition(ctx, criterion, alias, types)


def driver(ctx: Context, criterion: Criterion, types: tuple[str, ...]) -> Sql | None:
    """``SELECT DISTINCT rid`` of the resources ``criterion`` admits, when it can drive a query
    (a positive criterion); None otherwise."""
    if isinstance(criterion, Filter):
        code = criterion.param.code
        if code == "_id" and criterion.modifier is None:
            d = ctx.alias("d")
            head = sql(f"SELECT {d}.rid FROM search_resource {d} WHERE {d}.tenant = ?", ctx.tenant)
            return head + all_of((types_condition(f"{d}.type", types), id_condition(criterion, d))).wrap(" AND ")
        if code in ("_text", "_content") and criterion.modifier != "missing":
            return text_select(criterion)
        found = probe(ctx, criterion)
        if found is None or found.negated:
            return None
        return found.rids(ctx, types, distinct=True)
    if isinstance(criterion, Chain):
        s = ctx.alias("s")
        return chain_references(ctx, criterion, s, types).wrap(f"SELECT DISTINCT {s}.rid ")
    d = ctx.alias("d")
    scope = all_of((sql(f"{d}.tenant = ?", ctx.tenant), types_condition(f"{d}.type", types)))
    return all_of((scope, has_condition(ctx, criterion, d, types))).wrap(
        f"SELECT {d}.rid FROM search_resource {d} WHERE "
    )


def chain_join(ctx: Context, chain: Chain, s: str, types: tuple[str, ...]) -> tuple[Sql, Sql]:
    """A chain as joins from reference rows ``s`` (of resources of ``types``): ``(joins, where)``.

    Consecutive hops (``subject:Patient.organization.partof.name``) are joins through each
    hop's resource and reference rows, not nested subqueries, so long chains stay flat; the last
    criterion is a condition on the last hop's resource."""
    joins: list[Sql] = []
    where = [
        sql(f"{s}.param = ?", chain.param.code),
        types_condition(f"{s}.type", types),
        sql(f"{s}.target_type = ?", chain.target_type),
        local_reference(s, ctx.base_url),
    ]
    hop: Criterion = chain
    ref = s
    while isinstance(hop, Chain):
        t = ctx.alias("t")
        joins.append(
            sql(
                f" JOIN search_resource {t} ON {t}.tenant = ? AND {t}.type = ? AND {t}.id = {ref}.target_id",
                ctx.tenant,
                hop.target_type,
            )
        )
        where.append(hop_access(ctx, hop.access, t))
        inner = hop.criterion
        if not isinstance(inner, Chain):
            where.append(nested_condition(ctx, inner, t, hop.target_type))
            break
        ref = ctx.alias("s")
        on = all_of(
            (
                sql(
                    f"{ref}.rid = {t}.rid AND {ref}.param = ? AND {ref}.target_type = ?",
                    inner.param.code,
                    inner.target_type,
                ),
                local_reference(ref, ctx.base_url),
            )
        )
        joins.append(on.wrap(f" JOIN search_reference {ref} ON "))
        hop = inner
    return join("", joins), all_of(where)


def chain_references(ctx: Context, chain: Chain, s: str, types: tuple[str, ...]) -> Sql:
    """``FROM search_reference s JOIN … WHERE …`` of the reference rows that start a matching chain."""
    joins, where = chain_join(ctx, chain, s, types)
    return (
        Sql(f"FROM search_reference {s}") + joins + all_of((sql(f"{s}.tenant = ?", ctx.tenant), where)).wrap(" WHERE ")
    )


def chain_condition(ctx: Context, chain: Chain, alias: str, types: tuple[str, ...], *, correlated: bool = False) -> Sql:
    s = ctx.alias("s")
    if correlated:
        joins, where = chain_join(ctx, chain, s, types)
        head = Sql(f"EXISTS (SELECT 1 FROM search_reference {s}") + joins
        return head + all_of((Sql(f"{s}.rid = {alias}.rid"), where)).wrap(" WHERE ", ")")
    return chain_references(ctx, chain, s, types).wrap(f"{alias}.rid IN (SELECT {s}.rid ", ")")


def has_references(ctx: Context, has: Has, s: str, types: tuple[str, ...]) -> Sql:
    """``FROM search_reference s JOIN … WHERE …`` of the reference rows, held by resources that
    satisfy ``has``, that point at resources of ``types``. Nested ``_has`` are joins through each
    level's resource and reference rows, not nested subqueries, so deep nesting stays flat."""
    joins: list[Sql] = []
    where = [
        sql(f"{s}.tenant = ? AND {s}.type = ? AND {s}.param = ?", ctx.tenant, has.source_type, has.reference.code),
        types_condition(f"{s}.target_type", types),
        local_reference(s, ctx.base_url),
    ]
    level, ref = has, s
    while True:
        x = ctx.alias("x")
        joins.append(Sql(f" JOIN search_resource {x} ON {x}.rid = {ref}.rid"))
        where.append(hop_access(ctx, level.access, x))
        inner = level.criterion
        if not isinstance(inner, Has):
            where.append(nested_condition(ctx, inner, x, level.source_type))
            break
        ref = ctx.alias("s")
        on = all_of(
            (
                sql(
                    f"{ref}.tenant = ? AND {ref}.type = ? AND {ref}.param = ? AND {ref}.target_type = ?",
                    ctx.tenant,
                    inner.source_type,
                    inner.reference.code,
                    level.source_type,
                ),
                Sql(f"{ref}.target_id = {x}.id"),
                local_reference(ref, ctx.base_url),
            )
        )
        joins.append(on.wrap(f" JOIN search_reference {ref} ON "))
        level = inner
    return Sql(f"FROM search_reference {s}") + join("", joins) + all_of(where).wrap(" WHERE ")


def hop_access(ctx: Context, rule: AccessRule | None, alias: str) -> Sql:
    """A chain's or ``_has``'s resource ``alias`` must be one the searcher may see (its access rule)."""
    if rule is None:
        return TRUE
    from fhirflow.adapters.sqlite.search.compiler import access_condition  # the compiler builds on this module

    return access_condition(ctx, (rule,), alias)


def has_condition(ctx: Context, has: Has, alias: str, types: tuple[str, ...]) -> Sql:
    s = ctx.alias("s")
    refs = has_references(ctx, has, s, types)
    if len(types) == 1:
        return refs.wrap(f"{alias}.id IN (SELECT {s}.target_id ", ")")
    return refs.wrap(f"({alias}.type, {alias}.id) IN (SELECT {s}.target_type, {s}.target_id ", ")")


# ---------------------------------------------------------------------------------------------
# Filters


def filter_condition(ctx: Context, flt: Filter, alias: str, types: tuple[str, ...], *, correlated: bool = False) -> Sql:
    code = flt.param.code
    if code == "_id":
        return id_condition(flt, alias)
    if code == "_lastUpdated":
        return last_updated_condition(ctx, flt, alias)
    if code in ("_text", "_content"):
        return text_condition(flt, alias)
    if code == "_list":
        return list_condition(ctx, flt, alias, types)
    found = probe(ctx, flt)
    if found is None:
        raise BadRequest(f"Search parameter '{code}' cannot be searched here", expression=code)
    if correlated:
        return found.exists(alias).wrap("NOT " if found.negated else "")
    return found.rids(ctx, types).wrap(f"{alias}.rid {'NOT IN' if found.negated else 'IN'} (", ")")


def probe(ctx: Context, flt: Filter) -> Probe | AnyProbe | None:
    """The value rows of a table-backed filter (None for the parameters answered otherwise)."""
    param, modifier = flt.param, flt.modifier
    if param.code in ("_id", "_lastUpdated", "_text", "_content", "_list"):
        return None
    if modifier in TERMINOLOGY_MODIFIERS and param.type == "token":
        raise BadRequest(
            f"'{param.code}:{modifier}' needs a terminology service, which this server does not have",
            expression=f"{param.code}:{modifier}",
        )
    codes = stored_codes(param)
    if modifier == "missing":
        missing = isinstance(flt.values[0], MissingQuery) and flt.values[0].missing
        if param.type == "composite":
            return _one_of([composite_presence(ctx, param, code) for code in codes], negated=missing)
        table = TABLES[param.type]
        a = ctx.alias("v")
        return Probe(Sql(f"{table} {a}"), a, in_list(f"{a}.param", codes), negated=missing)
    if param.type == "composite":
        return composite_probe(ctx, flt)
    table = TABLES[param.type]
    if modifier == "identifier":
        table, codes = "search_token", tuple(c + IDENTIFIER_SUFFIX for c in codes)
    elif modifier == "of-type":
        codes = tuple(c + OF_TYPE_SUFFIX for c in codes)
    a = ctx.alias("v")
    positive = None if modifier == "not" else modifier
    matches = any_of(value_condition(ctx, param.type, positive, a, value) for value in flt.values)
    return Probe(Sql(f"{table} {a}"), a, all_of((in_list(f"{a}.param", codes), matches)), negated=modifier == "not")


def id_condition(flt: Filter, alias: str) -> Sql:
    if flt.modifier == "missing":
        missing = isinstance(flt.values[0], MissingQuery) and flt.values[0].missing
        return FALSE if missing else TRUE
    ids = [v.code for v in flt.values if isinstance(v, TokenQuery) and v.code is not None]
    found = in_list(f"{alias}.id", ids)
    if flt.modifier == "not":
        return found.wrap("NOT (", ")")
    if flt.modifier is not None:
        raise BadRequest(f"'_id:{flt.modifier}' is not supported", expression=f"_id:{flt.modifier}")
    return found


def last_updated_condition(ctx: Context, flt: Filter, alias: str) -> Sql:
    if flt.modifier == "missing":
        missing = isinstance(flt.values[0], MissingQuery) and flt.values[0].missing
        return FALSE if missing else TRUE
    column = f"{alias}.last_updated"
    return any_of(date_condition(column, column, v, ctx.now_ms) for v in flt.values if isinstance(v, DateQuery))


def fts_expression(text: str, column: str | None, *, whole_words: bool) -> str | None:
    """Every word of ``text`` must start a word of the text (``whole_words``: be one)."""
    words = fts_tokens(text)  # one token each: the index keeps no positions, which rules out phrases
    if not words:
        return None
    body = " AND ".join(f'"{word}"' if whole_words else f'"{word}"*' for word in words)
    return f"{column} : ({body})" if column else f"({body})"


def fts_match(flt: Filter) -> str | None:
    """The FTS5 query for ``_text`` (the narrative column) or ``_content`` (every column):
    each word of a value must start a word of the text (``:exact``: be a whole word), commas
    are OR. None when no value has a word."""
    column = "narrative" if flt.param.code == "_text" else None
    expressions = [
        fts_expression(v.text, column, whole_words=flt.modifier == "exact")
        for v in flt.values
        if isinstance(v, StringQuery)
    ]
    found = [e for e in expressions if e]
    return " OR ".join(found) if found else None


def text_select(flt: Filter) -> Sql:
    match = fts_match(flt)
    if match is None:
        return Sql("SELECT rowid AS rid FROM search_fts WHERE 0")
    return sql("SELECT rowid AS rid FROM search_fts WHERE search_fts MATCH ?", match)


def text_condition(flt: Filter, alias: str) -> Sql:
    """``_text`` and ``_content`` with FTS5 (:func:`fts_match`)."""
    if flt.modifier == "missing":
        missing = isinstance(flt.values[0], MissingQuery) and flt.values[0].missing
        stored = "narrative" if flt.param.code == "_text" else "content"
        present = f"SELECT rowid FROM search_fts WHERE {stored} IS NOT NULL"
        return Sql(f"{alias}.rid {'NOT IN' if missing else 'IN'} ({present})")
    if fts_match(flt) is None:
        return FALSE
    return text_select(flt).wrap(f"{alias}.rid IN (", ")")


def list_condition(ctx: Context, flt: Filter, alias: str, types: tuple[str, ...]) -> Sql:
    """``_list=id``: resources that List/id has as ``entry.item`` (search.html#list)."""
    ids = [v.value for v in flt.values if isinstance(v, SpecialQuery)]
    if any(i.startswith("$") for i in ids):
        raise BadRequest("_list: functional lists ($current-...) are not supported", expression="_list")
    s, lst = ctx.alias("s"), ctx.alias("l")
    lists = all_of((sql(f"{lst}.tenant = ? AND {lst}.type = 'List'", ctx.tenant), in_list(f"{lst}.id", ids)))
    refs = all_of(
        (
            sql(f"{s}.tenant = ? AND {s}.type = 'List' AND {s}.param = 'item'", ctx.tenant),
            types_condition(f"{s}.target_type", types),
            local_reference(s, ctx.base_url),
            lists.wrap(f"{s}.rid IN (SELECT {lst}.rid FROM search_resource {lst} WHERE ", ")"),
        )
    )
    return refs.wrap(
        f"({alias}.type, {alias}.id) IN (SELECT {s}.target_type, {s}.target_id FROM search_reference {s} WHERE ", ")"
    )


def value_condition(ctx: Context, ptype: str, modifier: str | None, a: str, value: QueryValue) -> Sql:
    """One query value against the value row ``a`` of a parameter of type ``ptype``."""
    if isinstance(value, TokenQuery):
        return token_condition(a, value)
    if isinstance(value, StringQuery):
        if ptype == "token":
            return token_text_condition(a, value)
        return string_condition(a, value, modifier)
    if isinstance(value, DateQuery):
        return date_condition(f"{a}.low", f"{a}.high", value, ctx.now_ms)
    if isinstance(value, NumberQuery):
        return number_query_condition(a, value)
    if isinstance(value, QuantityQuery):
        return quantity_condition(a, value)
    if isinstance(value, ReferenceQuery):
        return reference_condition(a, value, ctx.base_url)
    if isinstance(value, UriQuery):
        return uri_condition(a, value, modifier)
    if isinstance(value, OfTypeQuery):
        return sql(f"{a}.system = ? AND {a}.code = ? AND {a}.text = ?", value.type_system, value.type_code, value.value)
    if isinstance(value, NearQuery):
        return near_condition(a, value)
    raise BadRequest(f"Search values of this kind ({type(value).__name__}) are not supported here")


def composite_probe(ctx: Context, flt: Filter) -> Probe | AnyProbe:
    """A composite value matches when one value row of each component, with the same ``grp``,
    matches that component (search.html#composite); for a parameter stored as two plain ones
    (writer.JOINED), when a row of each of those, of the same resource, does. A combo-*
    parameter reads both kinds."""
    param = flt.param
    for value in flt.values:
        if not isinstance(value, CompositeQuery):
            raise BadRequest(f"'{param.code}' takes composite values", expression=param.code)
    return _one_of([_composite_rows(ctx, flt, code) for code in stored_codes(param)])


def _composite_rows(ctx: Context, flt: Filter, code: str) -> Probe:
    param = flt.param
    aliases = [ctx.alias("c") for _ in param.components]
    first = aliases[0]
    joined = JOINED.get((param.base, code))
    if joined is not None:
        joins = [Sql(f" JOIN {TABLES[param.components[1].type]} {aliases[1]} ON {aliases[1]}.rid = {first}.rid")]
        params = sql(f"{first}.param = ? AND {aliases[1]}.param = ?", *joined)
    else:
        # Component n of the same value: same resource, same grp, parameter ``{code}$n``.
        joins = [
            sql(
                f" JOIN {TABLES[component.type]} {a} ON {a}.rid = {first}.rid AND {a}.grp = {first}.grp "
                f"AND {a}.param = ?",
                f"{code}${n}",
            )
            for n, (a, component) in enumerate(zip(aliases[1:], param.components[1:], strict=True), start=1)
        ]
        params = sql(f"{first}.param = ?", f"{code}$0")
    alternatives = []
    for value in flt.values:
        assert isinstance(value, CompositeQuery)
        parts = [
            value_condition(ctx, component.type, None, a, component_value)
            for a, component, component_value in zip(aliases, param.components, value.components, strict=True)
        ]
        alternatives.append(all_of(parts))
    source = Sql(f"{TABLES[param.components[0].type]} {first}") + join("", joins)
    return Probe(source, first, all_of((params, any_of(alternatives))))


def composite_presence(ctx: Context, param: SearchParam, code: str) -> Probe:
    """The rows that show a resource has a value of the composite stored under ``code``."""
    first = ctx.alias("c")
    table = TABLES[param.components[0].type]
    joined = JOINED.get((param.base, code))
    if joined is None:
        return Probe(Sql(f"{table} {first}"), first, sql(f"{first}.param = ?", f"{code}$0"))
    second = ctx.alias("c")
    source = Sql(f"{table} {first} JOIN {TABLES[param.components[1].type]} {second} ON {second}.rid = {first}.rid")
    where = sql(f"{first}.param = ? AND {second}.param = ?", *joined)
    for alias, component in ((first, param.components[0]), (second, param.components[1])):
        if component.type == "token":  # a CodeableConcept's text alone is no component value
            where = all_of((where, Sql(f"{alias}.code IS NOT NULL")))
    return Probe(source, first, where)
