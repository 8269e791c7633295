"""Whether a resource matches the search parameters of a granular SMART v2 scope
(``patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory``).

The values come from the same extraction the search index uses (:mod:`fhirflow.searchparams`),
so a resource the scope admits on read is the one a search with that parameter finds. Supported:
``token`` (``system|code``, ``|code``, ``system|``, ``code``), ``reference`` (``Type/id``, ``id``, an
absolute URL), ``string`` (starts-with, case- and accent-insensitive, as search.html#string),
``uri`` (exact); a comma means "any of". Modifiers and chains (experimental in the spec), and the
other parameter types, match nothing: a scope we cannot evaluate admits no resource.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def matches(resource: dict[str, Any], filters: Sequence[tuple[str, str]]) -> bool:
    """True when ``resource`` matches every (parameter, value) of a granular scope."""
    from fhirflow.searchparams.extract import extractor_for
    from fhirflow.searchparams.registry import default_registry

    registry = default_registry()
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return False
    extractor = extractor_for(registry)
    for name, wanted in filters:
        if ":" in name or "." in name:
            return False
        param = registry.get(rtype, name)
        if param is None:
            return False
        values = extractor.values(resource, (name,)).get(name, [])
        alternatives = wanted.split(",")
        if not any(_match(param.type, value, alternative) for value in values for alternative in alternatives):
            return False
    return True


def _match(kind: str, value: Any, wanted: str) -> bool:
    from fhirflow.searchparams.values import ReferenceValue, StringValue, TokenValue, UriValue, normalize_string

    if kind == "token" and isinstance(value, TokenValue):
        if "|" not in wanted:
            return value.code == wanted
        system, _, code = wanted.partition("|")
        if not system:
            return value.system is None and value.code == code
        if not code:
            return value.system == system
        return value.system == system and value.code == code
    if kind == "reference" and isinstance(value, ReferenceValue):
        if "/" not in wanted:
            return value.id == wanted
        if "://" in wanted:
            return value.url == wanted
        rtype, _, rid = wanted.rpartition("/")
        return value.type == rtype and value.id == rid
    if kind == "string" and isinstance(value, StringValue):
        return value.normalized.startswith(normalize_string(wanted))
    if kind == "uri" and isinstance(value, UriValue):
        return value.value == wanted
    return False
