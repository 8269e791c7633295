"""Compartment search reads membership from the reference rows (the index keeps no compartment
rows of its own): for every compartment the fixture's resources are in, ``/{Type}/{id}/*`` must
return exactly the resources that :func:`fhirflow.searchparams.compartments.compartments_of`
puts in it, computed here from the resources themselves."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

from fhirflow.http import Application
from fhirflow.searchparams.compartments import compartments_of
from tests.search import client, fixtures

ENCOUNTERS_CHECKED = 40
"""Synthea has hundreds of Encounter compartments; these many (in id order) are enough."""


def _base_url(app: Application) -> str:
    reply = client.get(app, "/Patient?_count=1")
    self_link = next(link["url"] for link in reply.json()["link"] if link["relation"] == "self")
    return str(self_link).split("/Patient?", 1)[0]


def _expected(base_url: str) -> dict[tuple[str, str], set[str]]:
    """(compartment type, id) → the ``Type/id`` of its members, from the fixture's resources."""
    loaded: dict[tuple[str, str], dict[str, Any]] = {}
    for batch in (fixtures.examples(), fixtures.synthea(), fixtures.crafted()):
        for resource in batch:
            loaded[(resource["resourceType"], resource["id"])] = resource  # a later one replaces
    members: dict[tuple[str, str], set[str]] = defaultdict(set)
    for (rtype, rid), resource in loaded.items():
        for compartment in compartments_of(resource, base_url=base_url):
            members[compartment].add(f"{rtype}/{rid}")
    return members


def _members(app: Application, comp_type: str, comp_id: str) -> list[str]:
    reply = client.get(app, f"/{comp_type}/{comp_id}/*?_count=200")
    found: list[str] = []
    while True:
        assert reply.status == 200, reply.body[:500]
        bundle = reply.json()
        found += client.ids(bundle)
        following = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        if not following:
            return found
        reply = client.get(app, following[0])


@pytest.fixture(scope="module")
def expected(search_app: Application) -> dict[tuple[str, str], set[str]]:
    return _expected(_base_url(search_app))


def test_every_compartment_has_exactly_its_members(
    search_app: Application, expected: dict[tuple[str, str], set[str]]
) -> None:
    encounters = sorted(key for key in expected if key[0] == "Encounter")[:ENCOUNTERS_CHECKED]
    checked = [key for key in sorted(expected) if key[0] != "Encounter"] + encounters
    assert {key[0] for key in checked} >= {"Patient", "Encounter", "Practitioner", "RelatedPerson", "Device"}
    for comp_type, comp_id in checked:
        found = _members(search_app, comp_type, comp_id)
        assert len(found) == len(set(found)), f"{comp_type}/{comp_id}: a member listed twice"
        assert set(found) == expected[(comp_type, comp_id)], f"{comp_type}/{comp_id}"


def test_a_typed_compartment_search_keeps_its_type(
    search_app: Application, expected: dict[tuple[str, str], set[str]]
) -> None:
    by_size = sorted((key for key in expected if key[0] == "Patient"), key=lambda k: -len(expected[k]))
    comp_type, comp_id = by_size[0]
    types = sorted({member.split("/")[0] for member in expected[(comp_type, comp_id)]})
    assert len(types) > 5
    for rtype in types:
        reply = client.get(search_app, f"/{comp_type}/{comp_id}/{rtype}?_count=500&_total=accurate")
        bundle = reply.json()
        want = {m for m in expected[(comp_type, comp_id)] if m.startswith(f"{rtype}/")}
        assert set(client.ids(bundle)) == want, rtype
        assert bundle["total"] == len(want)
