"""The search rows of the embedded index: written with each indexed version, replaced on update,
removed on delete, per tenant; checked through searches on the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.index import SqliteSearchIndex
from fhirflow.adapters.sqlite.search.engine import SqliteSearchEngine
from fhirflow.adapters.sqlite.search.writer import delete_search_rows, index_resource
from fhirflow.query.parser import parse
from fhirflow.search_ports import PageRequest, SearchScope


@pytest.fixture
def db(tmp_path: Path) -> SqliteDatabase:
    return SqliteDatabase(tmp_path / "index.sqlite3")


@pytest.fixture
def index(db: SqliteDatabase) -> SqliteSearchIndex:
    return SqliteSearchIndex(db)


@pytest.fixture
def engine(db: SqliteDatabase) -> SqliteSearchEngine:
    return SqliteSearchEngine(db)


def patient(family: str, *, narrative: str | None = None, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Patient", "id": "p1", "name": [{"family": family}], **extra}
    if narrative:
        resource["text"] = {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{narrative}</div>',
        }
    return resource


def found(engine: SqliteSearchEngine, rtype: str, query: str, tenant: str = "t") -> list[str]:
    parsed = parse(rtype, parse_qsl(query), strict=True)
    page = engine.page(SearchScope(tenant, "http://fhir.test", (rtype,)), parsed, PageRequest(100))
    return [f"{hit.type}/{hit.id}" for hit in page.hits]


def test_an_update_replaces_every_value(index: SqliteSearchIndex, engine: SqliteSearchEngine) -> None:
    index.apply("t", "Patient", "p1", 1, 1000, patient("Alpha", narrative="first words", gender="male"))
    assert found(engine, "Patient", "family=alpha") == ["Patient/p1"]
    assert found(engine, "Patient", "_text=first") == ["Patient/p1"]

    index.apply("t", "Patient", "p1", 2, 2000, patient("Beta", narrative="second words"))

    assert found(engine, "Patient", "family=alpha") == []
    assert found(engine, "Patient", "gender=male") == []
    assert found(engine, "Patient", "_text=first") == []
    assert found(engine, "Patient", "family=beta") == ["Patient/p1"]
    assert found(engine, "Patient", "_text=second") == ["Patient/p1"]
    assert found(engine, "Patient", "_lastUpdated=gt1970-01-01T00:00:01Z") == ["Patient/p1"]


def test_an_older_version_changes_nothing(index: SqliteSearchIndex, engine: SqliteSearchEngine) -> None:
    index.apply("t", "Patient", "p1", 2, 2000, patient("Newer"))
    assert index.apply("t", "Patient", "p1", 1, 1000, patient("Older")) is False
    assert found(engine, "Patient", "family=older") == []
    assert found(engine, "Patient", "family=newer") == ["Patient/p1"]


def test_a_deletion_removes_the_resource_from_search(index: SqliteSearchIndex, engine: SqliteSearchEngine) -> None:
    index.apply("t", "Patient", "p1", 1, 1000, patient("Alpha", narrative="words"))
    index.apply("t", "Patient", "p1", 2, 2000, None)
    assert found(engine, "Patient", "family=alpha") == []
    assert found(engine, "Patient", "_text=words") == []
    assert found(engine, "Patient", "") == []


def test_delete_search_rows_of_an_unknown_resource(db: SqliteDatabase, index: SqliteSearchIndex) -> None:
    with db.write() as conn:
        assert delete_search_rows(conn, "t", "Patient", "nobody") is False
        index_resource(conn, "t", "Patient", "p9", 1, 1, patient("Gamma", id="p9"))
        assert delete_search_rows(conn, "t", "Patient", "p9") is True


def test_tenants_do_not_share_rows(index: SqliteSearchIndex, engine: SqliteSearchEngine) -> None:
    index.apply("t", "Patient", "p1", 1, 1000, patient("Alpha"))
    index.apply("u", "Patient", "p1", 1, 1000, patient("Beta"))
    assert found(engine, "Patient", "family=alpha", tenant="t") == ["Patient/p1"]
    assert found(engine, "Patient", "family=alpha", tenant="u") == []
    assert found(engine, "Patient", "family=beta", tenant="u") == ["Patient/p1"]
    index.apply("u", "Patient", "p1", 2, 2000, None)
    assert found(engine, "Patient", "family=alpha", tenant="t") == ["Patient/p1"]


def test_a_relative_canonical_is_a_local_reference(index: SqliteSearchIndex, engine: SqliteSearchEngine) -> None:
    response = {
        "resourceType": "QuestionnaireResponse",
        "id": "qr",
        "status": "completed",
        "questionnaire": "Questionnaire/q1",
    }
    absolute = {**response, "id": "qr2", "questionnaire": "http://example.org/Questionnaire/q1|2"}
    index.apply("t", "QuestionnaireResponse", "qr", 1, 1, response)
    index.apply("t", "QuestionnaireResponse", "qr2", 1, 1, absolute)
    assert found(engine, "QuestionnaireResponse", "questionnaire=Questionnaire/q1") == ["QuestionnaireResponse/qr"]
    assert found(engine, "QuestionnaireResponse", "questionnaire=http://example.org/Questionnaire/q1") == [
        "QuestionnaireResponse/qr2"
    ]
    assert found(engine, "QuestionnaireResponse", "questionnaire=http://example.org/Questionnaire/q1%7C2") == [
        "QuestionnaireResponse/qr2"
    ]


def test_concept_text_stays_searchable_when_a_coding_has_another_display(
    index: SqliteSearchIndex, engine: SqliteSearchEngine
) -> None:
    observation = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "1-1", "display": "Glucose"}],
            "text": "Sugar level",
        },
    }
    index.apply("t", "Observation", "o1", 1, 1, observation)
    assert found(engine, "Observation", "code:text=sugar") == ["Observation/o1"]
    assert found(engine, "Observation", "code:text=glucose") == ["Observation/o1"]
    assert found(engine, "Observation", "code:text=level") == ["Observation/o1"]  # a later word of the text
    assert found(engine, "Observation", "code:text=evel") == []
