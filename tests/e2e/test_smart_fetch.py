"""smart-fetch (PyPI, the SMART bulk export client) against fhirflow, which trusts a real OAuth server.

- the OAuth server is npm ``oidc-provider`` on 127.0.0.1 (tests/e2e/oidc_server.mjs): client
  credentials, the client authenticated by ``private_key_jwt`` signed RS384 (what smart-fetch signs
  with an RSA key), access tokens as RS384 JWTs for fhirflow's audience;
- fhirflow (``--auth smart``) knows only the issuer, its JWKS URL and the token endpoint, which it
  publishes in ``/.well-known/smart-configuration``, where smart-fetch finds it;
- data: a few Synthea patients from ../shared/synthea (plus the hospital and practitioner files);
- smart-fetch runs a system-level and a Group-level ``bulk`` export with its default type list (and
  its default Observation category filter); every file must hold exactly what the server's own
  searches return for the same token: the same ids and versions per type. The Group has a member
  whose period has ended, who must not be exported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from fhirflow.local.launcher import LocalServer, free_port

ROOT = Path(__file__).resolve().parents[2]
SYNTHEA = ROOT.parent / "shared" / "synthea"
NODE_SERVER = Path(__file__).with_name("oidc_server.mjs")
AUDIENCE = "https://fhir.test/r4"
CLIENT = "smart-fetch"
ADMIN = "cohort-builder"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# smart-fetch's default types (smart_fetch.resources.PATIENT_TYPES) and scope types (SCOPE_TYPES).
DEFAULT_TYPES = (
    "Patient",
    "Encounter",
    "AllergyIntolerance",
    "Condition",
    "Device",
    "DiagnosticReport",
    "DocumentReference",
    "EpisodeOfCare",
    "Immunization",
    "MedicationDispense",
    "MedicationRequest",
    "Observation",
    "Procedure",
    "ServiceRequest",
    "Specimen",
)
SCOPE_TYPES = (*DEFAULT_TYPES, "Binary", "Location", "Medication", "Organization", "Practitioner", "PractitionerRole")
OBSERVATION_FILTER = "social-history,vital-signs,imaging,laboratory,survey,exam"
"""smart-fetch's default _typeFilter for Observation (smart_fetch.filtering)."""

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None
    or not (ROOT / "node_modules" / "oidc-provider").is_dir()
    or shutil.which("smart-fetch", path=str(Path(sys.executable).parent)) is None
    or not SYNTHEA.is_dir(),
    reason="needs node with npm oidc-provider (npm ci), smart-fetch (pip install -e '.[dev]') and ../shared/synthea",
)


