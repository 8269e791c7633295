"""The words of a ``_text``/``_content`` value are the index tokenizer's tokens, one query term each."""

from __future__ import annotations

import sqlite3

import pytest

from fhirflow.adapters.sqlite.search.fts_terms import TOKENIZE, fts_tokens
from fhirflow.adapters.sqlite.search.schema import SCHEMA


def test_the_query_tokenizer_is_the_index_tokenizer() -> None:
    assert f"tokenize = '{TOKENIZE}'" in SCHEMA


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("Hello, Wörld!", ["hello", "world"]),
        ("x_y 42", ["x", "y", "42"]),
        ('"AND" OR NEAR(', ["and", "or", "near"]),
        ("a\u19b0b", ["a", "b"]),  # a letter to Python, a separator to SQLite's Unicode tables
        ("  ", []),
    ],
)
def test_tokens(text: str, tokens: list[str]) -> None:
    assert fts_tokens(text) == tokens


def test_every_token_is_one_term_of_a_column_detail_index() -> None:
    """A quoted term the tokenizer splits is a phrase, which ``detail=column`` cannot run."""
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE VIRTUAL TABLE f USING fts5 (t, tokenize = '{TOKENIZE}', detail = column)")
    for cp in [*range(0x19B0, 0x19CA), 0x1CF2, 0x1CF3, 0xE000, 0x0300]:
        for term in fts_tokens(f"a{chr(cp)}b c{chr(cp)}"):
            conn.execute("SELECT * FROM f WHERE f MATCH ?", (f'"{term}"*',)).fetchall()
