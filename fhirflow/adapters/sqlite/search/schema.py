"""The embedded search index's tables (DESIGN.md §4): one row set per resource's current version.

``search_resource`` holds one row per live resource (type, id, version, lastUpdated) with an
integer ``rid`` that the value tables use as their key, so a value row costs a few bytes of key
rather than the resource's tenant, type and id. Every value table still carries ``tenant``,
``type`` and ``param``: they lead the indexes the compiler's subqueries use, so each criterion is
an index range scan that stays inside one tenant.

Access paths (see :mod:`fhirflow.adapters.sqlite.search.criteria`):

- token: ``(tenant, param, code, type, system, rid)`` — equality on code (and system);
- string: ``(tenant, param, type, norm, rid)`` — starts-with is a range on the normalised form;
- date, number, quantity: ``(tenant, param, type, low, high, rid)`` and, for dates, the same by
  ``high`` — each prefix is a range on one end of the value's range;
- reference: ``(tenant, param, target_id, type, target_type, rid)``, and by ``url`` for canonical
  and absolute references;
- uri: ``(tenant, param, value, type, rid)``;
- compartment membership is read from the reference rows of the compartment parameters
  (:func:`fhirflow.adapters.sqlite.search.compiler.compartment_members`); ``search_compartment``
  is no longer written, and stays (with its bit in ``tables``) so that a data directory indexed
  by an earlier version still deletes its old rows;
- every value table also by ``(rid, param)``: deleting a resource's rows, ``_sort`` keys and the
  component joins of composite parameters.

``search_resource.tables`` is a bit set of the value tables (:data:`VALUE_TABLES` order, then
``search_fts``) that hold rows of the resource, so that an update deletes only from those.
Value tables are clustered by ``(rid, seq)``: a resource's rows sit together, which makes
deleting them, reading its ``_sort`` keys and joining composite components cheap.
``grp`` ties the components of one composite value together (NULL for ordinary values).
``search_fts`` is an FTS5 table (rowid = rid) with the narrative (``_text``) and the resource's
other text (``_content``).
"""

from __future__ import annotations

import sqlite3

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.transactions import joined_write

