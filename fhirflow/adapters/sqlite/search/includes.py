"""``_include`` and ``_revinclude`` (search.html#include) for one page of matches.

Round 0 applies every include to the matches; each later round applies the ``:iterate`` ones to
what the round before added, up to ``max_depth`` rounds. ``_include`` follows the sources'
reference rows to the resources they name (local references; canonical references through the
target's ``url``), ``_revinclude`` finds the resources whose reference rows name a source. A
resource appears once, matches never again as includes, and the walk stops at ``limit``. Only
resources the principal may read (``admits``) are added and walked from: a round never goes on
from a resource it may not see.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from fhirflow import budget
from fhirflow.adapters.sqlite.search.conditions import local_reference
from fhirflow.adapters.sqlite.search.criteria import Context
from fhirflow.adapters.sqlite.search.sql import TRUE, Sql, all_of, in_list, sql
from fhirflow.query.ast import Include
from fhirflow.search_ports import Admits, Hit
from fhirflow.searchparams.registry import Registry

Found = tuple[int, str, str]
"""(rid, type, id) of an included resource."""


def _json(values: Iterable[object]) -> str:
    return orjson.dumps(list(values)).decode()


Bodies = Callable[[Sequence[int]], dict[int, bytes]]
"""The bodies of live resources by rid (a resource without one is gone from the index)."""


class IncludeWalker:
    def __init__(
        self,
        conn: sqlite3.Connection,
        ctx: Context,
        registry: Registry,
        bodies: Bodies,
        admits: Admits | None = None,
    ) -> None:
        self.conn = conn
        self.ctx = ctx
        self.registry = registry
        self.bodies = bodies
        self.admits = admits
        """Resources it refuses are neither returned nor walked from (SearchEngine.include)."""

    def walk(
        self,
        matches: Sequence[Hit],
        includes: Sequence[Include],
        revincludes: Sequence[Include],
        *,
        max_depth: int,
        limit: int,
    ) -> tuple[list[Hit], bool]:
        seen = {(h.type, h.id) for h in matches}
        sources = self._rows((h.type, h.id) for h in matches)
        found: list[Hit] = []
        depth = 0
        while sources and depth <= max_depth:
            fresh: list[Hit] = []
            next_sources: list[Found] = []
            active = [(i, False) for i in includes if i.iterate or depth == 0]
            active += [(i, True) for i in revincludes if i.iterate or depth == 0]
            for include, reverse in active:
                budget.check()  # _include:iterate over a dense graph is bounded by the request's deadline
                candidates = self.revinclude(include, sources) if reverse else self.include(include, sources)
                new: list[Found] = []
                for row in candidates:  # (an include's canonical and local targets can name one twice)
                    if (row[1], row[2]) not in seen:
                        seen.add((row[1], row[2]))
                        new.append(row)
                for row, hit in self._readable(new):
                    fresh.append(hit)
                    next_sources.append(row)
                    if len(found) + len(fresh) >= limit:
                        return found + fresh, True
            found.extend(fresh)
            sources = next_sources
            depth += 1
        return found, False

    def _readable(self, rows: Sequence[Found]) -> list[tuple[Found, Hit]]:
        """The live ones among ``rows`` that the principal may read, with their bodies, in order."""
        bodies = self.bodies([rid for rid, _, _ in rows])
        out: list[tuple[Found, Hit]] = []
        for row in rows:
            body = bodies.get(row[0])
            if body is None or (self.admits is not None and not self.admits(orjson.loads(body))):
                continue
            out.append((row, Hit(row[1], row[2], body)))
        return out

    # -- one include over a set of sources ---------------------------------------------------

    def include(self, include: Include, sources: Sequence[Found]) -> list[Found]:
        rids = [rid for rid, rtype, _ in sources if include.source_type in (None, rtype)]
        if not rids:
            return []
        refs = all_of(
            (
                Sql("s.rid IN (SELECT value FROM json_each(?))", (_json(rids),)),
                sql("s.param = ?", include.param.code) if include.param is not None else Sql("s.grp IS NULL"),
                sql("s.target_type = ?", include.target_type) if include.target_type else TRUE,
            )
        )
        rows = self._run(refs.wrap("SELECT DISTINCT s.target_type, s.target_id, s.url FROM search_reference s WHERE "))
        local = self._local(rows)
        targets = [(t, i) for t, i, url in rows if t is not None and i is not None and (url is None or url in local)]
        canonicals = {url for t, i, url in rows if i is None and url is not None}
        found = self._rows(targets)
        if canonicals:
            found += self._canonical(canonicals, include)
        return found

    def revinclude(self, include: Include, sources: Sequence[Found]) -> list[Found]:
        if include.source_type is None:
            codes: list[str] = []  # any parameter of any type
        elif include.param is not None:
            codes = [include.param.code]
        else:
            params = self.registry.params_for(include.source_type).values()
            codes = sorted(p.code for p in params if p.type == "reference")
        wanted = {(rtype, id_) for _, rtype, id_ in sources}
        if include.target_type is not None:
            wanted = {w for w in wanted if w[0] == include.target_type}
        if not wanted:
            return []
        refs = all_of(
            (
                sql("s.tenant = ?", self.ctx.tenant),
                in_list("s.param", codes) if codes else TRUE,
                sql("s.type = ?", include.source_type) if include.source_type else TRUE,
                Sql("s.target_id IN (SELECT value FROM json_each(?))", (_json(sorted({i for _, i in wanted})),)),
                local_reference("s", self.ctx.base_url),
            )
        )
        rows = self._run(refs.wrap("SELECT DISTINCT s.rid, s.target_type, s.target_id FROM search_reference s WHERE "))
        rids = sorted({rid for rid, t, i in rows if (t, i) in wanted})
        if not rids:
            return []
        return [
            (int(r), str(t), str(i))
            for r, t, i in self._run(
                Sql(
                    "SELECT rid, type, id FROM search_resource WHERE rid IN (SELECT value FROM json_each(?)) "
                    "ORDER BY type, id",
                    (_json(rids),),
                )
            )
        ]

    # -- lookups ----------------------------------------------------------------------------

    def _rows(self, keys: Iterable[tuple[str, str]]) -> list[Found]:
        """(rid, type, id) of the live resources among ``keys``, in (type, id) order."""
        pairs = sorted(set(keys))
        if not pairs:
            return []
        rows = self._run(
            Sql(
                "SELECT r.rid, r.type, r.id FROM json_each(?) j JOIN search_resource r "
                "ON r.tenant = ? AND r.type = json_extract(j.value, '$[0]') AND r.id = json_extract(j.value, '$[1]') "
                "ORDER BY r.type, r.id",
                (_json(pairs), self.ctx.tenant),
            )
        )
        return [(int(rid), str(rtype), str(id_)) for rid, rtype, id_ in rows]

    def _canonical(self, urls: set[str], include: Include) -> list[Found]:
        """Canonical references (``Questionnaire/url``): the resources whose ``url`` is one of them."""
        targets = include.param.targets if include.param is not None else ()
        if include.target_type:
            targets = (include.target_type,)
        found = all_of(
            (
                sql("u.tenant = ? AND u.param = 'url'", self.ctx.tenant),
                Sql("u.value IN (SELECT value FROM json_each(?))", (_json(sorted(urls)),)),
                in_list("u.type", targets) if targets else TRUE,
            )
        ).wrap("SELECT DISTINCT u.type, r.id FROM search_uri u JOIN search_resource r ON r.rid = u.rid WHERE ")
        return self._rows((str(t), str(i)) for t, i in self._run(found))

    def _local(self, rows: Sequence[tuple[str | None, str | None, str | None]]) -> set[str]:
        """The absolute URLs among ``rows`` that point into this server."""
        base = self.ctx.base_url.rstrip("/") + "/" if self.ctx.base_url else None
        return {url for _, _, url in rows if url is not None and base is not None and url.startswith(base)}

    def _run(self, statement: Sql) -> list[Any]:
        return self.conn.execute(statement.text, statement.params).fetchall()
