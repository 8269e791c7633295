"""``SqliteSearchEngine``: the embedded search backend (the search service's SearchEngine port).

Queries run on the thread's connection of the shared database; each search's statements run in
one read transaction, so a page and its bodies come from one snapshot even while others write.
Bodies come from the index's own copy of each resource (``search_index.body``, written by
:class:`~fhirflow.adapters.sqlite.index.SqliteSearchIndex` with the rows of :mod:`.writer`), or,
where the embedded store shares the database and holds the body inline, from its ``versions``
row of the indexed version (the index then keeps no second copy).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from fhirflow import budget
from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.index import SCHEMA as INDEX_SCHEMA
from fhirflow.adapters.sqlite.search.compiler import (
    Candidate,
    Shape,
    candidates,
    count_statement,
    only_restriction,
    page_statement,
    scan_bound,
    sortable,
)
from fhirflow.adapters.sqlite.search.criteria import TERMINOLOGY_MODIFIERS, Context
from fhirflow.adapters.sqlite.search.includes import IncludeWalker
from fhirflow.adapters.sqlite.search.schema import ensure_schema, load_statistics
from fhirflow.query.ast import Criterion, Filter, Include, Query, SortKey
from fhirflow.search_ports import Admits, Hit, Included, Page, PageRequest, SearchScope
from fhirflow.searchparams.registry import Registry, default_registry

Clock = Callable[[], int]

ESTIMATE_CAP = 2000
"""A candidate admitting fewer resources than this drives the query (and is counted exactly)."""
SCAN_WINDOW = 2000
"""Resources a broad query's first attempt walks in (type, id) order before it falls back to sets."""
COUNT_DRIVER_CAP = 25_000
"""Counting broad matches drives from a candidate smaller than this (else builds every set)."""


@dataclass(slots=True)
class _Plan:
    scope: SearchScope
    query: Query
    shape: Shape
    ctx: Context
    """The context the shape was compiled in: a driver's SQL names the CTEs registered there
    (``q11``), so every statement built around it, page or count, must use this context."""
    estimate: int | None = None
    """The driver's exact size, when a driver was chosen."""
    total: int | None = None
    """All matches, when the page query counted them."""


def _now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


