"""``OpenSearchSearchEngine``: the search service's SearchEngine port on the OpenSearch index, run
on the fake OpenSearch of ``test_opensearch_fake.py`` over the resources of
``test_opensearch_search.py`` (indexed through the adapter). What is checked here is the port's
side: keyset positions both ways, counts, includes, the access policy's rules in the query,
what lenient handling must leave out, and the search service's wiring by settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
import pytest

from fhirflow.adapters.opensearch.engine import OpenSearchSearchEngine
from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex
from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.store import SqliteResourceStore
from fhirflow.cursor import CursorSigner
from fhirflow.http import Application
from fhirflow.query import parse
from fhirflow.query.ast import Query
from fhirflow.runtime import Dependencies, build_engine
from fhirflow.search_ports import AccessRule, Admission, Hit, PageRequest, SearchScope
from fhirflow.settings import Settings
from fhirflow_search.app import build_app, service_for
from fhirflow_search.settings import SearchSettings
from fhirflow_search.usecase import SearchService
from tests.search.client import get, ids
from tests.unit.test_opensearch_fake import FakeOpenSearch
from tests.unit.test_opensearch_search import LOINC, NOW, RESOURCES, make_index

BASE = "http://fhir.test"


@pytest.fixture(scope="module")
def engine() -> OpenSearchSearchEngine:
    return OpenSearchSearchEngine(make_index(), clock=lambda: NOW)


def query(resource_type: str | None, text: str = "") -> Query:
    return parse(resource_type, parse_qsl(text, keep_blank_values=True), strict=True)


def scope(
    types: tuple[str, ...],
    *,
    compartment: tuple[str, str] | None = None,
    access: tuple[AccessRule, ...] | None = None,
) -> SearchScope:
    return SearchScope("t1", BASE, types, compartment, access)


def keys(hits: list[Hit]) -> list[str]:
    return [f"{hit.type}/{hit.id}" for hit in hits]


def search(engine: OpenSearchSearchEngine, resource_type: str, text: str = "", **options: Any) -> list[str]:
    found = engine.page(scope((resource_type,), **options), query(resource_type, text), PageRequest(50))
    return keys(found.hits)


def test_a_page_holds_the_tenants_matches_with_their_bodies(engine: OpenSearchSearchEngine) -> None:
    page = engine.page(scope(("Patient",)), query("Patient", "name=pet"), PageRequest(50))
    assert keys(page.hits) == ["Patient/p1", "Patient/p2"]  # t2 has a p1 named Peter too
    assert orjson.loads(page.hits[0].body) == RESOURCES[0]
    assert page.more is False


def test_positions_page_forward_and_back_over_missing_values(engine: OpenSearchSearchEngine) -> None:
    """``_sort=-birthdate``: p2 (1990), p1 (1980), then p3 without a birthdate; one per page."""
    q, where = query("Patient", "_sort=-birthdate"), scope(("Patient",))
    forward: list[Hit] = []
    request = PageRequest(1)
    while True:
        page = engine.page(where, q, request)
        forward += page.hits
        assert all(len(hit.position) == len(q.sort) + 2 for hit in page.hits)
        if not page.more:
            break
        request = PageRequest(1, after=page.hits[-1].position)
    assert keys(forward) == ["Patient/p2", "Patient/p1", "Patient/p3"]
    backward: list[Hit] = []
    request = PageRequest(1, before=forward[-1].position)
    while True:
        page = engine.page(where, q, request)
        backward = page.hits + backward
        if not page.more:
            break
        request = PageRequest(1, before=page.hits[0].position)
    assert keys(backward) == ["Patient/p2", "Patient/p1"]
    two = engine.page(where, q, PageRequest(2, before=forward[-1].position))
    assert (keys(two.hits), two.more) == (["Patient/p2", "Patient/p1"], False)


def test_full_text_matches_come_in_key_order_so_positions_stay_keyset(engine: OpenSearchSearchEngine) -> None:
    page = engine.page(scope(("Patient",)), query("Patient", "_text=springfield"), PageRequest(5))
    assert [len(hit.position) for hit in page.hits] == [2]


def test_count_is_exact_and_filtered_like_the_page(engine: OpenSearchSearchEngine) -> None:
    assert engine.count(scope(("Patient",)), query("Patient")) == 3
    assert engine.count(scope(("Observation",), compartment=("Patient", "p1")), query("Observation")) == 2
    assert engine.count(scope(("Patient",)), query("Patient", "organization.name=acme")) == 1


def test_a_compartment_limits_the_matches(engine: OpenSearchSearchEngine) -> None:
    assert search(engine, "Observation", compartment=("Patient", "p1")) == ["Observation/obs1", "Observation/obs3"]


def observation_rule(*admissions: Admission, patients: frozenset[str] | None = None) -> tuple[AccessRule, ...]:
    return (AccessRule("Observation", admissions, patients),)


def test_access_rules_are_part_of_the_query(engine: OpenSearchSearchEngine) -> None:
    in_p1 = Admission(("Patient", "p1"))
    systolic = Admission(None, query("Observation", f"code={LOINC}|8480-6").criteria)
    assert search(engine, "Observation", access=observation_rule(in_p1)) == ["Observation/obs1", "Observation/obs3"]
    assert search(engine, "Observation", access=observation_rule(systolic)) == ["Observation/obs1"]
    assert search(engine, "Observation", access=observation_rule(in_p1, systolic)) == [
        "Observation/obs1",
        "Observation/obs3",
    ]
    assert search(engine, "Observation", access=observation_rule()) == []  # no admission: nothing
    only_p2 = observation_rule(Admission(None), patients=frozenset({"p2"}))
    assert search(engine, "Observation", access=only_p2) == ["Observation/obs2"]
    counted = engine.count(scope(("Observation",), access=observation_rule(systolic)), query("Observation"))
    assert counted == 1


def test_a_patients_rule_lets_resources_outside_every_patient_compartment_through(
    engine: OpenSearchSearchEngine,
) -> None:
    system = query(None, "_type=Organization,Observation,Patient")
    assert len(engine.page(scope(()), system, PageRequest(50)).hits) == 8
    rules = (AccessRule(None, (Admission(None),), frozenset({"p2"})),)
    limited = engine.page(scope((), access=rules), system, PageRequest(50))
    assert keys(limited.hits) == ["Observation/obs2", "Organization/o1", "Organization/o2", "Patient/p2"]


def test_includes_follow_the_matches_references(engine: OpenSearchSearchEngine) -> None:
    where = scope(("Observation",))
    q = query("Observation", "_id=obs1&_include=Observation:subject&_include:iterate=Patient:organization")
    page = engine.page(where, q, PageRequest(10))
    found = engine.include(where, page.hits, q.includes, q.revincludes, max_depth=3, limit=100)
    assert (keys(found.hits), found.truncated) == (["Patient/p1", "Organization/o1"], False)
    assert orjson.loads(found.hits[0].body) == RESOURCES[0]
    no_iterate = engine.include(where, page.hits, q.includes, q.revincludes, max_depth=0, limit=100)
    assert keys(no_iterate.hits) == ["Patient/p1"]


def test_iterate_walks_on_only_from_resources_the_principal_may_read(engine: OpenSearchSearchEngine) -> None:
    """Organization/o1 is reached only through Patient/p1: with p1 hidden, o1 is not included either,
    though it is readable itself (which resources appear must not depend on a hidden link)."""
    where = scope(("Observation",))
    q = query("Observation", "_id=obs1&_include=Observation:subject&_include:iterate=Patient:organization")
    page = engine.page(where, q, PageRequest(10))

    def include(admits: Any) -> list[str]:
        return keys(
            engine.include(where, page.hits, q.includes, q.revincludes, max_depth=3, limit=100, admits=admits).hits
        )

    assert include(lambda resource: True) == ["Patient/p1", "Organization/o1"]
    assert include(lambda resource: resource["resourceType"] != "Patient") == []
    # A hidden resource does not take a place under the limit either.
    hidden_p1 = engine.include(
        where, page.hits, q.includes, q.revincludes, max_depth=0, limit=1, admits=lambda r: r["id"] != "p1"
    )
    assert (hidden_p1.hits, hidden_p1.truncated) == ([], False)


def test_revincludes_stop_at_the_limit(engine: OpenSearchSearchEngine) -> None:
    where = scope(("Patient",))
    q = query("Patient", "_id=p1&_revinclude=Observation:subject")
    page = engine.page(where, q, PageRequest(10))
    found = engine.include(where, page.hits, q.includes, q.revincludes, max_depth=0, limit=5)
    assert (sorted(keys(found.hits)), found.truncated) == (["Observation/obs1", "Observation/obs3"], False)
    cut = engine.include(where, page.hits, q.includes, q.revincludes, max_depth=0, limit=1)
    assert (len(cut.hits), cut.truncated) == (1, True)


def test_what_the_compiler_refuses_is_reported_unsupported_beforehand(engine: OpenSearchSearchEngine) -> None:
    def criterion(text: str) -> Any:
        [found] = query("Observation", text).criteria
        return found

    assert engine.unsupported(criterion(f"code:in={LOINC}")) is not None
    assert engine.unsupported(criterion("_list=$current-problems")) is not None
    assert engine.unsupported(criterion("_list=l1")) is None
    assert engine.unsupported(criterion("subject:Patient.name=pet")) is None
    assert engine.unsupported(criterion("code=8480-6")) is None
    [composite] = query("Observation", "_sort=component-code-value-quantity").sort
    [date] = query("Observation", "_sort=-date").sort
    assert (engine.sortable(composite), engine.sortable(date)) == (False, True)


# -- through the search service ------------------------------------------------------------------


def service_app(tmp_path: Path, engine: OpenSearchSearchEngine) -> Application:
    settings = Settings(data_dir=tmp_path)
    store = SqliteResourceStore(SqliteDatabase(tmp_path / "store.sqlite3"))
    deps = Dependencies(settings=settings, store=store, cursors=CursorSigner(b"k"))
    return build_app(deps, SearchService(engine, SearchSettings()))


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((entry["url"] for entry in bundle.get("link", []) if entry["relation"] == relation), None)


def test_the_search_service_pages_both_ways_with_signed_cursors(tmp_path: Path) -> None:
    index = OpenSearchSearchIndex(client=FakeOpenSearch())
    for n, family in enumerate(["Adams", "Baker", "Clark", "Davis", "Evans"], start=1):
        resource = {"resourceType": "Patient", "id": f"p{n}", "name": [{"family": family}]}
        assert index.apply("default", "Patient", f"p{n}", 1, n, resource)
    app = service_app(tmp_path, OpenSearchSearchEngine(index))
    first = get(app, "/Patient?_sort=-family&_count=2&_total=accurate").json()
    assert (ids(first), first["total"]) == (["Patient/p5", "Patient/p4"], 5)
    pages, bundle = [ids(first)], first
    while (following := link(bundle, "next")) is not None:
        bundle = get(app, following).json()
        pages.append(ids(bundle))
    assert pages == [["Patient/p5", "Patient/p4"], ["Patient/p3", "Patient/p2"], ["Patient/p1"]]
    back = [ids(bundle)]
    while (previous := link(bundle, "previous")) is not None:
        bundle = get(app, previous).json()
        back.insert(0, ids(bundle))
    assert back == pages


def test_the_search_service_leaves_out_what_the_index_cannot_do(tmp_path: Path, engine: OpenSearchSearchEngine) -> None:
    app = service_app(tmp_path, engine)
    lenient = get(app, "/Patient?_list=$current-problems&name=zed").json()
    assert ids(lenient) == []  # tenant "default" holds nothing here; the point is the outcome
    [outcome] = [e["resource"] for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert any("_list" in issue.get("expression", []) for issue in outcome["issue"])
    assert get(app, "/Patient?_list=$current-problems", headers={"prefer": "handling=strict"}).status == 400


def test_the_settings_choose_the_opensearch_engine_without_connecting() -> None:
    settings = Settings(
        search_index="opensearch", opensearch_url="https://127.0.0.1:1", opensearch_index="fhir", aws_region="eu-west-1"
    )
    engine = build_engine(settings)
    assert isinstance(engine, OpenSearchSearchEngine)
    assert engine.index.index == "fhir"
    assert service_for(settings) is service_for(settings)
    assert service_for(settings) is not service_for(
        Settings(search_index="opensearch", opensearch_url="https://x:1", aws_region="eu-west-1")
    )


class OnlyPatientOne:
    """An access policy double: every type limited to the compartment of Patient p1 (as a
    ``patient/*.rs`` token for p1 is), through the hook the search use case calls."""

    def search_constraint(self, request: Any, resource_type: str | None, permission: str = "s") -> Any:
        from fhirflow.authz.policy import AccessConstraint
        from fhirflow.authz.policy import Admission as PolicyAdmission

        return AccessConstraint((PolicyAdmission(("Patient", "p1")),))


def test_chains_and_has_look_only_at_what_the_access_rules_admit(engine: OpenSearchSearchEngine) -> None:
    """Issue 14: the search use case puts each hop's access rule into the AST (limit_chains) and
    the compiler adds it to that hop's lookup, so other patients' facts decide nothing."""
    from fhirflow.search_access import limit_chains

    def limited(resource_type: str, text: str) -> list[str]:
        q = limit_chains(OnlyPatientOne(), None, query(resource_type, text))  # type: ignore[arg-type]
        return keys(engine.page(scope((resource_type,)), q, PageRequest(50)).hits)

    # Unlimited, p2's facts decide: its name, its Observation, its Organization.
    assert search(engine, "Observation", "subject:Patient.name=Peterson") == ["Observation/obs2"]
    assert search(engine, "Organization", "_has:Patient:organization:name=Peterson") == ["Organization/o2"]
    # Limited to p1's compartment, the hop to p2 finds nothing; p1's own facts still count.
    assert limited("Observation", "subject:Patient.name=Peterson") == []
    assert limited("Observation", "subject:Patient.name=Peter") == ["Observation/obs1", "Observation/obs3"]
    assert limited("Organization", "_has:Patient:organization:name=Peterson") == []
    assert limited("Organization", "_has:Patient:organization:name=Pet") == ["Organization/o1"]
    nested = "_has:Patient:organization:_has:Observation:subject:code=http://loinc.org|8480-6"
    assert limited("Organization", nested) == ["Organization/o1"]
    plan = engine._compile(
        scope(("Observation",)),
        limit_chains(OnlyPatientOne(), None, query("Observation", "subject:Patient.name=x")),
        page_size=1,
        after=None,
    )  # type: ignore[arg-type]
    [lookup] = plan.lookups
    assert lookup.parameter == "subject:Patient.name"
    assert "Patient/p1" in orjson.dumps(lookup.body).decode()
