"""The search service around the backend: the searchset Bundle, links, POST _search, result
parameters, the access policy's constraint, limits and the errors that are not table rows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.search.engine import SqliteSearchEngine
from fhirflow.adapters.sqlite.store import SqliteResourceStore
from fhirflow.cursor import CursorSigner
from fhirflow.http import Application
from fhirflow.model import FhirRequest
from fhirflow.ports import AllowAll
from fhirflow.runtime import Dependencies
from fhirflow.settings import Settings
from fhirflow_search.app import build_app
from fhirflow_search.settings import SearchSettings
from fhirflow_search.usecase import SearchService
from tests.search.cases import ENC_A, ENC_B, ENC_C, FF, OBS_LT, OBS_UNIT
from tests.search.client import get, ids, post
from tests.search.conftest import FixedClock, app_for


def links(bundle: dict[str, Any]) -> dict[str, str]:
    return {entry["relation"]: entry["url"] for entry in bundle["link"]}


def test_searchset_bundle_shape(search_app: Application) -> None:
    bundle = get(search_app, "/Encounter?_id=ff-enc-a&_include=Encounter:subject").json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 1
    assert bundle["meta"]["lastUpdated"].endswith("Z")
    match, include = bundle["entry"]
    assert match["fullUrl"] == "http://fhir.test/Encounter/ff-enc-a"
    assert match["search"] == {"mode": "match"}
    assert match["resource"]["period"]["start"] == "2020-01-01T10:00:00Z"
    assert include["fullUrl"] == "http://fhir.test/Patient/ff-comma"
    assert include["search"] == {"mode": "include"}


def test_self_link_is_the_normalised_query_without_ignored_parameters(search_app: Application) -> None:
    bundle = get(search_app, "/Encounter?subject:Patient=ff-comma&foo=bar&_count=2&_pretty=true").json()
    urls = links(bundle)
    assert urlsplit(urls["self"]).path == "/Encounter"
    assert parse_qsl(urlsplit(urls["self"]).query) == [("subject", "Patient/ff-comma"), ("_count", "2")]
    assert urls["first"] == urls["self"]
    assert "previous" not in urls
    following = parse_qsl(urlsplit(urls["next"]).query)
    assert ("_count", "2") in following
    assert any(name == "_cursor" for name, _ in following)


def test_post_search_takes_a_form_and_answers_with_get_links(search_app: Application) -> None:
    reply = post(search_app, "/Encounter/_search", "subject=Patient%2Fff-comma&_count=2")
    assert reply.status == 200
    bundle = reply.json()
    assert bundle["total"] == 3
    assert urlsplit(links(bundle)["self"]).path == "/Encounter"
    rest = get(search_app, links(bundle)["next"]).json()
    assert sorted(ids(bundle) + ids(rest)) == sorted([ENC_A, ENC_B, ENC_C])


def test_post_search_on_the_system_and_a_compartment(search_app: Application) -> None:
    assert ids(post(search_app, "/_search", "_type=Patient&_id=ff-comma").json()) == [FF]
    found = post(search_app, "/Patient/ff-comma/Observation/_search", "_id=ff-obs-lt").json()
    assert ids(found) == [OBS_LT]


def test_post_search_refuses_other_bodies(search_app: Application) -> None:
    reply = post(search_app, "/Patient/_search", "{}", headers={"content-type": "application/json"})
    assert reply.status == 415


def test_summary_true_subsets_and_tags(search_app: Application) -> None:
    bundle = get(search_app, "/Patient?_id=example&_summary=true").json()
    (entry,) = bundle["entry"]
    resource = entry["resource"]
    assert "contact" not in resource  # not a summary element
    assert resource["name"]
    assert any(tag.get("code") == "SUBSETTED" for tag in resource["meta"]["tag"])


def test_elements_keep_only_what_was_asked(search_app: Application) -> None:
    bundle = get(search_app, "/Patient?_id=example&_elements=birthDate").json()
    resource = bundle["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "birthDate", "_birthDate"}  # its extension: birth time
    assert urlsplit(links(bundle)["self"]).query.endswith("_elements=birthDate")


def test_elements_keep_a_primitives_extensions_with_it(search_app: Application) -> None:
    resource = get(search_app, "/Patient?_id=infant-twin-1&_elements=birthDate").json()["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "birthDate", "_birthDate"}
    assert resource["_birthDate"]["extension"][0]["url"] == "http://hl7.org/fhir/StructureDefinition/patient-birthTime"
    value = get(search_app, "/Observation?_id=ff-obs-lt&_elements=value").json()["entry"][0]["resource"]
    assert "valueQuantity" in value  # a choice element is asked for by its name without the type
    assert "effectiveDateTime" not in value


def test_elements_leave_included_resources_whole(search_app: Application) -> None:
    bundle = get(search_app, "/Encounter?_id=ff-enc-a&_include=Encounter:subject&_elements=status").json()
    match, include = bundle["entry"]
    assert set(match["resource"]) == {"resourceType", "id", "meta", "status", "class"}  # class is mandatory
    assert include["resource"]["name"][0]["family"] == "Smith, Jr"


def test_a_count_above_the_maximum_is_lowered(search_db: SqliteDatabase, tmp_path: Path) -> None:
    app = app_for(search_db, SqliteSearchEngine(search_db), tmp_path, max_count=2)
    bundle = get(app, "/Encounter?subject=Patient/ff-comma&_count=50").json()
    assert len(bundle["entry"]) == 2
    assert "_count=2" in links(bundle)["self"]


def test_the_include_limit_is_reported(search_db: SqliteDatabase, tmp_path: Path) -> None:
    app = app_for(search_db, SqliteSearchEngine(search_db), tmp_path, max_includes=2)
    bundle = get(app, "/Patient?_id=ff-comma&_revinclude=Encounter:subject").json()
    assert len(ids(bundle, "include")) == 2
    outcome = next(e["resource"] for e in bundle["entry"] if e["search"]["mode"] == "outcome")
    assert outcome["issue"][0]["code"] == "too-costly"


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/Unicorn?name=x", 404),
        ("/Observation/1/Patient", 404),  # Observation is not a compartment
        ("/Patient/ff-comma/Unicorn", 404),
        ("/Patient?" + "link:Patient." * 9 + "name=x", 400),  # nested deeper than the server allows
    ],
)
def test_bad_targets(search_app: Application, url: str, status: int) -> None:
    reply = get(search_app, url)
    assert reply.status == status
    assert reply.json()["resourceType"] == "OperationOutcome"


# ---------------------------------------------------------------------------------------------
# The access policy's constraint (DESIGN.md §5), with a policy double that names its rule


@dataclass(frozen=True)
class Alternative:
    compartment: tuple[str, str] | None
    filters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Constraint:
    alternatives: tuple[Alternative, ...]
    patients: frozenset[str] | None = None


class PatientCompartmentPolicy(AllowAll):
    """Searches see the compartment of one patient (and, with ``status``, only final ones);
    includes see only that patient's compartment members and the patient itself."""

    def __init__(self, patient: str, filters: tuple[tuple[str, str], ...] = ()) -> None:
        self.patient = patient
        self.filters = filters

    def search_constraint(self, request: FhirRequest, resource_type: str | None) -> Constraint:
        return Constraint((Alternative(("Patient", self.patient), self.filters),))

    def admits_resource(self, request: FhirRequest, resource: dict[str, Any]) -> bool:
        return resource.get("resourceType") == "Patient" and resource.get("id") == self.patient


