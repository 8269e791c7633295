"""Request shapes for the HTTP fuzz tests: a short run in ``make test`` (test_properties.py) and a
long one that counts (``make fuzz``, tests/e2e/fuzz_run.py). They hold every shape an attacker
found answering 5xx or storing what it should not (issue 14): odd tenants and ids in the path,
oversize segments, narratives with scripts, bodies large enough to go to the blob store, versions
beyond 64 bits, chains with ``_has`` and totals, long OR lists, words SQLite's tokenizer splits."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from tests.e2e.support import FHIR_JSON, JSON_PATCH
from tests.e2e.test_narrative_safety import ATTACKS, SAFE

KNOWN: list[tuple[str, str, dict[str, Any]]] = [
    ("Patient", "prop-patient", {"resourceType": "Patient", "id": "prop-patient", "gender": "male", "active": True}),
    (
        "Observation",
        "prop-observation",
        {"resourceType": "Observation", "id": "prop-observation", "status": "final", "code": {"text": "x"}},
    ),
    (
        "Binary",
        "prop-binary",
        {"resourceType": "Binary", "id": "prop-binary", "contentType": "text/plain", "data": "aGk="},
    ),
    ("Patient", "prop-deleted", {"resourceType": "Patient", "id": "prop-deleted", "gender": "female"}),
]
TYPES = ["Patient", "Observation", "Binary", "Bundle", "Parameters", "OperationOutcome", "Foo", "patient", "Resource"]
IDS = [k[1] for k in KNOWN] + ["prop-fresh", "a_b", "x" * 65, "_history", "..", "-", "%2E", "%2E%2E", "%00", "x" * 300]
FUZZ_TENANT = "fz"
"""A valid tenant the fuzzer writes to as well; snapshots cover it."""
TENANT_PREFIXES = [
    *([""] * 6),
    f"/tenant/{FUZZ_TENANT}",
    "/tenant/%2E",
    "/tenant/%2E%2E",
    "/tenant/%00",
    "/tenant/a%0Ab",
    "/tenant/-x",
    "/tenant/" + "t" * 65,
    "/tenant/" + "t" * 300,
]
"""Mostly none; else the fuzz tenant, or a tenant no request may name (dot-segments, controls, too long)."""
LARGE_TEXT = "x" * (70 * 1024)
"""Over the store's 64 KiB threshold: a body holding it goes to the blob store, under a key of tenant, type and id."""
ELEMENTS = [
    "id",
    "meta",
    "text",
    "gender",
    "name",
    "active",
    "birthDate",
    "status",
    "code",
    "contentType",
    "data",
    "resourceType",
    "extension",
    "valueQuantity",
    "identifier",
    "contained",
    "_gender",
    "deceasedBoolean",
]

_header_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30)
_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(ELEMENTS) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_resource_like = st.builds(
    lambda rtype, fields: {"resourceType": rtype, **fields},
    st.sampled_from(TYPES),
    st.dictionaries(st.sampled_from(ELEMENTS), _json, max_size=5),
)
_json_patch = st.lists(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"]) | st.text(max_size=5)},
        optional={
            "path": st.sampled_from(
                ["/gender", "/name/0", "/id", "/meta", "/resourceType", "", "/", "/name/-", "gender"]
            )
            | st.text(max_size=10),
            "from": st.sampled_from(["/gender", "/id", "/active"]),
            "value": _json,
        },
    ),
    max_size=4,
)
_fhirpath_patch = st.builds(
    lambda ops: {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": op} for op in ops]},
    st.lists(
        st.lists(
            st.sampled_from(
                [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "type", "valueCode": "add"},
                    {"name": "type", "valueCode": "delete"},
                    {"name": "type", "valueCode": "insert"},
                    {"name": "type", "valueCode": "move"},
                    {"name": "path", "valueString": "Patient.gender"},
                    {"name": "path", "valueString": "Patient"},
                    {"name": "path", "valueString": "Patient.name[0]"},
                    {"name": "path", "valueString": "Patient.id"},
                    {"name": "path", "valueString": "((("},
                    {"name": "name", "valueString": "birthDate"},
                    {"name": "value", "valueCode": "robot"},
                    {"name": "value", "valueCode": "female"},
                    {"name": "value", "valueInteger": 3},
                    {"name": "index", "valueInteger": -1},
                    {"name": "source", "valueInteger": 9},
                    {"name": "destination", "valueInteger": 0},
                ]
            ),
            max_size=5,
        ),
        max_size=3,
    ),
)
_bodies = st.one_of(
    _resource_like.map(lambda r: json.dumps(r).encode()),
    _json.map(lambda v: json.dumps(v).encode()),
    _json_patch.map(lambda v: json.dumps(v).encode()),
    _fhirpath_patch.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.text(max_size=40).map(str.encode),
)
_content_types = (
    st.sampled_from(
        [
            FHIR_JSON,
            "application/json",
            JSON_PATCH,
            "application/fhir+xml",
            "text/plain",
            "image/png",
            "application/fhir+json; charset=utf-8",
            "application/json; charset=latin-1",
            "multipart/form-data; boundary=x",
            "*/*",
            ";",
            "application/",
        ]
    )
    | _header_text
)
_accepts = (
    st.sampled_from(
        [
            FHIR_JSON,
            "application/json",
            "application/fhir+xml",
            "*/*",
            "text/html",
            "image/png",
            "application/*;q=0",
            "application/fhir+json;q=abc",
            ",,,",
            "application/fhir+json; q=0",
        ]
    )
    | _header_text
)
_etags = st.sampled_from(['W/"1"', 'W/"2"', '"1"', "*", "W/", 'W/"-1"', 'W/"99999999999999999999"', ""]) | _header_text
_prefers = (
    st.sampled_from(
        [
            "return=minimal",
            "return=representation",
            "return=OperationOutcome",
            "return=",
            "return",
            "handling=strict",
            'return="minimal"',
            "return=minimal, return=representation",
        ]
    )
    | _header_text
)
_params = st.dictionaries(
    st.sampled_from(["_format", "_pretty", "_summary", "_elements"]),
    st.sampled_from(["json", "xml", "true", "false", "text", "bogus", "gender", ""]),
    max_size=1,
)


