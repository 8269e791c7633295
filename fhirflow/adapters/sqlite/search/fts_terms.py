"""The words of a ``_text``/``_content`` value as SQLite's FTS5 tokenizer sees them.

``search_fts`` uses ``detail=column`` (schema.py), which cannot run phrase queries: a quoted
string that the tokenizer splits into two tokens is an error ("phrase queries are not
supported"). Splitting the value into words in Python is not enough, because Python and SQLite
disagree on what a word character is: SQLite's unicode61 tables are from an older Unicode
version (U+19B0..U+19C9, New Tai Lue vowel signs, are letters to Python and separators to
SQLite). So the value is tokenized by SQLite itself, with the index's tokenizer, in a private
in-memory table per thread; each token then is one term of the query.
"""

from __future__ import annotations

import sqlite3
import threading

TOKENIZE = "unicode61 remove_diacritics 2"
"""The tokenizer of ``search_fts`` (schema.py); tests/search checks the two agree."""

_local = threading.local()


def _scratch() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.execute(f"CREATE VIRTUAL TABLE words USING fts5 (text, tokenize = '{TOKENIZE}')")
        conn.execute("CREATE VIRTUAL TABLE word_list USING fts5vocab (words, 'instance')")
        _local.conn = conn
    return conn


def fts_tokens(text: str) -> list[str]:
    """The tokens of ``text``, in order, folded as the index folds them (case, diacritics)."""
    if not text.strip():
        return []
    conn = _scratch()
    conn.execute("BEGIN")
    try:
        conn.execute("INSERT INTO words (rowid, text) VALUES (1, ?)", (text,))
        rows = conn.execute("SELECT term FROM word_list ORDER BY offset").fetchall()
    finally:
        conn.execute("ROLLBACK")
    return [str(term) for (term,) in rows]
