"""Property test: whatever the query string, a search answers 200 or a 4xx OperationOutcome,
never a 5xx — on the planned shape and on the set-based one."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.search.engine import SqliteSearchEngine
from fhirflow.http import Application
from tests.e2e.fuzzing import SEARCH_NAMES, WORDS
from tests.e2e.fuzzing import _search_values as search_values
from tests.search.client import get
from tests.search.conftest import SHAPES, app_for

PARAMS = [
    "name",
    "family",
    "given",
    "gender",
    "birthdate",
    "identifier",
    "organization",
    "general-practitioner",
    "_id",
    "_lastUpdated",
    "_tag",
    "_profile",
    "_security",
    "_source",
    "_text",
    "_content",
    "_list",
    "_type",
    "code",
    "subject",
    "patient",
    "date",
    "value-quantity",
    "code-value-quantity",
    "status",
    "encounter",
    "_sort",
    "_count",
    "_total",
    "_summary",
    "_elements",
    "_include",
    "_revinclude",
    "_contained",
    "_cursor",
    "_has:Observation:patient:code",
    "_has:Encounter:subject:_has:Observation:encounter:status",
    "subject:Patient.name",
    "subject.name",
    "organization.name",
    "link:Patient.link:Patient.name",
    "gender.name",
    "foo",
    "_query",
    "_filter",
    "near",
    "service-provider._has:Encounter:service-provider:patient.family",
    "_has:Encounter:patient:service-provider.name",
    "patient._has:Observation:patient:code",
]
MODIFIERS = [
    "",
    ":missing",
    ":exact",
    ":contains",
    ":text",
    ":not",
    ":above",
    ":below",
    ":in",
    ":not-in",
    ":of-type",
    ":identifier",
    ":Patient",
    ":iterate",
    ":bogus",
    ":",
]
VALUES = [
    "x",
    "peter",
    "",
    "true",
    "false",
    "2020",
    "ge2020-01-01",
    "lt2020-13-01",
    "xx2020",
    "ap2020-01-02T10:00:00Z",
    "gt5.4|http://unitsofmeasure.org|mg",
    "5.4||mg",
    "1e2",
    "-0",
    "NaN",
    "http://loinc.org|29463-7",
    "|x",
    "x|",
    "|",
    "a\\,b",
    "a,b,,c",
    "\\",
    "$",
    "x$gt5",
    "Patient/example",
    "Patient/example/_history/1",
    "http://ff.example/vs/sugars",  # the fixture's terminology: token :in/:not-in/:below/:above expand
    "http://ff.example/vs/sugars|9",
    "ValueSet/ff-heart",
    "ValueSet/",
    "http://ff.example/codes|ff-sugar",
    "http://ff.example/codes|",
    "http://a/b|1",
    "Observation:subject",
    "*",
    "Patient:organization:Organization",
    "-birthdate,name",
    "_id",
    "0",
    "99999999999",
    "none",
    "accurate",
    "count",
    "name,birthDate",
    "Patient.name",
    "42|-83|5|km",
    "42|x",
    "%00",
    "'",
    '"',
    ";--",
    "(",
    "))",
    "ünïcødé",
    "\U0001f600",
    "a" * 300,
    "a\u19b0b",  # a letter to Python, a separator to SQLite's tokenizer (a phrase, for _content/_text)
    "\u19c8\u1cf2",
    "9223372036854775808",
    "accurate",
]

name = st.builds(lambda p, m: p + m, st.sampled_from(PARAMS), st.sampled_from(MODIFIERS)) | st.text(max_size=12)
value = (
    st.sampled_from(VALUES)
    | st.text(max_size=20)
    # Long OR lists: SQLite refuses an expression over 1,000 levels deep.
    | st.integers(min_value=2, max_value=1100).map(lambda n: ",".join(f"v{i}" for i in range(n)))
)
queries = st.lists(st.tuples(name, value), min_size=0, max_size=4)
paths = st.sampled_from(
    ["/Patient", "/Observation", "/Encounter", "/", "/Patient/ff-comma/*", "/Patient/ff-comma/Observation"]
)


@pytest.fixture(scope="module", params=["planned", "sets"])
def fuzz_app(
    request: pytest.FixtureRequest, search_db: SqliteDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Application:
    engine = SqliteSearchEngine(search_db, **SHAPES[request.param])
    return app_for(search_db, engine, Path(tmp_path_factory.mktemp("fuzz")))


@settings(
    max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(path=paths, pairs=queries, strict=st.booleans())
def test_no_query_string_is_a_server_error(
    fuzz_app: Application, path: str, pairs: list[tuple[str, str]], strict: bool
) -> None:
    query = "&".join(f"{quote(k, safe=':.|$*,')}={quote(v, safe=':.|$*,')}" for k, v in pairs)
    headers = {"prefer": "handling=strict"} if strict else {}
    reply = get(fuzz_app, f"{path}?{query}", headers=headers)
    assert reply.status < 500, (path, query, reply.body[:300])
    body = reply.json()
    if reply.status == 200:
        assert body["resourceType"] == "Bundle"
    else:
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["diagnostics"]


# -- the same shapes, and the e2e fuzzer's search shapes, on the OpenSearch backend ------------------
#
# Through the search service on OpenSearchSearchEngine over the fake OpenSearch, which refuses what a
# cluster would (more than 1,024 clauses, huge `terms`, wildcard patterns too long to build): a
# query string must never make the compiled query one the cluster refuses (a 5xx) or one of
# unbounded size. Long values, many words for _content/_text and long OR lists are the shapes that
# grow a query.

HEAVY_VALUES = [
    "x" * 5000,  # a :contains / :text wildcard too long to build into an automaton
    " ".join(f"w{i}" for i in range(1100)),  # _content/_text: one prefix clause per word
    ",".join(" ".join(f"w{i}" for i in range(j, j + 3)) for j in range(0, 1500, 3)),  # OR of several words
    ",".join(f"ge20{i % 100:02d}" for i in range(600)),  # dates: several range clauses per value
    ",".join(f"http://s|c{i}" for i in range(1000)),
    "a*b?c\\d",
    'x" OR 1=1 OR "',
    "name:* OR _exists_:id",
    "/.*/",
    "(a+)+$",
]
OPENSEARCH_NAMES = sorted({*PARAMS, *(n for names in SEARCH_NAMES.values() for n in names)})
os_name = st.builds(lambda p, m: p + m, st.sampled_from(OPENSEARCH_NAMES), st.sampled_from(MODIFIERS))
os_value = value | st.sampled_from(HEAVY_VALUES) | st.sampled_from(WORDS) | search_values
os_queries = st.lists(st.tuples(os_name, os_value), min_size=0, max_size=4)


@settings(
    max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(path=paths, pairs=os_queries, strict=st.booleans())
def test_no_query_string_is_a_server_error_or_an_unbounded_query_on_opensearch(
    opensearch_app: Application, path: str, pairs: list[tuple[str, str]], strict: bool
) -> None:
    query = "&".join(f"{quote(k, safe=':.|$*,')}={quote(v, safe=':.|$*,')}" for k, v in pairs)
    headers = {"prefer": "handling=strict"} if strict else {}
    reply = get(opensearch_app, f"{path}?{query}", headers=headers)
    assert reply.status < 500, (path, query[:300], reply.body[:300])
    body = reply.json()
    if reply.status == 200:
        assert body["resourceType"] == "Bundle"
    else:
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["diagnostics"]


HEAVY_SEARCHES = [
    ("/Patient?_content=" + quote(" ".join(f"w{i}" for i in range(1100))), "_content"),
    ("/Patient?_text=" + quote(",".join(f"w{i} v{i}" for i in range(600))), "_text"),
    ("/Patient?name:contains=" + "x" * 5000, "name:contains"),
    ("/Observation?code:text=" + "y" * 3000, "code:text"),
    ("/Patient?birthdate=" + quote(",".join(f"ge20{i % 100:02d}" for i in range(600))), "birthdate"),
    ("/Encounter?subject:Patient.birthdate=" + quote(",".join(f"ge19{i % 100:02d}" for i in range(600))), None),
]


@pytest.mark.parametrize(("url", "named"), HEAVY_SEARCHES, ids=[n or "chain" for _, n in HEAVY_SEARCHES])
def test_a_query_that_would_grow_past_the_index_limits_is_a_named_client_error_on_opensearch(
    opensearch_app: Application, url: str, named: str | None
) -> None:
    """More than 1,024 clauses (OpenSearch's max_clause_count) or a wildcard pattern too long to
    build: refused before the index sees it, naming the parameter, instead of the cluster's refusal
    surfacing as a 500."""
    reply = get(opensearch_app, url)
    assert reply.status == 400, reply.body[:300]
    [issue] = reply.json()["issue"]
    assert issue["code"] == "too-costly"
    assert issue["expression"] == [named or "subject:Patient.birthdate"]


@pytest.mark.parametrize(
    "url",
    [
        "/Observation?code=" + quote(",".join(f"http://s|c{i}" for i in range(1000))),
        "/Patient?name:contains=" + "x" * 256,
        "/Patient?_content=" + quote(" ".join(f"w{i}" for i in range(50))),
    ],
)
def test_large_but_bounded_queries_still_run_on_opensearch(opensearch_app: Application, url: str) -> None:
    reply = get(opensearch_app, url)
    assert reply.status == 200, reply.body[:300]