_plausible_fields: dict[str, st.SearchStrategy[Any]] = {
    "meta": st.fixed_dictionaries(
        {},
        optional={
            "versionId": st.sampled_from(["1", "99", "x"]),
            "tag": st.lists(st.fixed_dictionaries({"code": st.text(max_size=4)}), max_size=1),
        },
    ),
    "gender": st.sampled_from(["male", "female", "other", "unknown", "robot", "", 1]),
    "active": st.sampled_from([True, False, "true", 1, None]),
    "birthDate": st.sampled_from(["1970-01-01", "1970", "1970-13-01", "yesterday", "2024-02-30"]),
    "name": st.lists(
        st.fixed_dictionaries(
            {}, optional={"family": st.text(max_size=6), "given": st.lists(st.text(max_size=4), max_size=2)}
        ),
        max_size=2,
    ),
    "status": st.sampled_from(["final", "preliminary", "nope"]),
    "code": st.sampled_from([{"text": "x"}, {"coding": [{"system": "http://loinc.org", "code": "1-8"}]}, "x"]),
    "contentType": st.sampled_from(["text/plain", "image/png", ""]),
    "data": st.sampled_from(["aGk=", "!!", ""]),
    "valueQuantity": st.sampled_from([{"value": 1}, {"value": "1"}]),
    "unknownElement": _json,
    "text": st.fixed_dictionaries(
        {"status": st.sampled_from(["generated", "additional"]), "div": st.sampled_from([*ATTACKS.values(), *SAFE])}
    ),
    "contained": st.lists(
        st.fixed_dictionaries(
            {
                "resourceType": st.just("Organization"),
                "id": st.just("c1"),
                "text": st.fixed_dictionaries(
                    {"status": st.just("generated"), "div": st.sampled_from(list(ATTACKS.values()))}
                ),
            }
        ),
        max_size=1,
    ),
    "address": st.sampled_from([[{"text": LARGE_TEXT}], [{"city": "x"}]]),
}


def _plausible(rtype: str, id_: str) -> st.SearchStrategy[bytes]:
    """Resources of the URL's type, mostly well-formed, with some invalid values: they reach validation."""
    return st.fixed_dictionaries(
        {"resourceType": st.sampled_from([rtype, rtype, rtype, "Patient"]), "id": st.sampled_from([id_, id_, "other"])},
        optional=_plausible_fields,
    ).map(lambda r: json.dumps(r).encode())


