"""A fake OpenSearch: evaluates the query DSL subset the compiler emits over documents held in
memory, so compiled plans can be *run* against documents built from real resources (no server
can run here, DESIGN.md §8). The search conformance table runs on it
(``tests/search/test_conformance_opensearch.py``), as do the adapter's unit tests.

Fields mean what the index mapping says (``indices.create``'s body; the project's own mapping,
``mappings.py``, when no index was created): a ``text`` field is analysed as the standard
tokenizer with lowercase and asciifolding would (``term``/``prefix``/``wildcard`` compare the
query, unanalysed, with each token; ``match``/``match_phrase`` analyse the query too); a
``keyword`` holds the whole value and leaves out values longer than ``ignore_above``; a field
under a ``nested`` path is only seen from inside a ``nested`` query on that path, as in Lucene.

It is a test double of a third-party service, not of our adapter: ``OpenSearchSearchIndex``
runs unchanged on it. It models what the plans rely on: ``bool`` (filter/must/should with
minimum_should_match/must_not), ``term``, ``terms``, ``prefix``, ``wildcard``, ``range``,
``exists``, ``nested`` (a nested query matches when one nested object matches all of it),
``match``/``match_phrase`` (lowercase + ASCII folding), ``geo_distance``; ``sort`` on fields
(nested sorts with filter and min/max mode, ``missing: _last``), ``_score``, ``_doc``;
``search_after``, ``size``, ``track_total_hits``, ``_source`` filtering; external versioning
(409 unless the new version is greater; ``external_gte`` lets the same version through), for
single ``index`` calls and for ``bulk`` NDJSON bodies (recorded in ``bulk_bodies``; ``refuse``
makes chosen documents fail with a status, and ``down`` fails whole requests);
``indices.exists``/``create`` (400 ``resource_already_exists_exception`` for an existing index).
``tests/unit/test_opensearch_fake.py`` pins the evaluator itself.

It refuses, as a cluster does, a query it would not run: more than :data:`MAX_CLAUSE_COUNT` leaf
clauses in the whole query (``indices.query.bool.max_clause_count``; Lucene 9 counts the leaves of
the entire tree, nested queries included), a ``terms`` query over :data:`MAX_TERMS_COUNT` values
(``index.max_terms_count``), and a ``wildcard`` pattern longer than :data:`MAX_WILDCARD_LENGTH`
(Lucene builds an automaton of the pattern; past a size it is ``TooComplexToDeterminize``, and the
time to build it grows with the pattern). Each is the 400 ``search_phase_execution_exception`` the
client raises as ``RequestError``: a plan that trips one is a server error waiting to happen.

Not modelled, because the compiler does not emit them: scoring (``_score`` is constant),
aggregations, scripts, ``query_string``, and analysers other than the one ``mappings.py`` defines.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import unicodedata
from typing import Any

import orjson
from opensearchpy.exceptions import ConflictError, NotFoundError, RequestError
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError

# The standard tokenizer (UAX #29) approximated: letters and digits, joined across ``.`` and
# apostrophes between them ("u.s.a", "don't", "3.5"); then lowercase and asciifolding.
_TOKEN = re.compile(r"[^\W_]+(?:[.'\u2019][^\W_]+)*")


MAX_CLAUSE_COUNT = 1024
MAX_TERMS_COUNT = 65_536
MAX_WILDCARD_LENGTH = 1000
"""Not a cluster setting (``index.max_regex_length`` is 1000 for ``regexp``): the length past which
this fake calls a wildcard pattern too costly to build into an automaton."""


def _fold(text: str) -> list[str]:
    decomposed = unicodedata.normalize("NFKD", text.lower())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _TOKEN.findall(plain)


class Mapping:
    """Field types by dotted path, and the nested paths, read from an index mapping."""

    def __init__(self, mappings: dict[str, Any]) -> None:
        self.fields: dict[str, dict[str, Any]] = {}
        self.nested: set[str] = set()
        self._read(mappings.get("properties", {}), "")

    def _read(self, properties: dict[str, Any], at: str) -> None:
        for name, spec in properties.items():
            path = at + name
            if spec.get("type") == "nested":
                self.nested.add(path)
            if "properties" in spec:
                self._read(spec["properties"], path + ".")
            else:
                self.fields[path] = spec

    def nested_path_of(self, field: str) -> str | None:
        parts = field.split(".")
        for n in range(len(parts) - 1, 0, -1):
            if ".".join(parts[:n]) in self.nested:
                return ".".join(parts[:n])
        return None

    def indexed(self, field: str, values: list[Any]) -> list[Any]:
        """What the index holds for ``values`` of ``field``: tokens of a text field, keywords
        within ``ignore_above``; an unmapped field holds nothing (the mapping is strict)."""
        spec = self.fields.get(field)
        if spec is None:
            return []
        kind = spec.get("type")
        if kind == "text":
            return [token for v in values if isinstance(v, str) for token in _fold(v)]
        if kind == "keyword":
            limit = spec.get("ignore_above")
            return [v for v in values if not (isinstance(v, str) and limit is not None and len(v) > limit)]
        return values


@functools.lru_cache(maxsize=1)
def default_mapping() -> Mapping:
    from fhirflow.adapters.opensearch.mappings import index_body

    return Mapping(index_body()["mappings"])


def _walk(node: Any, parts: list[str]) -> list[Any]:
    if isinstance(node, list):
        return [v for item in node for v in _walk(item, parts)]
    if not parts:
        return [node]
    if not isinstance(node, dict) or parts[0] not in node:
        return []
    return _walk(node[parts[0]], parts[1:])


class Scope:
    """Where field names resolve: the document, or one nested object under ``path``."""

    def __init__(self, node: dict[str, Any], path: str | None = None, mapping: Mapping | None = None) -> None:
        self.node, self.path = node, path
        self.mapping = mapping or default_mapping()

    def raw(self, field: str) -> list[Any]:
        """The source values of ``field`` seen from here (none under a nested path from outside it)."""
        if self.mapping.nested_path_of(field) != self.path:
            return []
        if self.path is not None:
            field = field[len(self.path) + 1 :]
        return _walk(self.node, field.split("."))

    def values(self, field: str) -> list[Any]:
        """The indexed terms of ``field`` seen from here."""
        return self.mapping.indexed(field, self.raw(field))

    def inside(self, node: dict[str, Any], path: str) -> Scope:
        return Scope(node, path, self.mapping)


def _wildcard(pattern: str) -> re.Pattern[str]:
    out, chars = [], iter(pattern)
    for ch in chars:
        if ch == "\\":
            out.append(re.escape(next(chars, "")))
        elif ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _in_range(value: Any, bounds: dict[str, Any]) -> bool:
    checks = {
        "gt": lambda b: value > b,
        "gte": lambda b: value >= b,
        "lt": lambda b: value < b,
        "lte": lambda b: value <= b,
    }
    return all(checks[op](bound) for op, bound in bounds.items())


def _haversine_km(a: dict[str, float], b: dict[str, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (a["lat"], a["lon"], b["lat"], b["lon"]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


_UNITS_KM = {"km": 1.0, "m": 0.001, "mi": 1.609344, "nmi": 1.852, "cm": 0.00001}


def _distance_km(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)([a-z]+)", text)
    assert match, text
    return float(match[1]) * _UNITS_KM[match[2]]


def matches(query: dict[str, Any], scope: Scope) -> bool:
    [(kind, spec)] = query.items()
    if kind == "bool":
        if not all(matches(q, scope) for q in spec.get("filter", []) + spec.get("must", [])):
            return False
        if any(matches(q, scope) for q in spec.get("must_not", [])):
            return False
        should = spec.get("should", [])
        needed = spec.get("minimum_should_match", 0 if ("filter" in spec or "must" in spec) else 1)
        return not should or sum(matches(q, scope) for q in should) >= needed
    if kind == "nested":
        assert scope.path is None, "nested inside nested is not generated"
        assert spec["path"] in scope.mapping.nested, f"{spec['path']} is not a nested path of the mapping"
        objects = [o for o in _walk(scope.node, spec["path"].split(".")) if isinstance(o, dict)]
        return any(matches(spec["query"], scope.inside(o, spec["path"])) for o in objects)
    if kind == "match_all":
        return True
    if kind == "match_none":
        return False
    if kind == "exists":
        return bool(scope.values(spec["field"]))
    if kind == "geo_distance":
        spec = dict(spec)
        limit = _distance_km(spec.pop("distance"))
        [(field, point)] = spec.items()
        return any(_haversine_km(v, point) <= limit for v in scope.values(field))
    [(field, arg)] = spec.items()
    values = scope.values(field)
    if kind == "term":
        return arg in values
    if kind == "terms":
        assert isinstance(arg, list), "placeholders must be substituted before searching"
        return any(v in arg for v in values)
    if kind == "prefix":
        return any(isinstance(v, str) and v.startswith(arg) for v in values)
    if kind == "wildcard":
        pattern = _wildcard(arg["value"])
        return any(isinstance(v, str) and pattern.fullmatch(v) for v in values)
    if kind == "range":
        return any(_in_range(v, arg) for v in values)
    if kind == "match":
        words = set(values)
        wanted = _fold(arg["query"])
        return all(w in words for w in wanted) if arg.get("operator") == "and" else any(w in words for w in wanted)
    if kind == "match_phrase":
        wanted = _fold(arg)
        texts = [_fold(v) for v in scope.raw(field) if isinstance(v, str)]
        return any(t[i : i + len(wanted)] == wanted for t in texts for i in range(len(t) - len(wanted) + 1))
    raise AssertionError(f"query kind {kind} is not modelled")


def leaf_clauses(query: dict[str, Any]) -> int:
    """How many leaf queries ``query`` holds (what ``max_clause_count`` limits), after checking the
    per-query limits of ``terms`` and ``wildcard``."""
    [(kind, spec)] = query.items()
    if kind == "bool":
        parts = [q for key in ("filter", "must", "should", "must_not") for q in spec.get(key, [])]
        return sum(leaf_clauses(q) for q in parts)
    if kind == "nested":
        return leaf_clauses(spec["query"])
    if kind == "terms":
        [(field, values)] = spec.items()
        if isinstance(values, list) and len(values) > MAX_TERMS_COUNT:
            raise _refused(
                f"the number of terms [{len(values)}] used in the Terms Query request has exceeded the limit"
            )
    if kind == "wildcard":
        [(field, arg)] = spec.items()
        if len(arg["value"]) > MAX_WILDCARD_LENGTH:
            raise _refused(f"too_complex_to_determinize_exception: wildcard on [{field}] is too complex")
    return 1


def _refused(reason: str) -> RequestError:
    return RequestError(400, "search_phase_execution_exception", {"error": {"reason": reason}})


def _sort_value(doc: dict[str, Any], field: str, spec: dict[str, Any], mapping: Mapping) -> Any:
    nested_spec = spec.get("nested")
    if nested_spec is None:
        values = Scope(doc, None, mapping).values(field)
    else:
        path = nested_spec["path"]
        objects = [o for o in _walk(doc, path.split(".")) if isinstance(o, dict)]
        chosen = [o for o in objects if matches(nested_spec["filter"], Scope(o, path, mapping))]
        values = [v for o in chosen for v in Scope(o, path, mapping).values(field)]
    if not values:
        return None
    return max(values) if spec.get("mode") == "max" else min(values)


class _Key:
    """A sort key: missing values last whatever the order (first with ``missing: _first``);
    descending inverts."""

    def __init__(self, parts: list[tuple[Any, bool]], missing_first: list[bool] | None = None) -> None:
        self.parts = parts
        self.missing_first = missing_first or [False] * len(parts)

    def __lt__(self, other: _Key) -> bool:
        for (a, desc), (b, _), first in zip(self.parts, other.parts, self.missing_first, strict=True):
            if a == b:
                continue
            if a is None or b is None:
                return (a is None) if first else (b is None)
            return a > b if desc else a < b
        return False


def _source(doc: dict[str, Any], includes: Any) -> dict[str, Any] | None:
    if includes is False:
        return None
    if includes is None or includes is True:
        return copy.deepcopy(doc)
    out: dict[str, Any] = {}
    for path in includes:
        head, _, rest = path.partition(".")
        if head not in doc:
            continue
        if rest and isinstance(doc[head], list):
            kept = out.setdefault(head, [{} for _ in doc[head]])
            for target, item in zip(kept, doc[head], strict=True):
                if rest in item:
                    target[rest] = copy.deepcopy(item[rest])
        else:
            out[head] = copy.deepcopy(doc[head])
    return out


class FakeIndices:
    def __init__(self, fake: FakeOpenSearch) -> None:
        self.fake = fake

    def create(self, *, index: str, body: dict[str, Any]) -> dict[str, Any]:
        if index in self.fake.created:
            raise RequestError(400, "resource_already_exists_exception", {})
        self.fake.created[index] = body
        self.fake.mapping = Mapping(body.get("mappings", {}))
        return {"acknowledged": True}

    def exists(self, *, index: str) -> bool:
        return index in self.fake.created

    def put_mapping(self, *, index: str, body: dict[str, Any]) -> dict[str, Any]:
        """New fields are added; a field mapped again with another type is refused, as OpenSearch does."""
        if index not in self.fake.created:
            raise NotFoundError(404, "index_not_found_exception", {})
        held = self.fake.created[index].setdefault("mappings", {}).setdefault("properties", {})
        for name, field in body.get("properties", {}).items():
            if name in held and held[name].get("type") != field.get("type"):
                raise RequestError(400, "illegal_argument_exception", {"field": name})
        held.update({name: field for name, field in body.get("properties", {}).items() if name not in held})
        self.fake.mapping = Mapping(self.fake.created[index]["mappings"])
        self.fake.mapping_puts.append(index)
        return {"acknowledged": True}


class FakeOpenSearch:
    def __init__(self) -> None:
        self.docs: dict[str, dict[str, Any]] = {}  # _id → _source
        self.versions: dict[str, int] = {}
        self.created: dict[str, dict[str, Any]] = {}
        self.mapping_puts: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.indices = FakeIndices(self)
        self.bulk_bodies: list[bytes] = []
        self.refuse: dict[str, tuple[int, str]] = {}  # _id → (status, error type) of its bulk item
        self.down = False  # every bulk request fails to connect
        self.mapping = default_mapping()  # until indices.create brings one

    def index(self, *, index: str, body: dict[str, Any], version: int, version_type: str, **kwargs: Any) -> Any:
        assert version_type == "external"
        if not self._put(kwargs["id"], body, version):
            raise ConflictError(409, "version_conflict_engine_exception", {})
        return {"result": "updated", "_version": version}

    def _put(self, doc_id: str, body: dict[str, Any], version: int, *, gte: bool = False) -> bool:
        held = self.versions.get(doc_id)
        if held is not None and (held > version if gte else held >= version):
            return False
        self.docs[doc_id], self.versions[doc_id] = copy.deepcopy(body), version
        return True

    def bulk(self, *, body: bytes, index: str, **params: Any) -> dict[str, Any]:
        """``index`` actions with external versions, in body order, each item on its own."""
        if self.down:
            raise OpenSearchConnectionError("N/A", "connection refused", None)
        assert isinstance(body, bytes)
        assert body.endswith(b"\n")
        self.bulk_bodies.append(body)
        lines = body.splitlines()
        items: list[dict[str, Any]] = []
        for action_line, document_line in zip(lines[::2], lines[1::2], strict=True):
            [(op, meta)] = orjson.loads(action_line).items()
            assert op == "index", op
            assert meta["version_type"] in ("external", "external_gte"), meta
            doc_id, version = meta["_id"], meta["version"]
            if doc_id in self.refuse:
                status, error = self.refuse[doc_id]
                items.append({op: {"status": status, "error": {"type": error, "reason": "quoted field values"}}})
            elif self._put(doc_id, orjson.loads(document_line), version, gte=meta["version_type"] == "external_gte"):
                items.append({op: {"status": 201}})
            else:
                items.append({op: {"status": 409, "error": {"type": "version_conflict_engine_exception"}}})
        return {"errors": any(item[op].get("error") for item in items for op in item), "items": items}

    def get(self, *, index: str, **kwargs: Any) -> Any:
        doc_id = kwargs["id"]
        if doc_id not in self.docs:
            raise NotFoundError(404, "not_found", {"found": False})
        return {"_id": doc_id, "found": True, "_version": self.versions[doc_id]}

    def search(self, *, index: str, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(copy.deepcopy(body))
        docs = enumerate(self.docs.items())
        query = body["query"]
        clauses = leaf_clauses(query)
        if clauses > MAX_CLAUSE_COUNT:
            raise _refused(f"too_many_clauses: maxClauseCount is set to {MAX_CLAUSE_COUNT} ({clauses} clauses)")
        found = [(i, doc_id, doc) for i, (doc_id, doc) in docs if matches(query, Scope(doc, None, self.mapping))]
        keyed = [(self._sort_key(body.get("sort", []), doc, i, self.mapping), doc_id, doc) for i, doc_id, doc in found]
        keyed.sort(key=lambda item: item[0])
        after = body.get("search_after")
        if after is not None:
            sort = body.get("sort", [])
            marker = _Key(list(zip(after, self._descending(sort), strict=True)), self._missing_first(sort))
            keyed = [item for item in keyed if marker < item[0]]
        hits = [
            {"_id": doc_id, "_source": _source(doc, body.get("_source")), "sort": [v for v, _ in key.parts]}
            for key, doc_id, doc in keyed[: body.get("size", 10)]
        ]
        response: dict[str, Any] = {"hits": {"hits": hits}}
        track = body.get("track_total_hits", 10_000)
        if track is not False:
            cap = None if track is True else int(track)
            relation = "gte" if cap is not None and len(found) > cap else "eq"
            response["hits"]["total"] = {"value": min(len(found), cap or len(found)), "relation": relation}
        return response

    @staticmethod
    def _descending(sort: list[Any]) -> list[bool]:
        return [item != "_doc" and next(iter(item.values())).get("order") == "desc" for item in sort]

    @staticmethod
    def _missing_first(sort: list[Any]) -> list[bool]:
        return [item != "_doc" and next(iter(item.values())).get("missing") == "_first" for item in sort]

    @classmethod
    def _sort_key(cls, sort: list[Any], doc: dict[str, Any], position: int, mapping: Mapping) -> _Key:
        parts: list[tuple[Any, bool]] = []
        for item in sort:
            if item == "_doc":
                parts.append((position, False))
                continue
            [(field, spec)] = item.items()
            desc = spec.get("order") == "desc"
            parts.append((1.0 if field == "_score" else _sort_value(doc, field, spec, mapping), desc))
        return _Key(parts, cls._missing_first(sort))