VALUE_TABLES = (
    "search_string",
    "search_token",
    "search_date",
    "search_number",
    "search_quantity",
    "search_reference",
    "search_uri",
    "search_position",
    "search_compartment",
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS search_resource (
    rid INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    tables INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS search_resource_key ON search_resource (tenant, type, id);
CREATE INDEX IF NOT EXISTS search_resource_updated ON search_resource (tenant, type, last_updated);

CREATE TABLE IF NOT EXISTS search_string (
    rid INTEGER NOT NULL, seq INTEGER NOT NULL, tenant TEXT NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    norm TEXT NOT NULL, exact TEXT NOT NULL, grp INTEGER,
    PRIMARY KEY (rid, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_string_value ON search_string (tenant, param, type, norm, rid);

CREATE TABLE IF NOT EXISTS search_token (
    rid INTEGER NOT NULL, seq INTEGER NOT NULL, tenant TEXT NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    system TEXT, code TEXT, text TEXT, grp INTEGER,
    PRIMARY KEY (rid, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_token_value ON search_token (tenant, param, code, type, system, rid);

CREATE TABLE IF NOT EXISTS search_date (
    rid INTEGER NOT NULL, seq INTEGER NOT NULL, tenant TEXT NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    low INTEGER NOT NULL, high INTEGER NOT NULL, grp INTEGER,
    PRIMARY KEY (rid, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_date_low ON search_date (tenant, param, type, low, high, rid);
CREATE INDEX IF NOT EXISTS search_date_high ON search_date (tenant, param, type, high, low, rid);

CREATE TABLE IF NOT EXISTS search_number (
    rid INTEGER NOT NULL, seq INTEGER NOT NULL, tenant TEXT NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    low REAL NOT NULL, high REAL NOT NULL, grp INTEGER,
    PRIMARY KEY (rid, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_number_value ON search_number (tenant, param, type, low, high, rid);

CREATE TABLE IF NOT EXISTS search_quantity (
    rid INTEGER NOT NULL, seq INTEGER NOT NULL, tenant TEXT NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    low REAL NOT NULL, high REAL NOT NULL, system TEXT, code TEXT, unit TEXT, grp INTEGER,
    PRIMARY KEY (rid, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_quantity_value ON search_quantity (tenant, param, type, low, high, rid);

CREATE TABLE IF NOT EXISTS search_reference (
    rid INTEGER NOT NULL, seq INTEGER NOT NULL, tenant TEXT NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    target_type TEXT, target_id TEXT, version TEXT, url TEXT, grp INTEGER,
    PRIMARY KEY (rid, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_reference_target
    ON search_reference (tenant, param, target_id, type, target_type, rid);
CREATE INDEX IF NOT EXISTS search_reference_url
    ON search_reference (tenant, param, url, type, rid) WHERE url IS NOT NULL;

CREATE TABLE IF NOT EXISTS search_uri (
    rid INTEGER NOT NULL, seq INTEGER NOT NULL, tenant TEXT NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    value TEXT NOT NULL, grp INTEGER,
    PRIMARY KEY (rid, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_uri_value ON search_uri (tenant, param, value, type, rid);

CREATE TABLE IF NOT EXISTS search_position (
    rid INTEGER NOT NULL, seq INTEGER NOT NULL, tenant TEXT NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL,
    latitude REAL NOT NULL, longitude REAL NOT NULL, grp INTEGER,
    PRIMARY KEY (rid, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_position_value ON search_position (tenant, param, type, latitude, longitude, rid);

CREATE TABLE IF NOT EXISTS search_compartment (
    rid INTEGER NOT NULL, seq INTEGER NOT NULL, tenant TEXT NOT NULL, comp_type TEXT NOT NULL,
    comp_id TEXT NOT NULL, type TEXT NOT NULL,
    PRIMARY KEY (rid, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS search_compartment_member ON search_compartment (tenant, comp_type, comp_id, type, rid);

CREATE VIRTUAL TABLE IF NOT EXISTS search_fts USING fts5 (
    narrative, content, tokenize = 'unicode61 remove_diacritics 2', detail = column, columnsize = 0
);
"""


# What ANALYZE measured on 200,000 Synthea resources, with the date and quantity columns made as
# selective as real (not replicated) data: SQLite's planner without statistics starts chains and
# includes from the wrong end (seconds instead of milliseconds), and ANALYZE itself takes seconds
# on a large index. These are installed once, when no statistics for the table exist; a later
# ANALYZE replaces them with measured ones.
STATISTICS: tuple[tuple[str, str, str], ...] = (
    ("search_resource", "search_resource_key", "200000 200000 12500 1"),
    ("search_resource", "search_resource_updated", "200000 200000 12500 2"),
    ("search_string", "search_string", "50000 6 1"),
    ("search_string", "search_string_value", "50000 50000 5000 2000 3 1"),
    ("search_token", "search_token", "1200000 7 1"),
    ("search_token", "search_token_value", "1200000 1200000 30000 500 480 470 1"),
    ("search_date", "search_date", "210000 1 1"),
    ("search_date", "search_date_low", "210000 210000 21000 12000 3 3 1"),
    ("search_date", "search_date_high", "210000 210000 21000 12000 3 3 1"),
    ("search_number", "search_number", "10000 2 1"),
    ("search_number", "search_number_value", "10000 10000 2000 2000 3 3 1"),
    ("search_quantity", "search_quantity", "360000 5 1"),
    ("search_quantity", "search_quantity_value", "360000 360000 60000 60000 3 3 1"),
    ("search_reference", "search_reference", "730000 4 1"),
    ("search_reference", "search_reference_target", "730000 730000 52000 8 5 5 1"),
    ("search_reference", "search_reference_url", "10000 10000 2000 3 3 1"),
    ("search_uri", "search_uri", "10000 2 1"),
    ("search_uri", "search_uri_value", "10000 10000 2000 3 3 1"),
    ("search_position", "search_position", "1000 1 1"),
    ("search_position", "search_position_value", "1000 1000 1000 1000 3 3 1"),
    ("search_compartment", "search_compartment", "430000 3 1"),
    ("search_compartment", "search_compartment_member", "430000 430000 140000 20 5 1"),
)


def ensure_schema(db: SqliteDatabase) -> None:
    """Create the search tables once per process (the index writer calls this when it is built)
    and install the planner statistics where the database has none."""
    db.ensure_schema(SCHEMA)
    conn = db.connection()
    created = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone() is None
    if created:
        conn.execute("ANALYZE search_position")  # creates sqlite_stat1 (the table is empty: instant)
    with joined_write(db) as writer:
        if created:
            writer.execute("DELETE FROM sqlite_stat1 WHERE tbl = 'search_position'")
        have = {row[0] for row in writer.execute("SELECT DISTINCT tbl FROM sqlite_stat1")}
        missing = [row for row in STATISTICS if row[0] not in have]
        writer.executemany("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES (?, ?, ?)", missing)
    if not conn.in_transaction:
        load_statistics(conn)


def load_statistics(conn: sqlite3.Connection) -> None:
    """Make ``conn``'s planner read sqlite_stat1 again (a connection reads it when it opens)."""
    conn.execute("ANALYZE sqlite_master")
