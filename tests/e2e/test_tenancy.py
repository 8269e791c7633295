"""Cross-tenant isolation end to end: per-tenant issuers (JWT and introspection) on a real
authorization server, the tenant in the path (``/tenant/{id}/...``) and/or bound to the token;
nothing of tenant A is visible to a tenant B token on any route."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from fhirflow.routes import ROUTE_TABLE
from tests.e2e.test_authz_as import AuthorizationServer
from tests.unit.test_authz_leaks import chart, found_resources

FHIR_JSON = "application/fhir+json"
TAG = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def idp() -> Iterator[AuthorizationServer]:
    with AuthorizationServer() as server:
        for realm in ("a", "b", "c"):
            server.realm(realm)
        yield server


@pytest.fixture(scope="module")
def fhir(idp: AuthorizationServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    config = {
        "issuers": [
            idp.issuer_config("a", tenant="a"),
            idp.issuer_config("b", tenant="b"),
            idp.issuer_config("c", tenant="c", introspection=True),
        ]
    }
    env = {"FHIRFLOW_AUTH_CONFIG": json.dumps(config)}
    with LocalServer(data_dir=tmp_path_factory.mktemp("tenancy"), extra_args=("--auth", "smart"), env=env) as server:
        yield server


@pytest.fixture(scope="module")
def http(fhir: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fhir.base_url, headers={"Content-Type": FHIR_JSON}, timeout=30) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def tenants(http: httpx.Client, idp: AuthorizationServer) -> dict[str, Any]:
    """Tenant a holds a chart; tenant b holds its own chart and one resource with the same id as a's."""
    a_records = [*chart(f"pa-{TAG}", f"dr-{TAG}", f"a-{TAG}"), {"resourceType": "Practitioner", "id": f"dr-{TAG}"}]
    b_records = [*chart(f"pb-{TAG}", f"drb-{TAG}", f"b-{TAG}"), {"resourceType": "Organization", "id": f"dr-{TAG}"}]
    for tenant, records in (("a", a_records), ("b", b_records)):
        token = idp.realm(tenant).mint("system/*.cruds")
        for r in records:
            reply = http.put(f"/tenant/{tenant}/{r['resourceType']}/{r['id']}", json=r, headers=bearer(token))
            assert reply.status_code == 201, reply.text
            r2 = {**r, "meta": {"tag": [{"code": "second"}]}}
            assert (
                http.put(f"/tenant/{tenant}/{r['resourceType']}/{r['id']}", json=r2, headers=bearer(token)).status_code
                == 200
            )
    return {
        "a": {(r["resourceType"], r["id"]) for r in a_records},
        "b": {(r["resourceType"], r["id"]) for r in b_records},
    }


def _read_paths(resources: set[tuple[str, str]], prefix: str) -> list[str]:
    paths = [f"{prefix}/_history"] + [f"{prefix}/{t}/_history" for t in sorted({t for t, _ in resources})]
    for rtype, id_ in sorted(resources):
        base = f"{prefix}/{rtype}/{id_}"
        paths += [base, f"{base}/_history", f"{base}/_history/1", f"{base}/_history/2"]
    return paths


def test_the_read_routes_are_all_covered() -> None:
    readable = {r.interaction for r in ROUTE_TABLE.routes if r.method == "GET"} - {
        "capabilities",
        "smart-configuration",
    }
    searches = {"search-type", "search-system", "search-compartment"}  # test_search_sees_only_its_tenant
    jobs = {"async-status"}  # test_an_async_status_is_for_its_tenant_and_principal_only
    jobs |= {"export", "export-patient", "export-group", "export-status", "export-file"}  # test_an_export_is_...
    jobs |= {"reindex-status"}  # test_a_reindex_job_is_for_its_tenant_only
    jobs |= {"subscription-status", "subscription-events"}  # test_a_subscription_is_for_its_tenant_only
    assert readable <= {"read", "vread", "history-instance", "history-type", "history-system", *searches, *jobs}


def test_an_async_status_is_for_its_tenant_and_principal_only(http: httpx.Client, idp: AuthorizationServer) -> None:
    token_a = idp.realm("a").mint("system/*.cruds")
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": "Patient"}}]}
    accepted = http.post("/tenant/a", json=batch, headers={**bearer(token_a), "Prefer": "respond-async"})
    assert accepted.status_code == 202, accepted.text
    status = accepted.headers["Content-Location"].split(str(http.base_url).rstrip("/"), 1)[1]
    assert status.startswith("/tenant/a/_async/")
    for _ in range(100):
        reply = http.get(status, headers=bearer(token_a))
        if reply.status_code != 202:
            break
        time.sleep(0.05)
    assert reply.status_code == 200
    assert reply.json()["type"] == "batch-response"
    token_b = idp.realm("b").mint("system/*.cruds")
    assert http.get(status, headers=bearer(token_b)).status_code == 403  # tenant a's path, tenant b's token
    job = status.rsplit("/", 1)[1]
    assert http.get(f"/tenant/b/_async/{job}", headers=bearer(token_b)).status_code == 404
    someone_else = idp.realm("a").mint("system/*.cruds", sub="user-2")
    assert http.get(status, headers=bearer(someone_else)).status_code == 404  # same tenant, not the submitter
    assert http.get(status).status_code == 401


