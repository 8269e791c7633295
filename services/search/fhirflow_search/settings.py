"""The search service's own settings, from the environment like :class:`fhirflow.settings.Settings`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from fhirflow.query.ast import Total

_TOTALS: dict[str, Total] = {"none": "none", "estimate": "estimate", "accurate": "accurate"}


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw else default


@dataclass(frozen=True, slots=True)
class SearchSettings:
    default_count: int = 20
    """Page size when the client gives no ``_count``."""
    max_count: int = 1000
    """Larger ``_count`` values are lowered to this (the ``self`` link shows the page size used)."""
    default_total: Total = "accurate"
    """``Bundle.total`` when the client gives no ``_total``."""
    max_includes: int = 1000
    """Resources ``_include``/``_revinclude`` may add to one page; beyond, a warning says so."""
    include_depth: int = 3
    """Rounds of ``:iterate`` after the first."""
    page_max_bytes: int = 3 * 1024 * 1024
    """The matches of one page weigh at most this (their stored JSON), whatever ``_count`` says:
    a page of large resources ends early, with a ``next`` link (search.html#count: the server may
    return fewer). It keeps a page inside Lambda's 6 MB answer, with room for JSON escaping."""

    @classmethod
    def from_env(cls) -> SearchSettings:
        total = os.environ.get("FHIRFLOW_SEARCH_DEFAULT_TOTAL", "accurate")
        if total not in _TOTALS:
            raise ValueError(f"FHIRFLOW_SEARCH_DEFAULT_TOTAL must be none, estimate or accurate, not '{total}'")
        return cls(
            default_count=_int("FHIRFLOW_SEARCH_DEFAULT_COUNT", 20),
            max_count=_int("FHIRFLOW_SEARCH_MAX_COUNT", 1000),
            default_total=_TOTALS[total],
            max_includes=_int("FHIRFLOW_SEARCH_MAX_INCLUDES", 1000),
            include_depth=_int("FHIRFLOW_SEARCH_INCLUDE_DEPTH", 3),
            page_max_bytes=_int("FHIRFLOW_SEARCH_PAGE_MAX_BYTES", 3 * 1024 * 1024),
        )
