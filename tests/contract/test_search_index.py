"""The SearchIndex contract (the write side index-sync uses): SQLite and the in-memory fake."""

from __future__ import annotations

import pytest

from fhirflow.ports import SearchIndex


@pytest.fixture(params=["sqlite", "memory"])
def index(request: pytest.FixtureRequest, tmp_path) -> SearchIndex:
    if request.param == "sqlite":
        from fhirflow.adapters.sqlite.database import SqliteDatabase
        from fhirflow.adapters.sqlite.index import SqliteSearchIndex

        return SqliteSearchIndex(SqliteDatabase(tmp_path / "index.sqlite3"))
    from fhirflow.adapters.memory import InMemorySearchIndex

    return InMemorySearchIndex()


def patient(version: int) -> dict[str, object]:
    return {"resourceType": "Patient", "id": "p", "meta": {"versionId": str(version)}}


def test_newer_versions_replace_older_ones(index: SearchIndex) -> None:
    assert index.indexed_version("t", "Patient", "p") is None
    assert index.apply("t", "Patient", "p", 1, 10, patient(1)) is True
    assert index.apply("t", "Patient", "p", 3, 30, patient(3)) is True
    assert index.indexed_version("t", "Patient", "p") == 3


def test_equal_or_older_versions_change_nothing(index: SearchIndex) -> None:
    index.apply("t", "Patient", "p", 2, 20, patient(2))
    assert index.apply("t", "Patient", "p", 2, 20, patient(2)) is False
    assert index.apply("t", "Patient", "p", 1, 10, patient(1)) is False
    assert index.indexed_version("t", "Patient", "p") == 2


def test_a_deletion_is_a_tombstone_that_older_versions_cannot_undo(index: SearchIndex) -> None:
    index.apply("t", "Patient", "p", 1, 10, patient(1))
    assert index.apply("t", "Patient", "p", 2, 20, None) is True
    assert index.indexed_version("t", "Patient", "p") == 2
    assert index.apply("t", "Patient", "p", 1, 10, patient(1)) is False
    assert index.apply("t", "Patient", "p", 3, 30, patient(3)) is True


def test_resources_and_tenants_are_separate(index: SearchIndex) -> None:
    index.apply("t1", "Patient", "p", 5, 50, patient(5))
    assert index.indexed_version("t2", "Patient", "p") is None
    assert index.indexed_version("t1", "Observation", "p") is None
    assert index.apply("t2", "Patient", "p", 1, 10, patient(1)) is True
