"""Search pages bounded by bytes (issue 13, defect 5): a page of large resources ends before
``_count`` when its matches would weigh more than ``page_max_bytes``, and its ``next`` link leads
to the rest, so paging still returns every match once (search.html#count: a server may return
fewer than asked). The crud and search services on the embedded store, with proxy events."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fhirflow.runtime import build_dependencies, build_engine
from fhirflow.settings import Settings
from fhirflow_crud.app import build_app as build_crud
from fhirflow_search.app import build_app as build_search
from fhirflow_search.settings import SearchSettings
from fhirflow_search.usecase import SearchService
from tests.support.lambda_http import call

BIG = 10_000  # bytes of text per resource


def world(tmp_path: Path, page_max_bytes: int) -> tuple[Any, Any]:
    deps = build_dependencies(Settings(data_dir=tmp_path))
    service = SearchService(build_engine(deps.settings), SearchSettings(page_max_bytes=page_max_bytes))
    crud, search = build_crud(deps), build_search(deps, service=service)
    for n in range(12):
        patient = {"resourceType": "Patient", "name": [{"family": f"Big{n:02d}", "text": "x" * BIG}]}
        assert call(crud, "POST", "/Patient", patient).status == 201
    return crud, search


def follow(search: Any, query: str) -> list[list[str]]:
    pages: list[list[str]] = []
    url: str | None = f"/Patient?{query}"
    while url:
        path, _, params = url.partition("?")
        bundle = call(search, "GET", path, query=params).json()
        pages.append([e["resource"]["name"][0]["family"] for e in bundle.get("entry", [])])
        nexts = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        url = urlsplit(nexts[0]).path + "?" + urlsplit(nexts[0]).query if nexts else None
    return pages


def test_a_page_of_large_resources_ends_early_and_paging_finds_the_rest(tmp_path: Path) -> None:
    _, search = world(tmp_path, page_max_bytes=5 * BIG)
    pages = follow(search, "_count=10&_sort=family")
    assert [len(page) for page in pages] == [4, 4, 4]  # four weigh under 5 x BIG; a fifth would not
    assert [name for page in pages for name in page] == [f"Big{n:02d}" for n in range(12)]


def test_one_resource_larger_than_the_budget_is_still_returned(tmp_path: Path) -> None:
    _, search = world(tmp_path, page_max_bytes=BIG // 2)
    pages = follow(search, "_count=5&_sort=family")
    assert [len(page) for page in pages] == [1] * 12


def test_small_pages_are_untouched(tmp_path: Path) -> None:
    _, search = world(tmp_path, page_max_bytes=3 * 1024 * 1024)
    assert [len(page) for page in follow(search, "_count=5&_sort=family")] == [5, 5, 2]