class SqliteSearchEngine:
    def __init__(
        self,
        db: SqliteDatabase,
        *,
        registry: Registry | None = None,
        clock: Clock = _now_ms,
        estimate_cap: int = ESTIMATE_CAP,
        scan_window: int = SCAN_WINDOW,
        count_driver_cap: int = COUNT_DRIVER_CAP,
    ) -> None:
        self.db = db
        self.estimate_cap = estimate_cap
        self.scan_window = scan_window
        self.count_driver_cap = count_driver_cap
        self._registry = registry
        self.clock = clock
        self._memo = threading.local()
        self._store_in_db = False
        db.ensure_schema(INDEX_SCHEMA)
        ensure_schema(db)

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = default_registry()
        return self._registry

    def context(self, scope: SearchScope) -> Context:
        return Context(scope.tenant, scope.base_url, self.clock(), self.registry)

    # -- what this backend can do -----------------------------------------------------------

    def unsupported(self, criterion: Criterion) -> str | None:
        while not isinstance(criterion, Filter):
            criterion = criterion.criterion
        param, modifier = criterion.param, criterion.modifier
        if param.type == "token" and modifier in TERMINOLOGY_MODIFIERS:
            return f"':{modifier}' on token parameters needs a terminology service, which this server does not have"
        if param.type == "special" and param.code not in ("near", "_list"):
            return f"the special parameter '{param.code}' is not supported"
        if param.code == "_list" and any(getattr(v, "value", "").startswith("$") for v in criterion.values):
            return "functional lists ($current-...) are not supported"
        if param.code == "_id" and modifier not in (None, "not", "missing"):
            return f"':{modifier}' is not supported on _id"
        return None

    def sortable(self, key: SortKey) -> bool:
        return sortable(key)

    # -- the port ---------------------------------------------------------------------------

    def page(self, scope: SearchScope, query: Query, request: PageRequest) -> Page:
        with self._snapshot() as conn:
            plan = self._plan(conn, self.context(scope), scope, query)
            ctx = plan.ctx
            if plan.estimate == 0:
                plan.total = 0
                return Page([], more=False)
            limit = request.count + 1
            rows: list[Any] | None = None
            if plan.shape.kind == "sets" and not query.sort:
                # Broad criteria: the first matches in (type, id) order usually lie near the start,
                # so walk a bounded window of resources with per-row probes before asking the sets.
                scan = self._scan(conn, scope, request, self.scan_window)
                rows = self._page_rows(conn, ctx, scope, query, scan, request)
                if len(rows) < limit and scan.bound is not None:
                    rows = None  # the window ended before the page filled
            if rows is None:
                rows = self._page_rows(conn, ctx, scope, query, plan.shape, request, with_total=True)
                plan.total = int(rows[0][-1]) if rows else None
            more = len(rows) > request.count
            rows = rows[: request.count]
            if request.before is not None:
                rows.reverse()
            bodies = self._bodies(conn, [row[0] for row in rows])
        nkeys = len(query.sort)
        hits = []
        for row in rows:
            body = bodies.get(row[0])
            if body is not None:  # absent only if the index lost the body, which it never should
                hits.append(Hit(row[1], row[2], body, (*row[3 : 3 + nkeys], row[1], row[2])))
        return Page(hits, more)

    def count(self, scope: SearchScope, query: Query) -> int:
        with self._snapshot() as conn:
            plan = self._plan(conn, self.context(scope), scope, query)
            ctx = plan.ctx
            if plan.total is not None:
                return plan.total
            driver = plan.shape.driver
            if plan.estimate == 0 or (
                plan.estimate is not None and driver is not None and only_restriction(scope, query, driver)
            ):
                return plan.estimate or 0
            shape = plan.shape
            if shape.kind == "sets":
                shape = self._count_shape(conn, ctx, scope, query)
            statement = ctx.statement(count_statement(ctx, scope, query, shape))
            return int(conn.execute(statement.text, statement.params).fetchone()[0])

    # -- planning ---------------------------------------------------------------------------

    def _plan(self, conn: sqlite3.Connection, ctx: Context, scope: SearchScope, query: Query) -> _Plan:
        """A driver when some candidate admits fewer than ESTIMATE_CAP resources (its count
        returned too), else sets. Remembered per thread for the same search (page, then count)."""
        memo: _Plan | None = getattr(self._memo, "plan", None)
        if memo is not None and memo.scope is scope and memo.query is query:
            return memo
        found = self._estimates(conn, ctx, scope, query, self.estimate_cap)
        plan = _Plan(scope, query, Shape("sets"), ctx)
        if found and found[0][0] < self.estimate_cap:
            plan.shape, plan.estimate = Shape("driver", found[0][1]), found[0][0]
        self._memo.plan = plan
        return plan

    def _estimates(
        self, conn: sqlite3.Connection, ctx: Context, scope: SearchScope, query: Query, cap: int
    ) -> list[tuple[int, Candidate]]:
        """Each candidate with its count up to ``cap``, smallest first (stops at an empty one)."""
        found: list[tuple[int, Candidate]] = []
        for candidate in candidates(ctx, scope, query):
            statement = ctx.statement(candidate.select.wrap("SELECT COUNT(*) FROM (", f" LIMIT {cap})"))
            size = int(conn.execute(statement.text, statement.params).fetchone()[0])
            found.append((size, candidate))
            if size == 0:
                break
        return sorted(found, key=lambda item: item[0])

    def _count_shape(self, conn: sqlite3.Connection, ctx: Context, scope: SearchScope, query: Query) -> Shape:
        """For counting broad matches: drive from a candidate of up to COUNT_DRIVER_CAP resources
        (one probe per resource beats building every set), else sets."""
        found = self._estimates(conn, ctx, scope, query, self.count_driver_cap)
        if found and (found[0][0] < self.count_driver_cap or only_restriction(scope, query, found[0][1])):
            return Shape("driver", found[0][1])
        return Shape("sets")

    @staticmethod
    def _scan(conn: sqlite3.Connection, scope: SearchScope, request: PageRequest, window: int) -> Shape:
        forward = request.before is None
        position = request.after if forward else request.before
        statement = scan_bound(scope, size=window, position=position, forward=forward)
        found = conn.execute(statement.text, statement.params).fetchone()
        return Shape("scan", bound=(str(found[0]), str(found[1])) if found else None)

    def _page_rows(
        self,
        conn: sqlite3.Connection,
        ctx: Context,
        scope: SearchScope,
        query: Query,
        shape: Shape,
        request: PageRequest,
        *,
        with_total: bool = False,
    ) -> list[Any]:
        statement = page_statement(
            ctx,
            scope,
            query,
            shape,
            limit=request.count + 1,
            after=request.after,
            before=request.before,
            with_total=with_total,
        )
        full = ctx.statement(statement.sql)
        return conn.execute(full.text, full.params).fetchall()

    def include(
        self,
        scope: SearchScope,
        matches: Sequence[Hit],
        includes: Sequence[Include],
        revincludes: Sequence[Include],
        *,
        max_depth: int,
        limit: int,
        admits: Admits | None = None,
    ) -> Included:
        if not matches or not (includes or revincludes):
            return Included([], truncated=False)
        with self._snapshot() as conn:
            walker = IncludeWalker(
                conn, self.context(scope), self.registry, lambda rids: self._bodies(conn, rids), admits
            )
            hits, truncated = walker.walk(matches, includes, revincludes, max_depth=max_depth, limit=limit)
        return Included(hits, truncated)

    # -- helpers ----------------------------------------------------------------------------

    def _has_store_versions(self, conn: sqlite3.Connection) -> bool:
        """Whether the embedded store's ``versions`` table is in this database (it is created
        by the store, maybe after this engine)."""
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'versions'").fetchone()
        self._store_in_db = found is not None
        return self._store_in_db

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction (a consistent snapshot in WAL mode), or the caller's transaction."""
        conn = self.db.connection()
        if conn.in_transaction:
            yield conn
            return
        if getattr(self._memo, "connection", None) is not conn:
            load_statistics(conn)  # a connection opened before the statistics were installed
            self._memo.connection = conn
        conn.execute("BEGIN")
        try:
            with budget.interrupt_when_late(conn):  # a search the client made too costly stops at its deadline
                yield conn
        finally:
            conn.execute("COMMIT")

    def _bodies(self, conn: sqlite3.Connection, rids: Sequence[int]) -> dict[int, bytes]:
        if not rids:
            return {}
        if self._store_in_db or self._has_store_versions(conn):
            # The index keeps no copy of a body the embedded store holds inline (SqliteSearchIndex).
            statement = (
                "SELECT r.rid, COALESCE(i.body, v.body) FROM search_resource r JOIN search_index i "
                "ON i.tenant = r.tenant AND i.type = r.type AND i.id = r.id "
                "LEFT JOIN versions v ON i.body IS NULL AND v.tenant = i.tenant AND v.type = i.type "
                "AND v.id = i.id AND v.version = i.version "
                "WHERE r.rid IN (SELECT value FROM json_each(?)) AND i.deleted = 0"
            )
        else:
            statement = (
                "SELECT r.rid, i.body FROM search_resource r JOIN search_index i "
                "ON i.tenant = r.tenant AND i.type = r.type AND i.id = r.id "
                "WHERE r.rid IN (SELECT value FROM json_each(?)) AND i.deleted = 0"
            )
        found = conn.execute(statement, (orjson.dumps(list(rids)).decode(),)).fetchall()
        return {int(rid): bytes(body) for rid, body in found if body is not None}
