"""Runtime SearchParameters on the embedded index: the per-tenant catalog (caching, invalidation
across database handles, "searchable" marks per definition), the checks that refuse what the
server could not index, and the forced reindex of rows. The job and the HTTP side are in
test_reindex.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.index import IndexedResource, SqliteSearchIndex
from fhirflow.adapters.sqlite.search.engine import SqliteSearchEngine
from fhirflow.adapters.sqlite.searchparams import SqliteSearchParamCatalog
from fhirflow.errors import BadRequest, InvalidResource
from fhirflow.query.parser import parse
from fhirflow.search_ports import PageRequest, SearchScope
from fhirflow.searchparams.custom import check_search_parameter
from fhirflow.searchparams.registry import default_registry

EYE = "http://example.org/eye-colour"


def eye_colour(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "SearchParameter",
        "id": "eye",
        "url": "http://example.org/SearchParameter/eye-colour",
        "name": "EyeColour",
        "status": "active",
        "description": "Eye colour (an extension)",
        "code": "eye-colour",
        "base": ["Patient"],
        "type": "token",
        "expression": f"Patient.extension.where(url='{EYE}').value",
        **changes,
    }


def patient(id_: str, colour: str | None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": id_, "name": [{"family": "Doe"}]}
    if colour:
        resource["extension"] = [{"url": EYE, "valueCode": colour}]
    return resource


@pytest.fixture
def db(tmp_path: Path) -> SqliteDatabase:
    return SqliteDatabase(tmp_path / "index.sqlite3")


@pytest.fixture
def index(db: SqliteDatabase) -> SqliteSearchIndex:
    return SqliteSearchIndex(db)


def token_rows(db: SqliteDatabase, code: str, tenant: str = "t") -> set[str]:
    """The ids of resources with a search row for ``code`` (straight from the table)."""
    rows = (
        db.connection()
        .execute(
            "SELECT r.id FROM search_token t JOIN search_resource r ON r.rid = t.rid "
            "WHERE t.tenant = ? AND t.param = ?",
            (tenant, code),
        )
        .fetchall()
    )
    return {row[0] for row in rows}


def search(db: SqliteDatabase, catalog: SqliteSearchParamCatalog, query: str, tenant: str = "t") -> list[str]:
    parsed = parse("Patient", parse_qsl(query), strict=True, registry=catalog.searchable_registry(tenant))
    page = SqliteSearchEngine(db).page(SearchScope(tenant, "http://fhir.test", ("Patient",)), parsed, PageRequest(50))
    return sorted(hit.id for hit in page.hits)


# -- the catalog ------------------------------------------------------------------------------------


def test_a_tenant_without_parameters_of_its_own_uses_the_official_registry(index: SqliteSearchIndex) -> None:
    assert index.catalog.index_registry("t") is default_registry()
    assert index.catalog.searchable_registry("t") is default_registry()


def test_a_searchparameter_indexes_new_writes_at_once_but_is_not_searchable_yet(
    db: SqliteDatabase, index: SqliteSearchIndex
) -> None:
    index.apply("t", "Patient", "old", 1, 1000, patient("old", "blue"))

    index.apply("t", "SearchParameter", "eye", 1, 2000, eye_colour())
    index.apply("t", "Patient", "new", 1, 3000, patient("new", "blue"))

    assert token_rows(db, "eye-colour") == {"new"}  # only the write after it
    assert index.catalog.index_registry("t").get("Patient", "eye-colour") is not None
    assert index.catalog.searchable_registry("t").get("Patient", "eye-colour") is None
    with pytest.raises(BadRequest, match="eye-colour"):
        search(db, index.catalog, "eye-colour=blue")


def test_the_cached_registry_costs_one_primary_key_read(db: SqliteDatabase, index: SqliteSearchIndex) -> None:
    index.apply("t", "SearchParameter", "eye", 1, 2000, eye_colour())
    first = index.catalog.index_registry("t")
    statements: list[str] = []
    db.connection().set_trace_callback(statements.append)
    try:
        again = index.catalog.index_registry("t")
    finally:
        db.connection().set_trace_callback(None)

    assert again is first
    assert statements == ["SELECT generation FROM search_param_generation WHERE tenant = 't'"]


def test_another_process_sees_a_new_parameter_on_its_next_call(tmp_path: Path, index: SqliteSearchIndex) -> None:
    # A second handle on the same file stands for another server process: its own cache, no shared memory.
    other = SqliteSearchParamCatalog(SqliteDatabase(tmp_path / "index.sqlite3"))
    assert other.index_registry("t").get("Patient", "eye-colour") is None

    index.apply("t", "SearchParameter", "eye", 1, 2000, eye_colour())

    assert other.index_registry("t").get("Patient", "eye-colour") is not None
    index.apply("t", "SearchParameter", "eye", 2, 3000, None)  # deleted
    assert other.index_registry("t").get("Patient", "eye-colour") is None


def test_parameters_belong_to_their_tenant(index: SqliteSearchIndex) -> None:
    index.apply("a", "SearchParameter", "eye", 1, 2000, eye_colour())

    assert index.catalog.index_registry("a").get("Patient", "eye-colour") is not None
    assert index.catalog.index_registry("b") is default_registry()


def test_only_active_parameters_take_effect(index: SqliteSearchIndex) -> None:
    index.apply("t", "SearchParameter", "eye", 1, 2000, eye_colour(status="draft"))
    assert index.catalog.index_registry("t").get("Patient", "eye-colour") is None

    index.apply("t", "SearchParameter", "eye", 2, 3000, eye_colour())
    assert index.catalog.index_registry("t").get("Patient", "eye-colour") is not None

    index.apply("t", "SearchParameter", "eye", 3, 4000, eye_colour(status="retired"))
    assert index.catalog.index_registry("t").get("Patient", "eye-colour") is None


def mark_all(index: SqliteSearchIndex, tenant: str = "t") -> tuple[str, ...]:
    since = index.catalog.generation(tenant)
    with index.db.write() as conn:
        return index.catalog.mark_searchable(conn, tenant, (), None, since)


def test_a_mark_holds_for_the_definition_it_was_made_for(index: SqliteSearchIndex) -> None:
    index.apply("t", "SearchParameter", "eye", 1, 2000, eye_colour())
    assert mark_all(index) == ("Patient.eye-colour",)
    assert index.catalog.searchable_registry("t").get("Patient", "eye-colour") is not None

    index.apply("t", "SearchParameter", "eye", 2, 3000, eye_colour(description="Reworded"))
    assert index.catalog.searchable_registry("t").get("Patient", "eye-colour") is not None  # same values

    index.apply("t", "SearchParameter", "eye", 3, 4000, eye_colour(expression="Patient.extension.value"))
    assert index.catalog.searchable_registry("t").get("Patient", "eye-colour") is None  # other values


def test_a_deleted_and_recreated_parameter_needs_a_new_reindex(index: SqliteSearchIndex) -> None:
    index.apply("t", "SearchParameter", "eye", 1, 2000, eye_colour())
    mark_all(index)

    index.apply("t", "SearchParameter", "eye", 2, 3000, None)
    index.apply("t", "Patient", "between", 1, 3500, patient("between", "blue"))  # written without the parameter
    index.apply("t", "SearchParameter", "eye", 3, 4000, eye_colour())

    assert index.catalog.searchable_registry("t").get("Patient", "eye-colour") is None


def test_a_walk_that_started_before_a_definition_does_not_mark_it(index: SqliteSearchIndex) -> None:
    started = index.catalog.generation("t")
    index.apply("t", "SearchParameter", "eye", 1, 2000, eye_colour())

    with index.db.write() as conn:
        marked = index.catalog.mark_searchable(conn, "t", (), None, started)

    assert marked == ()
    assert index.catalog.searchable_registry("t").get("Patient", "eye-colour") is None


def test_a_walk_of_other_types_does_not_mark_it(index: SqliteSearchIndex) -> None:
    index.apply("t", "SearchParameter", "eye", 1, 2000, eye_colour())
    since = index.catalog.generation("t")
    with index.db.write() as conn:
        assert index.catalog.mark_searchable(conn, "t", ("Observation",), None, since) == ()
        assert index.catalog.mark_searchable(conn, "t", ("Patient",), None, since) == ("Patient.eye-colour",)


# -- writes and the forced reindex ------------------------------------------------------------------


def test_rows_prepared_before_a_parameter_appeared_are_built_again(
    db: SqliteDatabase, index: SqliteSearchIndex
) -> None:
    resource = patient("racer", "green")
    index.prepare("t", "Patient", "racer", 1, 1000, resource)  # outside the write lock, old parameters

    index.apply("t", "SearchParameter", "eye", 1, 2000, eye_colour())
    index.apply("t", "Patient", "racer", 1, 1000, resource)

    assert token_rows(db, "eye-colour") == {"racer"}


def test_reindex_recomputes_the_rows_of_current_versions(db: SqliteDatabase, index: SqliteSearchIndex) -> None:
    index.apply("t", "Patient", "a", 1, 1000, patient("a", "blue"))
    index.apply("t", "Patient", "b", 1, 1000, patient("b", None))
    index.apply("t", "SearchParameter", "eye", 1, 2000, eye_colour())
    assert token_rows(db, "eye-colour") == set()

    done, skipped, errors = index.reindex(
        "t",
        [
            IndexedResource("Patient", "a", 1, 1000, patient("a", "blue")),
            IndexedResource("Patient", "b", 1, 1000, patient("b", None)),
        ],
    )

    assert (done, skipped, errors) == (2, 0, [])
    assert token_rows(db, "eye-colour") == {"a"}
    mark_all(index)
    assert search(db, index.catalog, "eye-colour=blue") == ["a"]
    assert search(db, index.catalog, "family=doe") == ["a", "b"]  # the other rows are all still there
    # replaced, not added to: version 1 again takes the path of an existing resource
    count = "SELECT count(*) FROM search_string WHERE param = 'family'"
    assert db.connection().execute(count).fetchone()[0] == 2
    assert db.connection().execute("SELECT count(*) FROM search_resource").fetchone()[0] == 3


def test_reindex_leaves_a_resource_that_moved_on_to_its_write(db: SqliteDatabase, index: SqliteSearchIndex) -> None:
    index.apply("t", "SearchParameter", "eye", 1, 500, eye_colour())
    index.apply("t", "Patient", "a", 1, 1000, patient("a", "blue"))
    index.apply("t", "Patient", "a", 2, 2000, patient("a", "brown"))  # after the batch read version 1

    done, skipped, _ = index.reindex("t", [IndexedResource("Patient", "a", 1, 1000, patient("a", "blue"))])

    assert (done, skipped) == (0, 1)
    mark_all(index)
    assert search(db, index.catalog, "eye-colour=brown") == ["a"]
    assert search(db, index.catalog, "eye-colour=blue") == []


def test_a_custom_expression_that_fails_on_some_data_gives_no_values_not_a_failed_write(
    db: SqliteDatabase, index: SqliteSearchIndex, caplog: pytest.LogCaptureFixture
) -> None:
    # Passes the checks on an empty Patient, fails on a Patient with two names (+ on two items).
    definition = eye_colour(id="fam", code="one-family", expression="Patient.name.family + 'x'")
    index.apply("t", "SearchParameter", "fam", 1, 500, definition)
    one = {"resourceType": "Patient", "id": "one", "name": [{"family": "Roe"}]}
    two = {"resourceType": "Patient", "id": "two", "name": [{"family": "Roe"}, {"family": "Poe"}]}

    assert index.apply("t", "Patient", "one", 1, 1000, one)
    assert index.apply("t", "Patient", "two", 1, 1000, two)

    assert token_rows(db, "one-family") == {"one"}
    assert "a custom search parameter failed on a resource" in caplog.text


# -- what the server refuses ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "element", "words"),
    [
        ({"base": ["Nonsense"]}, "SearchParameter.base", "not a resource type"),
        ({"type": "special"}, "SearchParameter.type", "special"),
        ({"expression": "Patient.extension.where(url = 'x'"}, "SearchParameter.expression", "not valid FHIRPath"),
        ({"expression": "Patient name"}, "SearchParameter.expression", "not valid FHIRPath"),
        ({"expression": "Patient.name.noSuchFunction()"}, "SearchParameter.expression", "cannot be evaluated"),
        ({"expression": "Observation.code"}, "SearchParameter.expression", "not a base"),
        ({"code": "name"}, "SearchParameter.code", "already a built-in search parameter of Patient"),
        ({"code": "_tag"}, "SearchParameter.code", "must be a plain name"),
        ({"code": "status", "base": ["Resource"], "expression": "Resource.id"}, "SearchParameter.code", "built-in"),
        ({"type": "reference", "target": ["Nope"]}, "SearchParameter.target", "not a resource type"),
        ({"type": "composite"}, "SearchParameter.component", "needs components"),
        (
            {"type": "composite", "component": [{"definition": "http://example.org/none", "expression": "value"}]},
            "SearchParameter.component.definition",
            "unknown",
        ),
        ({"expression": None}, "SearchParameter.expression", "required"),
    ],
)
def test_a_searchparameter_the_server_cannot_index_is_refused(
    changes: dict[str, Any], element: str, words: str
) -> None:
    resource = {k: v for k, v in eye_colour(**changes).items() if v is not None}

    with pytest.raises(InvalidResource) as caught:
        check_search_parameter(resource)

    assert caught.value.status == 400
    assert words in caught.value.diagnostics
    assert caught.value.issues[0].expression == (element,)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"code": "nickname", "type": "string", "expression": "Patient.name.where(use = 'nickname').given"},
        {"code": "gp", "type": "reference", "target": ["Practitioner"], "expression": "Patient.generalPractitioner"},
        {"code": "born-on", "type": "date", "expression": "Patient.birthDate | Patient.deceased.ofType(dateTime)"},
        {"code": "any-id", "base": ["Patient", "Practitioner"], "expression": "Patient.id | Practitioner.id"},
    ],
)
def test_indexable_searchparameters_pass(changes: dict[str, Any]) -> None:
    params = check_search_parameter(eye_colour(**changes))

    assert {p.base for p in params} == set(eye_colour(**changes)["base"])
    assert all(p.custom for p in params)


def test_the_catalog_tables_answer_by_primary_key() -> None:
    # The hot path's read (the generation) must not scan: it is a lookup of one row by key.
    conn = sqlite3.connect(":memory:")
    from fhirflow.adapters.sqlite.searchparams import SCHEMA

    conn.executescript(SCHEMA)
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT generation FROM search_param_generation WHERE tenant = ?", ("t",)
    ).fetchall()
    assert "USING PRIMARY KEY" in plan[0][3]