def policy_app(db: SqliteDatabase, tmp_path: Path, policy: AllowAll) -> Application:
    deps = Dependencies(
        settings=Settings(data_dir=tmp_path), store=SqliteResourceStore(db), cursors=CursorSigner(b"k"), policy=policy
    )
    deps.clock = FixedClock()
    return build_app(deps, SearchService(SqliteSearchEngine(db), SearchSettings()))


def test_the_policy_constraint_is_part_of_the_query(search_db: SqliteDatabase, tmp_path: Path) -> None:
    app = policy_app(search_db, tmp_path, PatientCompartmentPolicy("ff-comma"))
    bundle = get(app, "/Observation?_count=1").json()
    assert bundle["total"] == 2  # exact: the other Observations are not counted, then hidden
    assert sorted(ids(bundle) + ids(get(app, links(bundle)["next"]).json())) == [OBS_LT, OBS_UNIT]


def test_granular_filters_of_the_constraint(search_db: SqliteDatabase, tmp_path: Path) -> None:
    app = policy_app(search_db, tmp_path, PatientCompartmentPolicy("ff-comma", (("status", "final"),)))
    assert ids(get(app, "/Observation").json()) == [OBS_LT]


def test_included_resources_go_through_the_policy(search_db: SqliteDatabase, tmp_path: Path) -> None:
    app = policy_app(search_db, tmp_path, PatientCompartmentPolicy("ff-comma"))
    bundle = get(app, "/Observation?_id=ff-obs-lt&_include=Observation:subject&_include=Observation:encounter").json()
    assert ids(bundle) == [OBS_LT]
    assert ids(bundle, "include") == [FF]  # the Encounter is not admitted by this policy's includes


# ---------------------------------------------------------------------------------------------
# The real SMART policy (fhirflow.authz.policy), with an authenticator double that hands it a principal


class TokenHolder:
    """The principal a valid token would yield: patient scopes in the launch context of ff-comma."""

    def __init__(self, scopes: str) -> None:
        from fhirflow.authz.principal import Principal
        from fhirflow.authz.scopes import parse_scopes

        self.principal = Principal(
            sub="someone",
            client_id="app",
            issuer="test",
            scopes=parse_scopes(scopes),
            expires_at=2e9,
            patient="ff-comma",
        )

    def authenticate(self, request: FhirRequest) -> object:
        return self.principal


def smart_app(db: SqliteDatabase, tmp_path: Path, scopes: str) -> Application:
    from fhirflow.authz.config import AuthConfig
    from fhirflow.authz.policy import SmartPolicy

    deps = Dependencies(
        settings=Settings(data_dir=tmp_path),
        store=SqliteResourceStore(db),
        cursors=CursorSigner(b"k"),
        policy=SmartPolicy(AuthConfig(mode="smart", issuers=())),
        authenticator=TokenHolder(scopes),
    )
    deps.clock = FixedClock()
    return build_app(deps, SearchService(SqliteSearchEngine(db), SearchSettings()))


def test_smart_patient_scopes_limit_searches_to_the_compartment(search_db: SqliteDatabase, tmp_path: Path) -> None:
    app = smart_app(search_db, tmp_path, "patient/Observation.rs patient/Patient.rs")
    bundle = get(app, "/Observation?_include=Observation:subject&_include=Observation:encounter").json()
    assert bundle["total"] == 2
    assert ids(bundle) == [OBS_LT, OBS_UNIT]
    assert ids(bundle, "include") == [FF]  # no scope grants Encounter
    assert ids(get(app, "/Patient").json()) == [FF]
    assert get(app, "/Encounter").status == 403


def test_smart_granular_scope_filters_the_search(search_db: SqliteDatabase, tmp_path: Path) -> None:
    app = smart_app(search_db, tmp_path, "patient/Observation.rs?status=final")
    assert ids(get(app, "/Observation").json()) == [OBS_LT]
    assert ids(get(app, "/Observation?status=preliminary").json()) == []
