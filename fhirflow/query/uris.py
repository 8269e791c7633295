"""Uri ``:above`` (search.html#uri), defined once for both backends: the resource's uri is the
search value itself or one of its ancestor paths, cut at a ``/`` (with or without it). A uri
that merely starts the value as a string (``.../ValueSet/1`` for ``.../ValueSet/12``) is not
above it. SQLite and OpenSearch both match the stored uri against :func:`uri_ancestors`.
"""

from __future__ import annotations


def uri_ancestors(uri: str) -> list[str]:
    """``uri`` and every ancestor path of it (with and without the trailing ``/``), for
    ``:above``: ``http://a.org/fhir/ValueSet/1`` is below ``http://a.org/fhir``."""
    start = uri.find("://")
    start = start + 3 if start >= 0 else 0
    out: list[str] = []
    for index, ch in enumerate(uri):
        if ch == "/" and index > start:
            out.extend((uri[:index], uri[: index + 1]))
    out.append(uri)
    return list(dict.fromkeys(out))
