"""Background jobs belong to the principal that started them (issue 14, defect 3), over HTTP.

A real embedded server with SMART on, tokens from a real authorization server on 127.0.0.1. A bulk
export and an asynchronous batch are started by one client; then:

- another client of the same user (same ``sub``), and another backend client without a ``sub``,
  get exactly what they get for a job id that was never issued (status, files, cancel);
- a token that names neither a subject nor a client cannot start a job;
- the owner's own token with a narrower reach (a patient scope instead of ``system/*``) gets 403
  on the status and the files, not the 40-patient export it no longer may read.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.test_authz_as import AuthorizationServer

FHIR_JSON = "application/fhir+json"
ASYNC = {"Prefer": "respond-async"}
TAG = uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def idp() -> Iterator[AuthorizationServer]:
    with AuthorizationServer() as server:
        server.realm("main")
        yield server


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jobs")


@pytest.fixture(scope="module")
def http(idp: AuthorizationServer, data_dir: Path) -> Iterator[httpx.Client]:
    env = {"FHIRFLOW_AUTH_CONFIG": json.dumps({"issuers": [idp.issuer_config("main")]})}
    with (
        LocalServer(data_dir=data_dir, extra_args=("--auth", "smart"), env=env) as server,
        httpx.Client(base_url=server.base_url, headers={"Content-Type": FHIR_JSON}, timeout=30) as client,
    ):
        admin = idp.realm("main").mint("system/*.cruds", sub="seeder", client_id="seeder")
        for n in range(3):
            patient = {"resourceType": "Patient", "id": f"p{n}-{TAG}", "name": [{"family": f"Fam{n}"}]}
            assert client.put(f"/Patient/{patient['id']}", json=patient, headers=bearer(admin)).status_code == 201
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _path(http: httpx.Client, url: str) -> str:
    return url.split(str(http.base_url).rstrip("/"), 1)[1]


def _finished(http: httpx.Client, status: str, token: str) -> httpx.Response:
    for _ in range(600):  # a guard against a hang, not a timing assertion
        reply = http.get(status, headers=bearer(token))
        if reply.status_code != 202:
            return reply
        time.sleep(0.05)
    raise AssertionError(f"{status} still running")


def _export(http: httpx.Client, token: str) -> tuple[str, str]:
    """Start a system export with ``token`` and wait: (status path, first file path)."""
    accepted = http.get("/$export", params={"_type": "Patient"}, headers={**bearer(token), **ASYNC})
    assert accepted.status_code == 202, accepted.text
    status = _path(http, accepted.headers["Content-Location"])
    done = _finished(http, status, token)
    assert done.status_code == 200, done.text
    file = _path(http, done.json()["output"][0]["url"])
    assert http.get(file, headers=bearer(token)).status_code == 200
    return status, file


def _as_missing(http: httpx.Client, method: str, path: str, job: str, token: str) -> None:
    """``path`` (naming job ``job``) answers ``token`` exactly as the same path with an unissued id."""
    unknown = uuid.uuid4().hex
    real = http.request(method, path, headers=bearer(token))
    fake = http.request(method, path.replace(job, unknown), headers=bearer(token))
    assert real.status_code == fake.status_code == 404, (real.status_code, real.text)
    assert real.text.replace(job, "JOB") == fake.text.replace(unknown, "JOB")


def test_an_export_is_the_client_s_not_the_user_s(http: httpx.Client, idp: AuthorizationServer) -> None:
    realm = idp.realm("main")
    owner = realm.mint("system/*.rs", sub="user-1", client_id="app-1")
    status, file = _export(http, owner)
    job = status.rsplit("/", 1)[1]
    other_app = realm.mint("system/*.rs", sub="user-1", client_id="app-2")
    _as_missing(http, "GET", status, job, other_app)
    _as_missing(http, "GET", file, job, other_app)
    _as_missing(http, "DELETE", status, job, other_app)
    assert http.get(file, headers=bearer(owner)).status_code == 200  # the owner still has it


def test_backend_clients_without_sub_keep_their_exports_apart(http: httpx.Client, idp: AuthorizationServer) -> None:
    realm = idp.realm("main")
    first = realm.mint("system/*.rs", sub=None, client_id="backend-1")
    status, file = _export(http, first)
    job = status.rsplit("/", 1)[1]
    second = realm.mint("system/*.rs", sub=None, client_id="backend-2")
    _as_missing(http, "GET", status, job, second)
    _as_missing(http, "GET", file, job, second)
    nobody = realm.mint("system/*.rs", sub=None, client_id=None)
    refused = http.get("/$export", headers={**bearer(nobody), **ASYNC})
    assert refused.status_code == 403, refused.text
    assert "sub" in refused.json()["issue"][0]["diagnostics"]
    _as_missing(http, "GET", status, job, nobody)


def test_the_owner_s_narrower_token_does_not_get_the_export(http: httpx.Client, idp: AuthorizationServer) -> None:
    realm = idp.realm("main")
    status, file = _export(http, realm.mint("system/*.rs", sub="user-3", client_id="app-3"))
    narrower = realm.mint("patient/*.rs", sub="user-3", client_id="app-3", patient=f"p0-{TAG}")
    for path in (status, file):
        reply = http.get(path, headers=bearer(narrower))
        assert reply.status_code == 403, (path, reply.text)
        assert reply.json()["issue"][0]["code"] == "forbidden"
        assert "Fam" not in reply.text
    again = realm.mint("system/*.rs", sub="user-3", client_id="app-3")  # a fresh token, the same reach
    assert http.get(file, headers=bearer(again)).status_code == 200


def _async_batch(http: httpx.Client, token: str) -> str:
    batch: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"Patient?_id=p1-{TAG}"}}],
    }
    accepted = http.post("/", json=batch, headers={**bearer(token), **ASYNC})
    assert accepted.status_code == 202, accepted.text
    status = _path(http, accepted.headers["Content-Location"])
    done = _finished(http, status, token)
    assert done.status_code == 200, done.text
    assert "Fam1" in done.text
    return status


def test_an_async_bundle_is_the_client_s_and_within_the_token_s_reach(
    http: httpx.Client, idp: AuthorizationServer
) -> None:
    realm = idp.realm("main")
    status = _async_batch(http, realm.mint("system/*.rs", sub="user-4", client_id="app-4"))
    job = status.rsplit("/", 1)[1]
    _as_missing(http, "GET", status, job, realm.mint("system/*.rs", sub="user-4", client_id="app-5"))
    status = _async_batch(http, realm.mint("system/*.rs", sub=None, client_id="backend-4"))
    job = status.rsplit("/", 1)[1]
    _as_missing(http, "GET", status, job, realm.mint("system/*.rs", sub=None, client_id="backend-5"))
    narrower = realm.mint("patient/*.rs", sub=None, client_id="backend-4", patient=f"p0-{TAG}")
    reply = http.get(status, headers=bearer(narrower))
    assert reply.status_code == 403, reply.text
    assert "Fam1" not in reply.text
    nobody = realm.mint("system/*.rs", sub=None, client_id=None)
    refused = http.post("/", json={"resourceType": "Bundle", "type": "batch"}, headers={**bearer(nobody), **ASYNC})
    assert refused.status_code == 403, refused.text


def _files_holding(root: Path, secret: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and secret in path.read_bytes():
                found.append(str(path.relative_to(root)))
        except OSError:
            continue  # a file deleted while we looked
    return found


def test_an_async_bundle_never_stores_the_bearer_token(
    http: httpx.Client, idp: AuthorizationServer, data_dir: Path
) -> None:
    """issue 14, defect 9: the stored request (blobs/async/<job>/request.json) held the caller's
    Authorization header until the job was prepared. It keeps the validated principal instead."""
    token = idp.realm("main").mint("system/*.cruds", sub="user-6", client_id="app-6")
    secret = token.split(".")[2].encode()  # the signature: what makes the token a credential
    entries = [
        {"resource": {"resourceType": "Patient", "gender": "other"}, "request": {"method": "POST", "url": "Patient"}}
        for _ in range(1500)
    ]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    accepted = http.post("/", json=bundle, headers={**bearer(token), **ASYNC})
    assert accepted.status_code == 202, accepted.text
    status = _path(http, accepted.headers["Content-Location"])
    job = status.rsplit("/", 1)[1]
    stored = list(data_dir.rglob(f"*{job}*"))
    assert stored, "the job's request is stored under the data directory"
    seen = _files_holding(data_dir, secret)  # while the job runs: its request is on disk now
    done = _finished(http, status, token)
    assert done.status_code == 200, done.text
    assert done.json()["type"] == "transaction-response"
    assert len(done.json()["entry"]) == 1500  # it ran as the caller, with the caller's scopes
    assert seen + _files_holding(data_dir, secret) == []


def test_a_reindex_job_is_the_client_s(http: httpx.Client, idp: AuthorizationServer) -> None:
    realm = idp.realm("main")
    owner = realm.mint("system/*.cruds", sub="user-7", client_id="app-7")
    accepted = http.post("/$reindex", params={"_type": "Patient"}, headers=bearer(owner))
    assert accepted.status_code == 202, accepted.text
    status = _path(http, accepted.headers["Content-Location"])
    assert http.get(status, headers=bearer(owner)).status_code in (200, 202)
    job = status.rsplit("/", 1)[1]
    _as_missing(http, "GET", status, job, realm.mint("system/*.cruds", sub="user-7", client_id="app-8"))
    _as_missing(http, "GET", status, job, realm.mint("system/*.cruds", sub=None, client_id="app-9"))
    nobody = realm.mint("system/*.cruds", sub=None, client_id=None)
    assert http.post("/$reindex", params={"_type": "Patient"}, headers=bearer(nobody)).status_code == 403