class OAuthServer:
    """``node tests/e2e/oidc_server.mjs`` on a free loopback port; stops with the test (or its parent)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.port = free_port()
        self.config = {"port": self.port, **config}
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[str] | None = None

    def __enter__(self) -> OAuthServer:
        import tempfile

        self.log = tempfile.TemporaryFile(mode="w+")  # its warnings (e.g. "Unsupported runtime" on Node 20)
        self.process = subprocess.Popen(
            ["node", str(NODE_SERVER), json.dumps(self.config)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        if not first.startswith("listening"):
            self.process.kill()
            self.log.seek(0)
            raise RuntimeError(f"oidc-provider did not start: {first}{self.log.read()}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def log_text(self) -> str:
        self.log.seek(0)
        return str(self.log.read())

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[RSAKey, Path]:
    key = RSAKey.generate_key(2048)
    # smart-fetch (jwcrypto) names a PEM key by its RFC 7638 thumbprint: register it under that kid.
    key = RSAKey.import_key({**key.as_dict(private=True), "kid": key.thumbprint()})
    pem = tmp_path_factory.mktemp("client") / "client.pem"
    pem.write_bytes(key.as_pem(private=True))
    pem.chmod(0o600)
    return key, pem


@pytest.fixture(scope="module")
def oauth(client_key: tuple[RSAKey, Path]) -> Iterator[OAuthServer]:
    key, _ = client_key
    public = {**key.as_dict(private=False), "use": "sig", "alg": "RS384"}
    scopes = [*(f"system/{t}.read" for t in (*SCOPE_TYPES, "Group")), "system/Group.write"]
    config = {
        "audience": AUDIENCE,
        "scopes": scopes,
        "clients": [
            {"client_id": CLIENT, "jwks": {"keys": [public]}, "alg": "RS384", "default_scopes": ["system/Group.read"]},
            {"client_id": ADMIN, "jwks": {"keys": [public]}, "alg": "RS384"},
        ],
    }
    with OAuthServer(config) as server:
        yield server


def _synthea_files() -> list[Path]:
    files = sorted(SYNTHEA.glob("*.json"), key=lambda p: p.stat().st_size)
    shared = [p for p in files if p.name.startswith(("hospitalInformation", "practitionerInformation"))]
    patients = [p for p in files if p not in shared][:3]  # the three smallest: a few patients keep it fast
    return [*shared, *patients]


@pytest.fixture(scope="module")
def fhir(oauth: OAuthServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    data_dir = tmp_path_factory.mktemp("smart-fetch-fhir")
    load = [sys.executable, "-m", "fhirflow.cli", "import", "--data-dir", str(data_dir), "--no-progress"]
    subprocess.run([*load, *map(str, _synthea_files())], check=True, capture_output=True, timeout=600)
    config = {
        "issuers": [{"issuer": oauth.issuer, "audience": [AUDIENCE], "jwks_uri": f"{oauth.issuer}/jwks"}],
        "smart": {"token_endpoint": oauth.token_endpoint},
    }
    env = {"FHIRFLOW_AUTH_CONFIG": json.dumps(config)}
    with LocalServer(data_dir=data_dir, extra_args=("--auth", "smart"), env=env) as server:
        yield server


def _token(oauth: OAuthServer, key: RSAKey, scope: str, client: str = CLIENT) -> str:
    """A token asked for as smart-fetch asks (private_key_jwt, RS384)."""
    now = int(time.time())
    claims = {
        "iss": client,
        "sub": client,
        "aud": oauth.token_endpoint,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    assertion = jwt.encode({"alg": "RS384", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["RS384"])
    form = {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
    }
    reply = httpx.post(oauth.token_endpoint, data=form, timeout=30)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["access_token"])


def _searched(http: httpx.Client, path: str, params: dict[str, str]) -> set[tuple[str, str]]:
    """(id, versionId) of every resource a search returns, all pages followed."""
    found: set[tuple[str, str]] = set()
    reply = http.get(path, params={**params, "_count": "500"})
    while True:
        assert reply.status_code == 200, reply.text
        bundle = reply.json()
        for entry in bundle.get("entry", []):
            if entry.get("search", {}).get("mode", "match") == "match":
                found.add((entry["resource"]["id"], entry["resource"]["meta"]["versionId"]))
        following = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        if not following:
            return found
        reply = http.get(following[0])


def _exported(folder: Path) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    for path in folder.glob("[A-Z]*.ndjson"):  # {Type}.000.ndjson; not log.ndjson (the bulk log)
        for line in path.read_text().splitlines():
            if line.strip():
                resource = json.loads(line)
                out.setdefault(resource["resourceType"], set()).add((resource["id"], resource["meta"]["versionId"]))
    return out


def _smart_fetch(
    oauth: OAuthServer, fhir: LocalServer, pem: Path, out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).parent / "smart-fetch"),
        "bulk",
        "--fhir-url",
        fhir.base_url,
        "--smart-client-id",
        CLIENT,
        "--smart-key",
        str(pem),
        "--no-compression",
        *extra,
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{done.stdout}{done.stderr}\nOAuth server: {oauth.log_text()}\n{fhir.log_tail()}"
    return done


def _expected_by_search(http: httpx.Client, prefix: str = "") -> dict[str, set[tuple[str, str]]]:
    expected: dict[str, set[tuple[str, str]]] = {}
    for rtype in DEFAULT_TYPES:
        params = {"category": OBSERVATION_FILTER} if rtype == "Observation" else {}
        found = _searched(http, f"{prefix}/{rtype}" if prefix else f"/{rtype}", params)
        if found:
            expected[rtype] = found
    return expected


def test_system_level_export_equals_the_servers_search_results(
    oauth: OAuthServer, fhir: LocalServer, client_key: tuple[RSAKey, Path], tmp_path: Path
) -> None:
    key, pem = client_key
    out = tmp_path / "system"

    _smart_fetch(oauth, fhir, pem, out)

    token = _token(oauth, key, " ".join(f"system/{t}.read" for t in DEFAULT_TYPES))
    with httpx.Client(base_url=fhir.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        expected = _expected_by_search(http)
    exported = _exported(out)
    assert len(expected["Patient"]) == 3
    assert {"Encounter", "Condition", "Observation", "Procedure"} <= set(expected)
    assert exported == expected


def test_group_level_export_equals_the_members_compartments_without_the_ended_member(
    oauth: OAuthServer, fhir: LocalServer, client_key: tuple[RSAKey, Path], tmp_path: Path
) -> None:
    key, pem = client_key
    token = _token(oauth, key, "system/Patient.read system/Group.read")
    with httpx.Client(base_url=fhir.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        patients = sorted(i for i, _ in _searched(http, "/Patient", {}))
    current, ended = patients[:2], patients[2]
    group = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "member": [
            *({"entity": {"reference": f"Patient/{p}"}, "period": {"start": "2020-01-01"}} for p in current),
            {"entity": {"reference": f"Patient/{ended}"}, "period": {"start": "2020-01-01", "end": "2021-01-01"}},
        ],
    }
    admin = _token(oauth, key, "system/Group.write", client=ADMIN)
    with httpx.Client(base_url=fhir.base_url, timeout=60) as http:
        created = http.post("/Group", json=group, headers={"Authorization": f"Bearer {admin}"})
    assert created.status_code == 201, created.text
    group_id = created.json()["id"]
    out = tmp_path / "group"

    _smart_fetch(oauth, fhir, pem, out, "--group", group_id)

    reader = _token(oauth, key, " ".join(f"system/{t}.read" for t in DEFAULT_TYPES))
    expected: dict[str, set[tuple[str, str]]] = {}
    with httpx.Client(base_url=fhir.base_url, headers={"Authorization": f"Bearer {reader}"}, timeout=60) as http:
        for member in current:
            for rtype, found in _expected_by_search(http, f"/Patient/{member}").items():
                expected.setdefault(rtype, set()).update(found)
        expected["Patient"] = {(p, v) for p, v in _searched(http, "/Patient", {}) if p in current}
    exported = _exported(out)
    assert {p for p, _ in exported["Patient"]} == set(current)
    assert exported == expected
