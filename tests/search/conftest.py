"""The indexed search fixture (built once per session) and the search service over it, on the
SQLite backend and on the OpenSearch backend (over the fake OpenSearch)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirflow.adapters.opensearch.engine import OpenSearchSearchEngine
from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex
from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.search.engine import SqliteSearchEngine
from fhirflow.adapters.sqlite.store import SqliteResourceStore
from fhirflow.cursor import CursorSigner
from fhirflow.http import Application
from fhirflow.runtime import Dependencies
from fhirflow.settings import Settings
from fhirflow_search.app import build_app
from fhirflow_search.settings import SearchSettings
from fhirflow_search.usecase import SearchService
from tests.search import fixtures
from tests.support.opensearch_fake import FakeOpenSearch

NOW_MS = 1_718_000_000_000  # 2024-06-10T06:13:20Z: fixes the `ap` window on dates

SHAPES: dict[str, dict[str, int]] = {
    # The planner's thresholds: the defaults, then thresholds that force every query into the
    # set-based shape (no driver) and into the bounded scan with its fallback to sets.
    "planned": {},
    "sets": {"estimate_cap": 0, "scan_window": 10**9, "count_driver_cap": 0},
    "scan": {"estimate_cap": 0, "scan_window": 3, "count_driver_cap": 10**9},
}


class FixedClock:
    @staticmethod
    def now_ms() -> int:
        return NOW_MS


@pytest.fixture(scope="session")
def search_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteDatabase]:
    if not fixtures.EXAMPLES.exists() or not fixtures.SYNTHEA.exists():
        pytest.skip(f"the HL7 examples and Synthea bundles are not under {fixtures.SHARED}")
    db = SqliteDatabase(Path(tmp_path_factory.mktemp("search")) / "search.sqlite3")
    fixtures.load(db)
    yield db
    db.close()


@pytest.fixture(scope="session")
def search_engine(search_db: SqliteDatabase) -> SqliteSearchEngine:
    return SqliteSearchEngine(search_db, clock=lambda: NOW_MS)


def app_for(db: SqliteDatabase, engine: SqliteSearchEngine, data_dir: Path, **settings: int) -> Application:
    deps = Dependencies(settings=Settings(data_dir=data_dir), store=SqliteResourceStore(db), cursors=CursorSigner(b"k"))
    deps.clock = FixedClock()
    return build_app(deps, SearchService(engine, SearchSettings(**settings)))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def search_app(
    search_db: SqliteDatabase, search_engine: SqliteSearchEngine, tmp_path_factory: pytest.TempPathFactory
) -> Application:
    return app_for(search_db, search_engine, Path(tmp_path_factory.mktemp("search-settings")))


@pytest.fixture(scope="session", params=list(SHAPES))
def shaped_app(
    request: pytest.FixtureRequest, search_db: SqliteDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Application:
    """The search service with the planner's thresholds set for each query shape in turn."""
    engine = SqliteSearchEngine(search_db, clock=lambda: NOW_MS, **SHAPES[request.param])
    return app_for(search_db, engine, Path(tmp_path_factory.mktemp("search-settings")))


@pytest.fixture(scope="session")
def opensearch_app(search_db: SqliteDatabase, tmp_path_factory: pytest.TempPathFactory) -> Application:
    """The search service on the OpenSearch backend, over the fixture indexed into the fake
    OpenSearch through the adapter (test_conformance_opensearch.py)."""
    fake = FakeOpenSearch()
    index = OpenSearchSearchIndex(client=fake, create_missing=True)
    index.ensure_index()
    assert fixtures.load_opensearch(index) == len(fake.docs)
    engine = OpenSearchSearchEngine(index, clock=lambda: NOW_MS)
    deps = Dependencies(
        settings=Settings(data_dir=Path(tmp_path_factory.mktemp("opensearch-settings"))),
        store=SqliteResourceStore(search_db),
        cursors=CursorSigner(b"k"),
    )
    deps.clock = FixedClock()
    return build_app(deps, SearchService(engine, SearchSettings()))  # type: ignore[arg-type]
