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