def test_a_reindex_job_is_for_its_tenant_only(http: httpx.Client, idp: AuthorizationServer) -> None:
    token_a = idp.realm("a").mint("system/*.cruds")
    accepted = http.post("/tenant/a/$reindex", headers=bearer(token_a))
    assert accepted.status_code == 202, accepted.text
    status = accepted.headers["Content-Location"].split(str(http.base_url).rstrip("/"), 1)[1]
    assert status.startswith("/tenant/a/_reindex/")
    assert http.get(status, headers=bearer(token_a)).status_code in (200, 202)
    token_b = idp.realm("b").mint("system/*.cruds")
    assert http.get(status, headers=bearer(token_b)).status_code == 403  # tenant a's path, tenant b's token
    job = status.rsplit("/", 1)[1]
    assert http.get(f"/tenant/b/_reindex/{job}", headers=bearer(token_b)).status_code == 404
    assert http.post("/tenant/a/$reindex", headers=bearer(token_b)).status_code == 403
    assert http.get(status).status_code == 401


def test_a_subscription_is_for_its_tenant_only(http: httpx.Client, idp: AuthorizationServer) -> None:
    token_a = idp.realm("a").mint("system/*.cruds")
    token_b = idp.realm("b").mint("system/*.cruds")
    subscription = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "tenancy",
        "criteria": "https://fhirflow.dev/fhir/SubscriptionTopic/Observation",
        "channel": {"type": "rest-hook", "endpoint": "https://hooks.example.org/a", "payload": "application/fhir+json"},
    }
    created = http.post("/tenant/a/Subscription", json=subscription, headers=bearer(token_a))
    assert created.status_code == 201, created.text
    id_ = created.json()["id"]
    for operation in ("$status", "$events"):
        assert http.get(f"/tenant/a/Subscription/{id_}/{operation}", headers=bearer(token_a)).status_code == 200
        assert http.get(f"/tenant/b/Subscription/{id_}/{operation}", headers=bearer(token_b)).status_code == 404
        assert http.get(f"/tenant/a/Subscription/{id_}/{operation}", headers=bearer(token_b)).status_code == 403
    listed = http.get("/tenant/b/Subscription/$status", headers=bearer(token_b)).json()
    assert id_ not in json.dumps(listed)
    assert (
        http.delete(f"/tenant/a/Subscription/{id_}", headers=bearer(token_a)).status_code == 204
    )  # the export test counts a's resources


def test_an_export_is_for_its_tenant_and_principal_only(
    http: httpx.Client, idp: AuthorizationServer, tenants: dict[str, Any]
) -> None:
    token_a = idp.realm("a").mint("system/*.rs")
    accepted = http.get("/tenant/a/$export", headers={**bearer(token_a), "Prefer": "respond-async"})
    assert accepted.status_code == 202, accepted.text
    status = accepted.headers["Content-Location"].split(str(http.base_url).rstrip("/"), 1)[1]
    assert status.startswith("/tenant/a/_export/")
    for _ in range(600):  # a guard against hanging, not a timing assertion
        reply = http.get(status, headers=bearer(token_a))
        if reply.status_code != 202:
            break
        time.sleep(0.05)
    assert reply.status_code == 200, reply.text
    exported: set[tuple[str, str]] = set()
    for entry in reply.json()["output"]:
        path = entry["url"].split(str(http.base_url).rstrip("/"), 1)[1]
        download = http.get(path, headers=bearer(token_a))
        assert download.status_code == 200
        exported |= {(r["resourceType"], r["id"]) for r in map(json.loads, download.text.splitlines())}
    assert exported == tenants["a"]  # all of tenant a's, nothing of b's
    first_file = reply.json()["output"][0]["url"].split(str(http.base_url).rstrip("/"), 1)[1]
    token_b = idp.realm("b").mint("system/*.rs")
    assert http.get(status, headers=bearer(token_b)).status_code == 403  # tenant a's path, tenant b's token
    job = status.rsplit("/", 1)[1]
    assert http.get(f"/tenant/b/_export/{job}", headers=bearer(token_b)).status_code == 404
    file_name = first_file.rsplit("/", 1)[1]
    assert http.get(f"/tenant/b/_export/{job}/{file_name}", headers=bearer(token_b)).status_code == 404
    someone_else = idp.realm("a").mint("system/*.rs", sub="user-2")
    assert http.get(status, headers=bearer(someone_else)).status_code == 404  # same tenant, not the requester
    assert http.get(first_file, headers=bearer(someone_else)).status_code == 404
    assert http.delete(status, headers=bearer(someone_else)).status_code == 404
    assert http.get(status).status_code == 401