def _maybe(values: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    """Absent two times in three: most requests then get past negotiation and reach the use case."""
    return st.one_of(st.none(), st.none(), values)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    method = draw(st.sampled_from(["POST", "PUT", "PATCH"]))
    rtype = draw(st.sampled_from(["Patient", "Patient", "Patient", "Observation", "Binary", *TYPES]))
    id_ = draw(st.sampled_from([*IDS, "prop-fresh"]))
    if method != "POST" and draw(st.booleans()):
        rtype, id_ = draw(st.sampled_from([(known[0], known[1]) for known in KNOWN]))
    url = draw(st.sampled_from(TENANT_PREFIXES)) + (f"/{rtype}" if method == "POST" else f"/{rtype}/{id_}")
    content_type: str | None
    if method == "PATCH":
        content_type, content = draw(
            st.one_of(
                st.tuples(st.just(JSON_PATCH), _json_patch.map(lambda v: json.dumps(v).encode())),
                st.tuples(st.just(FHIR_JSON), _fhirpath_patch.map(lambda v: json.dumps(v).encode())),
                st.tuples(_maybe(_content_types), _bodies),
            )
        )
    else:
        content_type = draw(_maybe(_content_types))
        content = draw(st.one_of(_plausible(rtype, id_), _plausible(rtype, id_), _bodies))
    headers = {"Content-Type": content_type} if content_type is not None else {}
    for name, values in (
        ("Accept", _accepts),
        ("If-Match", _etags),
        ("If-None-Match", _etags),
        ("Prefer", _prefers),
    ):
        value = draw(_maybe(values))
        if value is not None:
            headers[name] = value
    return {"method": method, "url": url, "headers": headers, "content": content, "params": draw(_params)}


# -- reads and searches ------------------------------------------------------------------------------

VIDS = ["1", "2", "01", "-1", "9223372036854775807", "9223372036854775808", "9" * 40, "x", "%00"]
JOBS = ["a" * 300, "a" * 256, "a" * 65, "0" * 32, "..", "%2E%2E", "%00", "a%0Ab"]
FAMILIES = ["Welch", "Other", "Nobody"]
WORDS = ["a\u19b0b", "\u19c8\u19c9", "x\u1cf2y z", "ünïcødé", "\U0001f600", '"', "AND", "NEAR(", "*", "^a", "Welch"]
SEARCH_NAMES = {
    "Encounter": [
        "patient",
        "subject",
        "service-provider",
        "service-provider.name",
        "service-provider._has:Encounter:service-provider:patient.family",
        "patient._has:Encounter:patient:service-provider.name",
        "subject:Patient.family",
        "status",
        "date",
        "_id",
        "_content",
        "_text",
    ],
    "Patient": [
        "_has:Encounter:patient:service-provider.name",
        "_has:Encounter:patient:_has:Encounter:service-provider:status",
        "organization.name",
        "general-practitioner.name",
        "name",
        "family",
        "gender",
        "birthdate",
        "identifier",
        "_tag",
        "_id",
        "_content",
        "_text",
    ],
}
RESULT_PARAMS = [
    ("_total", "accurate"),
    ("_total", "estimate"),
    ("_summary", "count"),
    ("_count", "0"),
    ("_count", "1"),
]


def _or_list(size: int) -> str:
    return ",".join(f"v{i}" for i in range(size))


_search_values = st.one_of(
    st.sampled_from([*FAMILIES, "fz-p1", "fz-p2", "Organization/fz-o1", "male", "ge2000", "finished", "Acme"]),
    st.sampled_from(WORDS),
    st.integers(min_value=2, max_value=1100).map(_or_list),
    st.text(max_size=12),
)


@st.composite
def reads(draw: st.DrawFn) -> str:
    """A GET URL: a version beyond 64 bits, an overlong or odd job, or a search with chains,
    ``_has``, totals, long OR lists and words SQLite splits, under some tenant prefix."""
    prefix = draw(st.sampled_from(TENANT_PREFIXES))
    kind = draw(st.sampled_from(["vread", "async", "export", "search", "search", "search", "search"]))
    if kind == "vread":
        return f"{prefix}/Patient/{draw(st.sampled_from(['fz-p1', *IDS]))}/_history/{draw(st.sampled_from(VIDS))}"
    if kind in ("async", "export"):
        return f"{prefix}/_{kind}/{draw(st.sampled_from(JOBS))}"
    rtype = draw(st.sampled_from(sorted(SEARCH_NAMES)))
    pairs = draw(
        st.lists(st.tuples(st.sampled_from(SEARCH_NAMES[rtype]), _search_values), min_size=1, max_size=3)
    ) + draw(st.lists(st.sampled_from(RESULT_PARAMS), max_size=1))
    query = "&".join(f"{quote(k, safe=':._')}={quote(v, safe=',')}" for k, v in pairs)
    return f"{prefix}/{rtype}?{query}"


def seed(http: Any) -> None:
    """A small graph for chains and ``_has`` (Encounters of two patients at two organizations), in
    the default tenant and the fuzz tenant: a chain can then drive a search with an empty page."""
    for prefix in ("", f"/tenant/{FUZZ_TENANT}"):
        resources: list[dict[str, Any]] = [
            {"resourceType": "Organization", "id": "fz-o1", "name": "Acme"},
            {"resourceType": "Organization", "id": "fz-o2", "name": "Beta"},
            {"resourceType": "Patient", "id": "fz-p1", "name": [{"family": "Welch"}]},
            {"resourceType": "Patient", "id": "fz-p2", "name": [{"family": "Other"}]},
        ]
        for number, (subject, provider) in enumerate((("fz-p1", "fz-o2"), ("fz-p1", "fz-o2"), ("fz-p2", "fz-o1"))):
            resources.append(
                {
                    "resourceType": "Encounter",
                    "id": f"fz-e{number}",
                    "status": "finished",
                    "class": {"code": "AMB"},
                    "subject": {"reference": f"Patient/{subject}"},
                    "serviceProvider": {"reference": f"Organization/{provider}"},
                }
            )
        for resource in resources:
            reply = http.put(f"{prefix}/{resource['resourceType']}/{resource['id']}", json=resource)
            assert reply.status_code in (200, 201), reply.text
