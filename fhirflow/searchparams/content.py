"""The words ``_content`` searches (search.html#content), extracted once for every backend.

SQLite's FTS table (``adapters/sqlite/search/writer.py``) and the OpenSearch document
(``adapters/opensearch/documents.py``) both index :func:`content_text` beside the narrative's
plain text (``_text``), and ``_content`` searches both: so the two backends find the same
resources for the same words.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_SKIPPED_KEYS = frozenset(
    ("resourceType", "id", "meta", "div", "data", "system", "reference", "url", "fullUrl", "profile", "extension")
)


def content_text(resource: dict[str, Any], limit: int = 16_384) -> str:
    """The resource's own words for ``_content``: its string values in document order, without
    ids, URLs, codes' systems, base64 data and extensions (the narrative is searched separately)."""
    out: list[str] = []
    _collect_strings(resource, out, limit)
    return " ".join(out)[:limit]


def _collect_strings(node: dict[str, Any], out: list[str], budget: int) -> int:
    """Append ``node``'s strings to ``out`` until about ``budget`` characters; returns what is left.
    (Exact types rather than isinstance: this runs for every element of every write.)"""
    for key, value in node.items():
        if budget <= 0:
            break
        if key in _SKIPPED_KEYS:
            continue
        kind = type(value)
        if kind is str:
            if value:
                out.append(value)
                budget -= len(value) + 1
        elif kind is dict:
            budget = _collect_strings(value, out, budget)
        elif kind is list:
            for item in value:
                item_kind = type(item)
                if item_kind is str:
                    if item:
                        out.append(item)
                        budget -= len(item) + 1
                elif item_kind is dict:
                    budget = _collect_strings(item, out, budget)
    return budget


# What a ``_text``/``_content`` value matches, the same on both backends: every word of the value
# must start a word of the text (``:exact``: be a whole word of it); comma-separated values are
# alternatives. Words are runs of letters and digits, compared without case and accents (SQLite:
# FTS5's unicode61 tokenizer with remove_diacritics; OpenSearch: the standard tokenizer with the
# lowercase and asciifolding filters, mappings.py), so the query's words are folded the same way.
_WORD = re.compile(r"[^\W_]+")


def query_words(text: str) -> list[str]:
    """The words of a ``_text``/``_content`` value, lowercased and without accents."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return _WORD.findall("".join(ch for ch in decomposed if not unicodedata.combining(ch)))