def test_nothing_of_tenant_a_is_visible_to_a_tenant_b_token(
    http: httpx.Client, idp: AuthorizationServer, tenants: dict[str, Any]
) -> None:
    token_b = idp.realm("b").mint("system/*.cruds")
    seen: set[tuple[str, str]] = set()
    for prefix in ("/tenant/b", ""):  # by path, and by the token's binding alone
        for path in _read_paths(tenants["a"] | tenants["b"], prefix):
            reply = http.get(path, headers=bearer(token_b))
            assert reply.status_code < 500, (path, reply.text)
            seen.update(found_resources(reply.json()))
        entries = [
            {"request": {"method": "GET", "url": p.removeprefix(prefix)[1:]}} for p in _read_paths(tenants["a"], prefix)
        ]
        for kind in ("batch", "transaction"):
            bundle = {"resourceType": "Bundle", "type": kind, "entry": entries}
            reply = http.post(f"{prefix}/", json=bundle, headers=bearer(token_b))
            assert reply.status_code < 500
            seen.update(found_resources(reply.json()))

    assert seen == tenants["b"]  # tenant b's own records, and nothing of a's (the shared id is b's Organization)


def test_a_tenant_b_token_on_tenant_a_paths_is_403_on_every_route(
    http: httpx.Client, idp: AuthorizationServer, tenants: dict[str, Any]
) -> None:
    token_b = idp.realm("b").mint("system/*.cruds")
    for path in _read_paths(tenants["a"], "/tenant/a"):
        reply = http.get(path, headers=bearer(token_b))
        assert reply.status_code == 403, path
        assert reply.json()["issue"][0]["code"] == "forbidden"
    writes = [
        http.post("/tenant/a/Patient", json={"resourceType": "Patient"}, headers=bearer(token_b)),
        http.put(
            f"/tenant/a/Patient/pa-{TAG}", json={"resourceType": "Patient", "id": f"pa-{TAG}"}, headers=bearer(token_b)
        ),
        http.delete(f"/tenant/a/Patient/pa-{TAG}", headers=bearer(token_b)),
        http.post("/tenant/a", json={"resourceType": "Bundle", "type": "batch", "entry": []}, headers=bearer(token_b)),
    ]
    assert [w.status_code for w in writes] == [403, 403, 403, 403]
    token_a = idp.realm("a").mint("system/*.rs")
    assert http.get(f"/tenant/a/Patient/pa-{TAG}", headers=bearer(token_a)).json()["meta"]["versionId"] == "2"


def test_per_tenant_introspection(http: httpx.Client, idp: AuthorizationServer, tenants: dict[str, Any]) -> None:
    realm = idp.realm("c")
    token = realm.issue_opaque("system/*.cruds")

    assert http.post("/tenant/c/Patient", json={"resourceType": "Patient"}, headers=bearer(token)).status_code == 201
    assert http.get(f"/tenant/c/Patient/pa-{TAG}", headers=bearer(token)).status_code == 404
    assert http.get(f"/tenant/a/Patient/pa-{TAG}", headers=bearer(token)).status_code == 403
    assert realm.introspections == 1


def test_location_and_full_urls_carry_the_tenant(http: httpx.Client, idp: AuthorizationServer) -> None:
    token = idp.realm("a").mint("system/*.cruds")
    created = http.post("/tenant/a/Patient", json={"resourceType": "Patient"}, headers=bearer(token))

    assert created.headers["location"].startswith(f"{http.base_url}/tenant/a/Patient/")
    history = http.get("/tenant/a/Patient/_history", params={"_count": "1"}, headers=bearer(token)).json()
    assert history["entry"][0]["fullUrl"].startswith(f"{http.base_url}/tenant/a/Patient/")


def test_search_sees_only_its_tenant(http: httpx.Client, idp: AuthorizationServer, tenants: dict[str, Any]) -> None:
    token_b = idp.realm("b").mint("system/*.rs")
    probe = http.get("/tenant/b/Patient", params={"_total": "accurate"}, headers=bearer(token_b))
    if probe.status_code != 200 or not probe.json().get("total"):
        pytest.skip(f"search is not serving results yet ({probe.status_code})")
    seen: set[tuple[str, str]] = set()
    for prefix in ("/tenant/b", ""):
        for path in (
            "/",
            "/Patient",
            "/Observation",
            f"/Patient/pa-{TAG}/Observation",
            f"/Patient/pb-{TAG}/Observation",
        ):
            reply = http.get(f"{prefix}{path}", params={"_count": "100"}, headers=bearer(token_b))
            assert reply.status_code == 200, (prefix, path, reply.text)
            seen.update(found_resources(reply.json()))
    assert seen <= tenants["b"]
    assert (("Patient", f"pb-{TAG}")) in seen
