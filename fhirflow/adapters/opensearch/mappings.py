"""The OpenSearch index for search (DESIGN.md §4): settings, mapping and field names.

**One shared index (an alias) for every tenant and resource type**, not an index per tenant.
Tenants are many and mostly small: an index each would mean thousands of shards, a mapping
migration per tenant and a cluster that degrades as tenants are added, while OpenSearch sizes
shards for tens of gigabytes. Every document carries ``tenant`` and every compiled request
filters on it (:mod:`fhirflow.adapters.opensearch.compiler` adds the filter to every step; no
public function builds a request without it). Documents are keyed ``{tenant}/{type}/{id}``.
A large tenant can later move to its own index behind a filtered alias without a new mapping.
All resource types share the index too: system search (``_type``), ``_include`` of any type
and compartments are then single requests.

**Typed values are nested documents, one nested path per search parameter type**, holding
``p`` (the parameter code) and that type's fields, instead of one field per parameter:

- the mapping is fixed and small. R4 has ~1,700 parameter definitions; fields per parameter
  would pass ``index.mapping.total_fields.limit`` and ``nested_fields.limit`` (50), and every
  runtime SearchParameter would need a mapping change. Here a new parameter is just a new ``p``;
- ``nested`` keeps each value's fields together. A token's system and code must match on the
  same Coding, a quantity's value and unit on the same Quantity, a date's start and end on the
  same Period, a reference's identifier system and value on the same Reference, and an
  ``:of-type`` identifier type on the same Identifier. Object arrays would be flattened by
  Lucene and match ``system`` of one coding with ``code`` of another;
- composites are one nested document per tuple of component values, with the components as
  plain objects ``c0``..``c3`` inside it (each a single value), so all components of one
  composite value must match together (search.html#combining).

Value fields (shared by the nested paths and the composite components, so a component can be
any type): string ``exact``/``norm``; token ``system``/``code``/``sc`` (``system|code``)/
``text``/``of_type`` (``system|code`` of Identifier.type); date ``start``/``end`` (inclusive
epoch ms, ``long``); number and quantity ``value``/``low``/``high`` (``double``) and quantity
``system``/``code``/``unit``; reference ``ref`` (``Type/id``, local references only)/``type``/
``id``/``version``/``url``/``isys``/``ival``; uri ``uri``; position ``point`` (``geo_point``).
Doubles hold ~15 significant digits: decimals beyond that compare approximately.

Strings are matched on keywords normalised by Python (:func:`normalize_string`), so the index
needs no analyzer for them and agrees with the embedded backend: prefix queries for the
default starts-with match, ``term`` on ``exact`` for ``:exact``, ``wildcard`` on ``norm`` for
``:contains``. Only ``narrative`` (``_text``) and ``content`` (``_content``) are analysed text.
Keywords are capped at :data:`MAX_KEYWORD` characters (Lucene terms hold 32,766 bytes).

The resource itself is kept in ``resource`` (stored, not indexed) so a search page needs no
second read; a deletion leaves a tombstone (``deleted: true``) so that an older version
replayed later cannot resurrect the resource (versions are external, see ``documents.py``).
"""

from __future__ import annotations

from typing import Any

DEFAULT_INDEX = "fhirflow-resources"
MAX_KEYWORD = 8000  # characters; 4 bytes each at most stays under Lucene's 32,766-byte term limit
MAX_COMPONENTS = 4  # composite components mapped (R4 composites have 2 or 3)
NESTED_OBJECTS_LIMIT = 50_000  # values per resource (a CodeSystem indexes one token per concept)

# Nested path per search parameter type
PATHS: dict[str, str] = {
    "string": "strings",
    "token": "tokens",
    "date": "dates",
    "number": "numbers",
    "quantity": "quantities",
    "reference": "references",
    "uri": "uris",
    "special": "positions",
    "composite": "composites",
}

_KEYWORD: dict[str, Any] = {"type": "keyword", "ignore_above": MAX_KEYWORD}
_LONG: dict[str, Any] = {"type": "long"}
_DOUBLE: dict[str, Any] = {"type": "double"}

# Fields per value type (in the order documents write them)
VALUE_FIELDS: dict[str, dict[str, dict[str, Any]]] = {
    "string": {"exact": _KEYWORD, "norm": _KEYWORD},
    "token": {"system": _KEYWORD, "code": _KEYWORD, "sc": _KEYWORD, "text": _KEYWORD, "of_type": _KEYWORD},
    "date": {"start": _LONG, "end": _LONG},
    "number": {"value": _DOUBLE, "low": _DOUBLE, "high": _DOUBLE},
    "quantity": {
        "value": _DOUBLE,
        "low": _DOUBLE,
        "high": _DOUBLE,
        "system": _KEYWORD,
        "code": _KEYWORD,
        "unit": _KEYWORD,
    },
    "reference": {
        "ref": _KEYWORD,
        "type": _KEYWORD,
        "id": _KEYWORD,
        "version": _KEYWORD,
        "url": _KEYWORD,
        "isys": _KEYWORD,
        "ival": _KEYWORD,
    },
    "uri": {"uri": _KEYWORD},
    "special": {"point": {"type": "geo_point"}},
}

TEXT_ANALYZER = "fhir_text"


def _union_fields() -> dict[str, Any]:
    """Every value field of every type: a composite component may be of any type."""
    out: dict[str, Any] = {}
    for ptype in ("string", "token", "date", "number", "quantity", "reference", "uri"):
        for name, spec in VALUE_FIELDS[ptype].items():
            out.setdefault(name, spec)
    return out


def _nested(fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "nested", "dynamic": "strict", "properties": {"p": _KEYWORD, **fields}}


def index_mapping() -> dict[str, Any]:
    """The ``mappings`` of the search index (strict: an unknown field is a bug, not data)."""
    properties: dict[str, Any] = {
        "tenant": {"type": "keyword"},
        "type": {"type": "keyword"},
        "id": {"type": "keyword"},
        "key": {"type": "keyword"},  # "Type/id": unique per tenant, the paging tie-breaker
        "version": _LONG,
        "lastUpdated": _LONG,  # epoch milliseconds
        "deleted": {"type": "boolean"},
        "compartments": {"type": "keyword"},  # "Patient/123"
        "narrative": {"type": "text", "analyzer": TEXT_ANALYZER},
        "content": {"type": "text", "analyzer": TEXT_ANALYZER},
        "resource": {"type": "object", "enabled": False},
    }
    for ptype, path in PATHS.items():
        if ptype == "composite":
            component = {"type": "object", "dynamic": "strict", "properties": _union_fields()}
            properties[path] = _nested({f"c{i}": component for i in range(MAX_COMPONENTS)})
        else:
            properties[path] = _nested(VALUE_FIELDS[ptype])
    return {"dynamic": "strict", "properties": properties}


def index_settings(*, shards: int = 3, replicas: int = 1) -> dict[str, Any]:
    return {
        "number_of_shards": shards,
        "number_of_replicas": replicas,
        "mapping": {"nested_objects": {"limit": NESTED_OBJECTS_LIMIT}},
        "analysis": {
            "analyzer": {
                TEXT_ANALYZER: {"type": "custom", "tokenizer": "standard", "filter": ["lowercase", "asciifolding"]}
            }
        },
    }


def index_body(*, shards: int = 3, replicas: int = 1) -> dict[str, Any]:
    """The body of ``PUT /<index>``: settings and mappings."""
    return {"settings": index_settings(shards=shards, replicas=replicas), "mappings": index_mapping()}
