"""RBAC (token groups → interactions x types, FWoA's default rules) and the fine-grained
relationship hook (OpenFGA-style), through the real Applications."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fhirflow.authz.config import AuthConfig
from fhirflow.authz.policy import AccessConstraint, Admission, SmartPolicy
from fhirflow.authz.rbac import FWOA_RULES, GroupPolicy, parse_rules
from fhirflow.authz.relationships import InMemoryRelationshipService, RelationshipPolicy
from fhirflow.runtime import build_dependencies
from tests.unit.test_authz_kit import InProcessClient, TestIssuer, auth_settings, smart_client


@pytest.fixture(scope="module")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture(scope="module")
def rbac(tmp_path_factory: pytest.TempPathFactory, issuer: TestIssuer) -> InProcessClient:
    return smart_client(tmp_path_factory.mktemp("rbac"), issuer, mode="rbac")


def _groups(issuer: TestIssuer, *groups: str) -> str:
    return issuer.token(None, **{"cognito:groups": list(groups)})


@pytest.mark.parametrize(
    ("groups", "method", "path", "body", "expected"),
    [
        (("practitioner",), "PUT", "/Patient/{p}", {"resourceType": "Patient"}, 201),
        (("practitioner",), "GET", "/Patient/{p}", None, 200),
        (("practitioner",), "PUT", "/Claim/{c}", "claim", 201),
        (("practitioner",), "GET", "/Patient/{p}/_history", None, 200),
        (("practitioner",), "GET", "/_history", None, 403),  # not in FWoA's rules
        (("auditor",), "GET", "/Patient/{p}", None, 200),
        (("auditor",), "GET", "/Patient/{p}/_history/1", None, 200),
        (("auditor",), "PUT", "/Patient/{p}", {"resourceType": "Patient"}, 403),
        (("auditor",), "GET", "/Claim/{c}", None, 403),
        (("non-practitioner",), "GET", "/Claim/{c}", None, 200),
        (("non-practitioner",), "GET", "/Patient/{p}", None, 403),
        (("non-practitioner",), "DELETE", "/Claim/{c}", None, 403),
        (("non-practitioner", "auditor"), "GET", "/Patient/{p}", None, 200),  # any group may allow it
        (("unknown-group",), "GET", "/Patient/{p}", None, 403),
        ((), "GET", "/Patient/{p}", None, 403),
    ],
)
def test_fwoa_default_group_rules(
    rbac: InProcessClient, issuer: TestIssuer, groups: tuple[str, ...], method: str, path: str, body: Any, expected: int
) -> None:
    tag = uuid.uuid4().hex[:10]
    p, c = f"p-{tag}", f"c-{tag}"
    admin = _groups(issuer, "practitioner")
    assert rbac.request("PUT", f"/Patient/{p}", token=admin, body={"resourceType": "Patient", "id": p}).status == 201
    claim = _claim(c, p)
    assert rbac.request("PUT", f"/Claim/{c}", token=admin, body=claim).status == 201
    if body == "claim":
        body, path = _claim(f"{c}-new", p), f"/Claim/{c}-new"
    elif isinstance(body, dict):
        path = path.replace("{p}", f"{p}-new")
        body = {**body, "id": f"{p}-new"}
    path = path.replace("{p}", p).replace("{c}", c)

    reply = rbac.request(method, path, token=_groups(issuer, *groups), body=body)

    assert reply.status == expected, reply.body


def _claim(id_: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Claim",
        "id": id_,
        "status": "active",
        "type": {"text": "institutional"},
        "use": "claim",
        "patient": {"reference": f"Patient/{patient}"},
        "created": "2024-01-01",
        "provider": {"display": "clinic"},
        "priority": {"text": "normal"},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"display": "cover"}}],
    }


def test_bundle_entries_are_checked_against_the_groups(rbac: InProcessClient, issuer: TestIssuer) -> None:
    p = f"p-{uuid.uuid4().hex[:10]}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": p}, "request": {"method": "PUT", "url": f"Patient/{p}"}}
        ],
    }

    assert rbac.request("POST", "/", token=_groups(issuer, "auditor"), body=bundle).status == 403
    assert rbac.request("POST", "/", token=_groups(issuer, "practitioner"), body=bundle).status == 200


def test_rules_are_data_and_bad_rules_fail_at_startup() -> None:
    rules = parse_rules(FWOA_RULES)
    assert rules["auditor"].allows("read", "Patient")
    assert not rules["auditor"].allows("read", "Claim")
    assert rules["practitioner"].allows("delete", "Anything")

    for bad in (
        {"version": 2, "groupRules": {}},
        {"version": 1},
        {"version": 1, "groupRules": {"g": {"interactions": "read"}}},
    ):
        with pytest.raises(ValueError, match="rbac_rules"):
            GroupPolicy(bad)


def test_custom_rules_from_configuration(tmp_path: Any, issuer: TestIssuer) -> None:
    rules = {"version": 1, "groupRules": {"nurse": {"interactions": ["read", "vread"], "resources": ["Observation"]}}}
    client = smart_client(tmp_path, issuer, mode="rbac", rbac_rules=rules, groups_claim="roles")
    nurse = issuer.token(None, roles=["nurse"])

    assert client.get("/Observation/nothing", nurse).status == 404  # allowed, and not there
    assert client.get("/Patient/nothing", nurse).status == 403


# -- the fine-grained relationship hook -------------------------------------------------------------


def test_relationships_limit_a_practitioner_to_the_patients_it_may_view(tmp_path: Any, issuer: TestIssuer) -> None:
    settings = auth_settings(tmp_path, issuer, admin_user_types=["Practitioner"])  # the relationships narrow it
    seeding = InProcessClient(build_dependencies(settings))  # same database, the plain SMART policy
    admin = issuer.token("system/*.cruds")
    for resource in ({"resourceType": "Patient", "id": "pa"}, {"resourceType": "Patient", "id": "pb"}):
        assert seeding.request("PUT", f"/Patient/{resource['id']}", token=admin, body=resource).status == 201
    assert (
        seeding.request(
            "PUT", "/Organization/o", token=admin, body={"resourceType": "Organization"} | {"id": "o"}
        ).status
        == 201
    )
    deps = build_dependencies(settings)
    relationships = InMemoryRelationshipService()
    assert isinstance(deps.policy, SmartPolicy)
    deps.policy = RelationshipPolicy(deps.policy, relationships)
    client = InProcessClient(deps)
    assert client.get("/Patient/pa", admin).status == 404  # system tokens are checked too (client:app-1)
    relationships.write("user:Practitioner/dr", "can_view", "Patient/pa")
    doctor = issuer.token("user/*.cruds", fhirUser="Practitioner/dr")

    assert client.get("/Patient/pa", doctor).status == 200
    assert client.get("/Patient/pb", doctor).status == 404
    assert client.get("/Organization/o", doctor).status == 200  # in no patient's compartment
    edit = {"resourceType": "Patient", "id": "pa", "active": True}
    # view is not edit: the new version is refused (403, the body alone decides, as for any id)
    assert client.request("PUT", "/Patient/pa", token=doctor, body=edit).status == 403
    relationships.write("user:Practitioner/dr", "can_edit", "Patient/pa")
    assert client.request("PUT", "/Patient/pa", token=doctor, body=edit).status == 200
    # Patients it may neither view nor edit are answered as ids that do not exist (issue 14).
    patch = {"content-type": "application/json-patch+json"}
    ops = [{"op": "test", "path": "/id", "value": "not-pb"}]  # a failing test op was a 422
    hidden = client.request("PATCH", "/Patient/pb", token=doctor, body=ops, headers=patch)
    missing = client.request("PATCH", "/Patient/nobody", token=doctor, body=ops, headers=patch)
    assert (hidden.status, missing.status) == (404, 404)
    assert client.request("DELETE", "/Patient/pb", token=doctor).status == 204
    assert client.request("DELETE", "/Patient/nobody", token=doctor).status == 204
    assert seeding.get("/Patient/pb", admin).status == 200  # nothing was deleted
    history = client.get("/Patient/_history", doctor)
    assert {e["resource"]["id"] for e in history.body["entry"]} == {"pa"}
    # a patient-context token is already confined to its patient: the relationship check does not apply
    assert client.get("/Patient/pb", issuer.token("patient/*.rs", patient="pb")).status == 200


def test_relationships_give_search_its_patient_list(tmp_path: Any) -> None:
    from fhirflow.authz.principal import Principal
    from fhirflow.authz.scopes import parse_scopes
    from fhirflow.model import FhirRequest

    relationships = InMemoryRelationshipService([("client:backend", "can_view", "Patient/pa")])
    policy = RelationshipPolicy(SmartPolicy(AuthConfig(mode="smart", issuers=())), relationships)
    request = FhirRequest(method="GET", path="/Observation", route="/{type}")
    request.principal = Principal(
        sub=None, client_id="backend", issuer="x", scopes=parse_scopes("system/*.rs"), expires_at=0
    )

    assert policy.search_constraint(request, "Observation") == AccessConstraint((Admission(None),), frozenset({"pa"}))


def test_relationships_limit_included_resources_too(tmp_path: Any, issuer: TestIssuer) -> None:
    """``_revinclude`` from a shared Organization reaches every patient it manages: only the ones the
    user may view are included (the relationship policy checks included resources, as the inner
    SMART policy does), and an ``:iterate`` does not go on from the others."""
    settings = auth_settings(tmp_path, issuer, admin_user_types=["Practitioner"])
    seeding = InProcessClient(build_dependencies(settings))
    admin = issuer.token("system/*.cruds")
    org = {"resourceType": "Organization", "id": "o"}
    assert seeding.request("PUT", "/Organization/o", token=admin, body=org).status == 201
    for id_ in ("pa", "pb"):
        patient = {"resourceType": "Patient", "id": id_, "managingOrganization": {"reference": "Organization/o"}}
        assert seeding.request("PUT", f"/Patient/{id_}", token=admin, body=patient).status == 201
        obs = {"resourceType": "Observation", "id": f"obs-{id_}", "status": "final", "code": {"text": "x"}}
        obs["subject"] = {"reference": f"Patient/{id_}"}
        assert seeding.request("PUT", f"/Observation/obs-{id_}", token=admin, body=obs).status == 201
    deps = build_dependencies(settings)
    assert isinstance(deps.policy, SmartPolicy)
    deps.policy = RelationshipPolicy(
        deps.policy, InMemoryRelationshipService([("user:Practitioner/dr", "can_view", "Patient/pa")])
    )
    client = InProcessClient(deps)
    doctor = issuer.token("user/*.cruds", fhirUser="Practitioner/dr")

    query = {"_id": "o", "_revinclude": "Patient:organization", "_revinclude:iterate": "Observation:subject"}
    reply = client.get("/Organization", doctor, query=query)

    assert reply.status == 200, reply.body
    assert {(e["resource"]["resourceType"], e["resource"]["id"]) for e in reply.body["entry"]} == {
        ("Organization", "o"),
        ("Patient", "pa"),
        ("Observation", "obs-pa"),
    }


@pytest.mark.parametrize(
    ("groups", "expected"),
    [(("practitioner",), 202), (("auditor",), 403), (("non-practitioner",), 403)],
)
def test_practitioners_may_start_a_bulk_export_as_in_fwoa(
    rbac: InProcessClient, issuer: TestIssuer, groups: tuple[str, ...], expected: int
) -> None:
    reply = rbac.request(
        "GET",
        "/$export",
        token=_groups(issuer, *groups),
        query={"_type": "Patient"},
        headers={"prefer": "respond-async", "accept": "application/fhir+json"},
    )
    assert reply.status == expected, reply.body
