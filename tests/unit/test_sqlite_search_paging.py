"""Keyset paging on SQLite: every match exactly once in the sort order, ``previous`` pages equal
the pages before them, ties and missing values included, under every query shape; cursors
cannot be altered or moved to another search."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.index import SqliteSearchIndex
from fhirflow.adapters.sqlite.search.engine import SqliteSearchEngine
from fhirflow.http import Application
from tests.search.client import get, ids
from tests.search.conftest import SHAPES, app_for

FAMILIES = ["Adams", "Baker", "Clark", None]


def patients(count: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    out = []
    for n in range(count):
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "id": f"p{n:04d}",
            "gender": rng.choice(["male", "female"]),
        }
        family = rng.choice(FAMILIES)
        if family:
            resource["name"] = [{"family": family}]
        if rng.random() < 0.8:
            resource["birthDate"] = f"19{rng.randint(50, 55)}-0{rng.randint(1, 2)}-01"
        out.append(resource)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[SqliteDatabase, list[dict[str, Any]]]:
    db = SqliteDatabase(tmp_path_factory.mktemp("paging") / "index.sqlite3")
    index = SqliteSearchIndex(db)
    resources = patients(300)
    with db.write():
        for n, resource in enumerate(resources):
            index.apply("default", "Patient", resource["id"], 1, 1000 + n, resource)
    return db, resources


@pytest.fixture(params=list(SHAPES))
def app(
    request: pytest.FixtureRequest, data: tuple[SqliteDatabase, list[dict[str, Any]]], tmp_path: Path
) -> Application:
    db, _ = data
    return app_for(db, SqliteSearchEngine(db, **SHAPES[request.param]), tmp_path)


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((entry["url"] for entry in bundle["link"] if entry["relation"] == relation), None)


def walk_forward(app: Application, url: str) -> list[list[str]]:
    pages = []
    next_url: str | None = url
    while next_url:
        reply = get(app, next_url, headers={"host": "fhir.test"})
        assert reply.status == 200, reply.body
        bundle = reply.json()
        pages.append(ids(bundle))
        next_url = link(bundle, "next")
    return pages


def expected_order(resources: list[dict[str, Any]]) -> list[str]:
    """_sort=family,-birthdate: lowest family first, then latest birth date; missing values last."""

    def key(resource: dict[str, Any]) -> tuple[Any, ...]:
        family = resource["name"][0]["family"].lower() if "name" in resource else None
        born = resource.get("birthDate")
        born_key = -int(born.replace("-", "")) if born else 0
        return (family is None, family or "", born is None, born_key, resource["id"])

    return [f"Patient/{r['id']}" for r in sorted(resources, key=key)]


def test_sorted_pages_hold_every_match_once_in_order(app: Application, data: Any) -> None:
    _, resources = data
    pages = walk_forward(app, "/Patient?_sort=family,-birthdate&_count=7")
    flat = [i for page in pages for i in page]
    assert flat == expected_order(resources)
    assert all(len(page) == 7 for page in pages[:-1])


def test_previous_links_walk_back_through_the_same_pages(app: Application) -> None:
    url = "/Patient?gender=female&_sort=-birthdate&_count=9"
    pages = walk_forward(app, url)
    assert len(pages) > 3
    # From the last page, follow previous links to the first.
    current = url
    bundles = []
    while current:
        bundle = get(app, current).json()
        bundles.append(bundle)
        current = link(bundle, "next")
    back: list[list[str]] = [ids(bundles[-1])]
    previous = link(bundles[-1], "previous")
    while previous:
        bundle = get(app, previous).json()
        back.insert(0, ids(bundle))
        previous = link(bundle, "previous")
    assert back == pages
    assert link(bundles[0], "previous") is None


def test_unsorted_pages_hold_every_match_once(app: Application, data: Any) -> None:
    _, resources = data
    pages = walk_forward(app, "/Patient?gender=male&_count=11")
    flat = [i for page in pages for i in page]
    males = sorted(f"Patient/{r['id']}" for r in resources if r["gender"] == "male")
    assert flat == males  # the default order is (type, id)


def cursor_url(app: Application, url: str) -> str:
    following = link(get(app, url).json(), "next")
    assert following is not None
    return following


def test_an_altered_cursor_is_refused(app: Application) -> None:
    following = cursor_url(app, "/Patient?_count=5")
    token = following.split("_cursor=")[1]
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    reply = get(app, following.replace(token, tampered))
    assert reply.status == 400
    assert reply.json()["issue"][0]["expression"] == ["_cursor"]
    assert get(app, following.replace(token, "garbage")).status == 400


def test_a_cursor_belongs_to_its_search(app: Application) -> None:
    following = cursor_url(app, "/Patient?_count=5")
    token = following.split("_cursor=")[1]
    reply = get(app, f"/Patient?gender=male&_count=5&_cursor={token}")
    assert reply.status == 400
    assert "different search" in reply.json()["issue"][0]["diagnostics"]
