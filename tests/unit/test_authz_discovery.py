"""Discovery (.well-known/smart-configuration, CapabilityStatement.rest.security), the audit
record, the development issuer and configuration errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhirflow.authz.audit import audit_event
from fhirflow.authz.build import build_auth
from fhirflow.authz.devissuer import DEV_AUDIENCE, DEV_ISSUER, DevIssuer
from fhirflow.runtime import build_dependencies
from fhirflow.settings import Settings
from fhirflow.validation import validate_resource
from tests.unit.test_authz_kit import InProcessClient, TestIssuer, auth_settings, smart_client

SMART = {
    "authorization_endpoint": "https://idp.test/authorize",
    "token_endpoint": "https://idp.test/token",
    "token_endpoint_auth_methods_supported": ["private_key_jwt"],
    "management_endpoint": "https://idp.test/manage",
    "capabilities": ["launch-standalone", "client-confidential-asymmetric"],
}


def test_smart_configuration(tmp_path: Path) -> None:
    client = smart_client(tmp_path, smart=SMART)

    reply = client.get("/.well-known/smart-configuration", headers={"accept": "application/json"})

    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    doc = reply.body
    assert doc["issuer"] == "https://idp.test/realm"
    assert doc["token_endpoint"] == "https://idp.test/token"
    assert doc["authorization_endpoint"] == "https://idp.test/authorize"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert "client_credentials" in doc["grant_types_supported"]
    assert {"permission-v1", "permission-v2", "permission-patient", "permission-user", "launch-standalone"} <= set(
        doc["capabilities"]
    )
    assert "patient/*.cruds" in doc["scopes_supported"]


def test_capability_statement_security(tmp_path: Path) -> None:
    client = smart_client(tmp_path, smart=SMART)

    security = client.get("/metadata").body["rest"][0]["security"]

    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert security["extension"][0]["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert uris == {
        "authorize": SMART["authorization_endpoint"],
        "token": SMART["token_endpoint"],
        "manage": SMART["management_endpoint"],
    }


def test_discovery_per_tenant_names_the_tenants_issuer(tmp_path: Path) -> None:
    a = TestIssuer(issuer="https://idp.test/a")
    config = {
        "issuers": [
            {"issuer": "https://idp.test/shared", "jwks": a.jwks()},
            {"issuer": a.issuer, "jwks": a.jwks(), "tenant": "a"},
        ]
    }
    settings = Settings(data_dir=tmp_path, auth="smart", auth_config=json.dumps(config), audit="off")
    client = InProcessClient(build_dependencies(settings))

    assert client.get("/tenant/a/.well-known/smart-configuration").body["issuer"] == "https://idp.test/a"
    assert client.get("/.well-known/smart-configuration").body["issuer"] == "https://idp.test/shared"


def test_no_discovery_and_no_security_section_when_authorization_is_off(tmp_path: Path) -> None:
    client = InProcessClient(build_dependencies(Settings(data_dir=tmp_path, audit="off")))

    assert client.get("/.well-known/smart-configuration").status == 404
    assert "security" not in client.get("/metadata").body["rest"][0]


# -- audit -------------------------------------------------------------------------------------------


def _audited_client(tmp_path: Path, issuer: TestIssuer, audit: str) -> InProcessClient:
    settings = auth_settings(tmp_path, issuer)
    fields = {name: getattr(settings, name) for name in settings.__dataclass_fields__}
    return InProcessClient(build_dependencies(Settings(**{**fields, "audit": audit})))


def test_one_audit_record_per_request_without_bodies_or_values(tmp_path: Path) -> None:
    issuer = TestIssuer()
    client = _audited_client(tmp_path, issuer, "file")
    admin = issuer.token("system/*.cruds")
    patient = {
        "resourceType": "Patient",
        "id": "pz",
        "name": [{"family": "Zebedee"}],
        "identifier": [{"value": "MRN-777"}],
    }
    reader = issuer.token("user/*.rs", fhirUser="Practitioner/dr9", sub="alice", client_id="chart-app")

    client.request("PUT", "/Patient/pz", token=admin, body=patient)
    client.get("/Patient/pz", reader, query={"_elements": "name", "_pretty": "true"})
    client.get("/Patient/pz")  # no token: 401
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": "Patient/pz"}}]}
    client.request("POST", "/", token=reader, body=batch)

    text = (tmp_path / "audit.jsonl").read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert len(records) == 4
    write, read, denied, bundle = records
    assert write["what"] == {
        "interaction": "update",
        "method": "PUT",
        "type": "Patient",
        "id": "pz",
        "version": None,
        "query": [],
    }
    assert write["outcome"] == {"status": 201, "result": "success"}
    assert read["who"] == {
        "sub": "alice",
        "client_id": "chart-app",
        "fhir_user": "Practitioner/dr9",
        "issuer": issuer.issuer,
    }
    assert read["what"]["query"] == ["_elements", "_pretty"]
    assert read["source_ip"] == "192.0.2.10"
    assert read["tenant"] == "default"
    assert read["request_id"]
    # Its shape is AuditRecord's, from which the audit archive's Athena columns are derived.
    from fhirflow.authz.audit import AuditOutcome, AuditRecord, AuditWhat, AuditWho

    assert list(read) == list(AuditRecord.__annotations__)
    assert list(read["what"]) == list(AuditWhat.__annotations__)
    assert list(read["who"]) == list(AuditWho.__annotations__)
    assert list(read["outcome"]) == [
        k for k in AuditOutcome.__annotations__ if k != "reason"
    ]  # reason: refused tokens only
    assert denied["outcome"] == {"status": 401, "result": "failure", "reason": "no-token"}
    assert list(denied["outcome"]) == list(AuditOutcome.__annotations__)
    assert denied["who"] == {}
    assert bundle["what"]["interaction"] == "transaction"
    for secret in ("Zebedee", "MRN-777", 'name"', "Bearer", "eyJ"):
        assert secret not in text, secret


def test_audit_records_can_be_written_as_audit_event_resources(tmp_path: Path) -> None:
    issuer = TestIssuer()
    client = _audited_client(tmp_path, issuer, "auditevent")
    admin = issuer.token("system/*.cruds", fhirUser="Practitioner/dr9")

    client.get("/Patient/nobody", admin)

    history = client.get("/AuditEvent/_history", admin).body
    events = [e["resource"] for e in history["entry"]]
    assert events, history
    event = events[-1]
    assert validate_resource(event) == []
    assert event["subtype"][0]["code"] == "read"
    assert event["outcome"] == "4"
    assert event["entity"] == [{"what": {"reference": "Patient/nobody"}}]
    assert event["agent"][0]["who"] == {"reference": "Practitioner/dr9"}


def test_audit_event_shape_for_a_server_error() -> None:
    record: dict[str, Any] = {"time": "2024-01-01T00:00:00.000Z", "outcome": {"status": 500}, "what": {"method": "GET"}}
    event = audit_event(record)

    assert event["outcome"] == "8"
    assert event["action"] == "R"
    assert validate_resource(event) == []


# -- the development issuer ----------------------------------------------------------------------------


def test_dev_issuer_tokens_are_accepted_by_a_server_that_trusts_it(tmp_path: Path) -> None:
    token = DevIssuer(tmp_path).mint(scope="patient/*.rs", patient="p1", fhir_user="Patient/p1", tenant="t1")
    settings = Settings(data_dir=tmp_path, auth="smart", auth_dev_issuer=True, audit="off")
    client = InProcessClient(build_dependencies(settings))

    assert client.get("/tenant/t1/Patient/p1", token).status == 404  # authorized, and not there
    assert client.get("/tenant/t2/Patient/p1", token).status == 403
    assert client.get("/tenant/t1/Observation/x", token).status == 404
    other = DevIssuer(tmp_path / "elsewhere").mint(scope="system/*.rs")
    assert client.get("/Patient/p1", other).status == 401  # another data dir's key is not trusted
    key = json.loads((tmp_path / "dev-issuer.jwk.json").read_text())
    assert key["kty"] == "EC"
    assert "d" in key
    assert (tmp_path / "dev-issuer.jwk.json").stat().st_mode & 0o077 == 0
    doc = client.get("/.well-known/smart-configuration").body
    assert doc["issuer"] == DEV_ISSUER
    assert {"patient/*.rs", "user/*.rs", "system/*.rs"} <= set(doc["scopes_supported"])
    assert "token_endpoint" not in doc  # tokens come from `fhirflow token`, not an endpoint


@pytest.mark.parametrize(
    ("env", "store", "endpoint"),
    [
        ({"AWS_LAMBDA_FUNCTION_NAME": "fhirflow-crud"}, "sqlite", None),
        ({"AWS_EXECUTION_ENV": "AWS_Lambda_python3.12"}, "sqlite", None),
        ({}, "dynamodb", None),
    ],
)
def test_the_dev_issuer_is_refused_outside_the_embedded_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], store: str, endpoint: str | None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(data_dir=tmp_path, store=store, dynamodb_endpoint=endpoint, auth="smart", auth_dev_issuer=True)

    with pytest.raises(RuntimeError, match="embedded mode only"):
        build_auth(settings)


def test_dev_tokens_carry_the_requested_claims(tmp_path: Path) -> None:
    from joserfc import jwt
    from joserfc.jwk import import_key

    issuer = DevIssuer(tmp_path)
    token = issuer.mint(scope="user/*.rs", fhir_user="Practitioner/1", groups=["auditor"], lifetime=60)
    claims = jwt.decode(token, import_key(issuer.public_jwks()["keys"][0]), algorithms=["ES256"]).claims

    assert claims["iss"] == DEV_ISSUER
    assert claims["aud"] == DEV_AUDIENCE
    assert claims["fhirUser"] == "Practitioner/1"
    assert claims["cognito:groups"] == ["auditor"]
    assert claims["exp"] - claims["iat"] == 60


# -- configuration errors fail at startup -------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"auth": "smart"}, "needs an issuer"),
        ({"auth": "smart", "auth_issuer": "https://idp.test/"}, "jwks_uri"),
        ({"auth": "smart", "auth_issuer": "https://idp.test/", "auth_jwks_uri": "http://idp.test/jwks"}, "https URLs"),
        (
            {
                "auth": "smart",
                "auth_config": json.dumps(
                    {"issuers": [{"issuer": "x", "jwks_uri": "https://x/j"}], "denied_read_status": 500}
                ),
            },
            "403 or 404",
        ),
        ({"auth": "smart", "auth_config": "[]"}, "JSON object"),
        ({"auth": "bogus"}, "FHIRFLOW_AUTH"),
    ],
)
def test_bad_configurations_fail_at_startup(tmp_path: Path, settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_auth(Settings(data_dir=tmp_path, **settings))


def test_flat_settings_configure_one_issuer(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        auth="smart",
        auth_issuer="https://idp.test/",
        auth_audience="https://fhir.test/a, https://fhir.test/b",
        auth_jwks_uri="https://idp.test/jwks",
    )
    authenticator, _ = build_auth(settings)

    issuer = authenticator.config.issuers[0]
    assert (issuer.issuer, issuer.audience, issuer.jwks_uri) == (
        "https://idp.test/",
        ("https://fhir.test/a", "https://fhir.test/b"),
        "https://idp.test/jwks",
    )


def test_the_log_sink_emits_one_json_line_even_when_the_root_logger_is_quieter(tmp_path: Path) -> None:
    import logging

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            if record.name == "fhirflow.audit":
                self.lines.append(record.getMessage())

    root = logging.getLogger()
    handler, level = Collect(), root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # as in Lambda without AWS_LAMBDA_LOG_LEVEL
    try:
        issuer = TestIssuer()
        _audited_client(tmp_path, issuer, "log").get("/Patient/nobody", issuer.token("system/*.rs"))
    finally:
        root.removeHandler(handler)
        root.setLevel(level)

    assert len(handler.lines) == 1
    assert json.loads(handler.lines[0])["what"]["id"] == "nobody"
