"""The scope x interaction x context matrix: SMART v1 and v2, patient/user/system, granular.

Every cell drives the real crud, bundle and search Applications with a real signed token and
asserts the HTTP answer: 200/201/204 when allowed, 403 when no scope grants the interaction, 404
when the resource is outside what the token may see (the configured default; never the data).
The search cells check the decision (200/403); what a search returns is checked by the leak test
(tests/unit/test_authz_leaks.py), and below, what the policy pushes into the query. The export
kick-off has a row per token too, with what its export holds.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.unit.test_authz_kit import LAB, InProcessClient, Reply, TestIssuer, smart_client

VITALS = "http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"


def observation(patient: str, category: str = LAB, id_: str | None = None, **extra: Any) -> dict[str, Any]:
    system, code = category.split("|")
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": system, "code": code}]}],
        "code": {"text": "a measurement"},
        "subject": {"reference": f"Patient/{patient}"},
        **extra,
    }
    if id_:
        body["id"] = id_
    return body


@dataclass
class World:
    p1: str
    p2: str
    dr: str
    lab_p1: str
    vital_p1: str
    lab_p2: str

    @classmethod
    def seed(cls, client: InProcessClient, admin: str) -> World:
        tag = uuid.uuid4().hex[:10]
        world = cls(*(f"{name}-{tag}" for name in ("p1", "p2", "dr", "lab1", "vital1", "lab2")))
        resources = [
            {"resourceType": "Patient", "id": world.p1},
            {"resourceType": "Patient", "id": world.p2},
            {"resourceType": "Practitioner", "id": world.dr},
            observation(world.p1, LAB, world.lab_p1),
            observation(world.p1, VITALS, world.vital_p1),
            observation(world.p2, LAB, world.lab_p2, performer=[{"reference": f"Practitioner/{world.dr}"}]),
        ]
        for resource in resources:
            reply = client.request("PUT", f"/{resource['resourceType']}/{resource['id']}", token=admin, body=resource)
            assert reply.status == 201, reply.body
        return world


def _status(reply: Reply) -> str:
    return str(reply.status)


def _bundle(client: InProcessClient, token: str, kind: str, entries: list[dict[str, Any]]) -> Reply:
    return client.request("POST", "/", token=token, body={"resourceType": "Bundle", "type": kind, "entry": entries})


def _batch_read(client: InProcessClient, token: str, w: World) -> str:
    reply = _bundle(
        client,
        token,
        "batch",
        [
            {"request": {"method": "GET", "url": f"Observation/{w.lab_p1}"}},
            {"request": {"method": "GET", "url": f"Observation/{w.lab_p2}"}},
        ],
    )
    assert reply.status == 200, reply.body
    return ",".join(e["response"]["status"].split()[0] for e in reply.body["entry"])


def _put(client: InProcessClient, token: str, body: dict[str, Any]) -> Reply:
    return client.request("PUT", f"/Observation/{body['id']}", token=token, body=body)


OPERATIONS = {
    "read": lambda c, t, w: _status(c.get(f"/Observation/{w.lab_p1}", t)),
    "read-other": lambda c, t, w: _status(c.get(f"/Observation/{w.lab_p2}", t)),
    "read-own-vital": lambda c, t, w: _status(c.get(f"/Observation/{w.vital_p1}", t)),
    "read-patient": lambda c, t, w: _status(c.get(f"/Patient/{w.p1}", t)),
    "vread": lambda c, t, w: _status(c.get(f"/Observation/{w.lab_p1}/_history/1", t)),
    "vread-other": lambda c, t, w: _status(c.get(f"/Observation/{w.lab_p2}/_history/1", t)),
    "history": lambda c, t, w: _status(c.get(f"/Observation/{w.lab_p1}/_history", t)),
    "history-other": lambda c, t, w: _status(c.get(f"/Observation/{w.lab_p2}/_history", t)),
    "history-type": lambda c, t, w: _status(c.get("/Observation/_history", t)),
    "search": lambda c, t, w: _status(c.get("/Observation", t)),
    "search-system": lambda c, t, w: _status(c.get("/", t)),
    "create": lambda c, t, w: _status(c.request("POST", "/Observation", token=t, body=observation(w.p1))),
    "create-other": lambda c, t, w: _status(c.request("POST", "/Observation", token=t, body=observation(w.p2))),
    "update": lambda c, t, w: _status(_put(c, t, observation(w.p1, LAB, w.lab_p1, note=[{"text": "seen"}]))),
    "update-other": lambda c, t, w: _status(_put(c, t, observation(w.p2, LAB, w.lab_p2, note=[{"text": "seen"}]))),
    "move-out": lambda c, t, w: _status(_put(c, t, observation(w.p2, LAB, w.lab_p1))),
    "patch": lambda c, t, w: _status(
        c.request(
            "PATCH",
            f"/Observation/{w.lab_p1}",
            token=t,
            body=[{"op": "replace", "path": "/status", "value": "amended"}],
            headers={"content-type": "application/json-patch+json"},
        )
    ),
    "delete": lambda c, t, w: _status(c.request("DELETE", f"/Observation/{w.lab_p1}", token=t)),
    "delete-other": lambda c, t, w: _status(c.request("DELETE", f"/Observation/{w.lab_p2}", token=t)),
    "batch-read": _batch_read,
    "transaction-create": lambda c, t, w: _status(
        _bundle(
            c, t, "transaction", [{"resource": observation(w.p1), "request": {"method": "POST", "url": "Observation"}}]
        )
    ),
}
OPS = tuple(OPERATIONS)


def row(**cells: str) -> dict[str, str]:
    assert set(cells) == set(OPS), set(OPS) ^ set(cells)
    return cells


def _row(values: str) -> dict[str, str]:
    return row(**dict(zip(OPS, values.split(), strict=True)))


# Expected answers, in the order of OPS:
#      read read-other own-vital patient vread vread-other history history-other history-type search search-system
#      create create-other update update-other move-out patch delete delete-other batch-read transaction
# Writes aimed at another patient's resource answer as for an id that does not exist (issue 14):
# update-other sends a body outside the compartment (403, whatever is stored), delete-other is 204.
RS_OBS = _row("200 404 200 403 200 404 200 404 200 200 403  403 403 403 403 403 403 403 403 200,404 403")
R_OBS = _row("200 404 200 403 200 404 200 404 403 403 403  403 403 403 403 403 403 403 403 200,404 403")
S_OBS = _row("403 403 403 403 403 403 403 403 200 200 403  403 403 403 403 403 403 403 403 403,403 403")
CUD_OBS = _row("403 403 403 403 403 403 403 403 403 403 403  201 403 200 403 403 200 204 204 403,403 200")
ALL_P1 = _row("200 404 200 200 200 404 200 404 200 200 200  201 403 200 403 403 200 204 204 200,404 200")
LAB_RS = _row("200 404 404 403 200 404 200 404 200 200 403  403 403 403 403 403 403 403 403 200,404 403")
LAB_ALL = _row("200 404 404 403 200 404 200 404 200 200 403  201 403 200 403 403 200 204 204 200,404 200")
EVERYTHING = _row("200 200 200 200 200 200 200 200 200 200 200  201 201 200 200 200 200 204 204 200,200 200")
SYSTEM_RS = _row("200 200 200 200 200 200 200 200 200 200 200  403 403 403 403 403 403 403 403 200,200 403")
SYSTEM_OBS_RS = _row("200 200 200 403 200 200 200 200 200 200 403  403 403 403 403 403 403 403 403 200,200 403")
NOTHING = _row("403 403 403 403 403 403 403 403 403 403 403  403 403 403 403 403 403 403 403 403,403 403")

# token name → (scope, context claims builder, expected row)
TOKENS: dict[str, tuple[str, str, dict[str, str]]] = {
    "v1 patient/Observation.read": ("patient/Observation.read", "patient", RS_OBS),
    "v1 patient/*.write": ("patient/*.write", "patient", CUD_OBS),
    "v1 patient/*.*": ("patient/*.*", "patient", ALL_P1),
    "v1 user/*.* (fhirUser Patient)": ("user/*.*", "user-patient", ALL_P1),
    "v2 patient/Observation.rs": ("patient/Observation.rs", "patient", RS_OBS),
    "v2 patient/Observation.r": ("patient/Observation.r", "patient", R_OBS),
    "v2 patient/Observation.s": ("patient/Observation.s", "patient", S_OBS),
    "v2 patient/Observation.cud": ("patient/Observation.cud", "patient", CUD_OBS),
    "v2 patient/*.cruds": ("patient/*.cruds", "patient", ALL_P1),
    "v2 split scopes .r + .s": ("patient/Observation.r patient/Observation.s", "patient", RS_OBS),
    "v2 granular rs lab": (f"patient/Observation.rs?category={LAB}", "patient", LAB_RS),
    "v2 granular cruds lab": (f"patient/Observation.cruds?category={LAB}", "patient", LAB_ALL),
    "v2 user/*.cruds (fhirUser Patient)": ("user/*.cruds", "user-patient", ALL_P1),
    "v2 user/*.cruds (fhirUser Practitioner, admin type)": ("user/*.cruds", "user-practitioner", EVERYTHING),
    "v2 system/*.rs": ("system/*.rs", "none", SYSTEM_RS),
    "v2 system/Observation.rs": ("system/Observation.rs", "none", SYSTEM_OBS_RS),
    "v2 system/*.cruds": ("system/*.cruds", "none", EVERYTHING),
    "v1 system/*.*": ("system/*.*", "none", EVERYTHING),
    "no clinical scope": ("openid fhirUser launch/patient", "patient", NOTHING),
    "patient scope without patient context": ("patient/*.cruds", "none", NOTHING),
    "user scope without fhirUser": ("user/*.cruds", "none", NOTHING),
}


@pytest.fixture(scope="module")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, issuer: TestIssuer) -> InProcessClient:
    # Practitioner as an admin type is a deployment's explicit choice (off by default); the matrix covers it.
    return smart_client(tmp_path_factory.mktemp("matrix"), issuer, admin_user_types=["Practitioner"])


def _token(issuer: TestIssuer, scope: str, context: str, w: World) -> str:
    claims: dict[str, Any] = {}
    if context == "patient":
        claims["patient"] = w.p1
    elif context == "user-patient":
        claims["fhirUser"] = f"Patient/{w.p1}"
    elif context == "user-practitioner":
        claims["fhirUser"] = f"https://fhir.test/r4/Practitioner/{w.dr}"
    return issuer.token(scope, **claims)


@pytest.mark.parametrize("operation", OPS)
@pytest.mark.parametrize("token_name", list(TOKENS))
def test_matrix(client: InProcessClient, issuer: TestIssuer, token_name: str, operation: str) -> None:
    scope, context, expected = TOKENS[token_name]
    world = World.seed(client, issuer.token("system/*.cruds"))
    token = _token(issuer, scope, context, world)

    assert OPERATIONS[operation](client, token, world) == expected[operation]


# Export kick-off (system level, _type=Observation) per token: 202 when a scope grants reading
# Observations, 403 otherwise; and which of the world's Observations the finished export holds.
EXPORTS: dict[str, tuple[int, tuple[str, ...]]] = {
    "v1 patient/Observation.read": (202, ("lab_p1", "vital_p1")),
    "v1 patient/*.write": (403, ()),
    "v1 patient/*.*": (202, ("lab_p1", "vital_p1")),
    "v1 user/*.* (fhirUser Patient)": (202, ("lab_p1", "vital_p1")),
    "v2 patient/Observation.rs": (202, ("lab_p1", "vital_p1")),
    "v2 patient/Observation.r": (202, ("lab_p1", "vital_p1")),
    "v2 patient/Observation.s": (403, ()),
    "v2 patient/Observation.cud": (403, ()),
    "v2 patient/*.cruds": (202, ("lab_p1", "vital_p1")),
    "v2 split scopes .r + .s": (202, ("lab_p1", "vital_p1")),
    "v2 granular rs lab": (202, ("lab_p1",)),
    "v2 granular cruds lab": (202, ("lab_p1",)),
    "v2 user/*.cruds (fhirUser Patient)": (202, ("lab_p1", "vital_p1")),
    "v2 user/*.cruds (fhirUser Practitioner, admin type)": (202, ("lab_p1", "vital_p1", "lab_p2")),
    "v2 system/*.rs": (202, ("lab_p1", "vital_p1", "lab_p2")),
    "v2 system/Observation.rs": (202, ("lab_p1", "vital_p1", "lab_p2")),
    "v2 system/*.cruds": (202, ("lab_p1", "vital_p1", "lab_p2")),
    "v1 system/*.*": (202, ("lab_p1", "vital_p1", "lab_p2")),
    "no clinical scope": (403, ()),
    "patient scope without patient context": (403, ()),
    "user scope without fhirUser": (403, ()),
}


def test_every_token_has_an_export_row() -> None:
    assert set(EXPORTS) == set(TOKENS)


@pytest.mark.parametrize("token_name", list(TOKENS))
def test_matrix_export_kick_off(client: InProcessClient, issuer: TestIssuer, token_name: str) -> None:
    scope, context, _ = TOKENS[token_name]
    expected_status, expected_ids = EXPORTS[token_name]
    world = World.seed(client, issuer.token("system/*.cruds"))
    token = _token(issuer, scope, context, world)

    reply = client.get("/$export", token, query={"_type": "Observation"}, headers={"prefer": "respond-async"})

    assert reply.status == expected_status, reply.body
    if expected_status != 202:
        assert reply.outcome_codes == ["forbidden"]
        return
    client.drain_exports()
    manifest = client.get(reply.headers["Content-Location"].split("fhir.test", 1)[1], token)
    assert manifest.status == 200, manifest.body
    exported: set[str] = set()
    for entry in manifest.body["output"]:
        assert entry["type"] == "Observation"
        exported |= {r["id"] for r in client.get(entry["url"].split("fhir.test", 1)[1], token).body}
    ours = {getattr(world, name): name for name in ("lab_p1", "vital_p1", "lab_p2")}
    assert sorted(ours[i] for i in exported if i in ours) == sorted(expected_ids)


def test_user_scopes_of_a_non_admin_practitioner_are_limited_to_its_compartment(
    tmp_path: Any, issuer: TestIssuer
) -> None:
    client = smart_client(tmp_path, issuer, admin_user_types=[])
    world = World.seed(client, issuer.token("system/*.cruds"))
    token = issuer.token("user/*.rs", fhirUser=f"Practitioner/{world.dr}")

    assert client.get(f"/Observation/{world.lab_p2}", token).status == 200  # performer: in the compartment
    assert client.get(f"/Observation/{world.lab_p1}", token).status == 404
    assert client.get(f"/Practitioner/{world.dr}", token).status == 200  # its own compartment


def test_denied_reads_can_be_configured_to_answer_403(tmp_path: Any, issuer: TestIssuer) -> None:
    client = smart_client(tmp_path, issuer, denied_read_status=403)
    world = World.seed(client, issuer.token("system/*.cruds"))
    token = issuer.token("patient/*.rs", patient=world.p1)

    reply = client.get(f"/Observation/{world.lab_p2}", token)

    assert reply.status == 403
    assert reply.outcome_codes == ["forbidden"]
    assert client.get(f"/Observation/{world.lab_p1}", token).status == 200


# -- what search pushes into its query (SmartPolicy.search_constraint) ------------------------------


def _request(scope: str, **claims: Any) -> Any:
    from fhirflow.authz.authenticator import BearerAuthenticator
    from fhirflow.authz.config import AuthConfig, IssuerConfig
    from fhirflow.model import FhirRequest

    issuer = TestIssuer()
    config = AuthConfig(mode="smart", issuers=(IssuerConfig(issuer=issuer.issuer, static_jwks=issuer.jwks()),))
    request = FhirRequest(method="GET", path="/Observation", route="/{type}", path_params={"type": "Observation"})
    request.principal = BearerAuthenticator(config).principal_for(issuer.token(scope, **claims))
    return request


@pytest.mark.parametrize(
    ("scope", "claims", "rtype", "expected"),
    [
        ("system/*.rs", {}, "Observation", None),
        ("system/*.rs", {}, None, None),
        ("patient/*.rs", {"patient": "p1"}, "Observation", ((("Patient", "p1"), ()),)),
        ("patient/*.rs", {"patient": "p1"}, None, ((("Patient", "p1"), ()),)),
        (
            f"patient/Observation.rs?category={LAB}",
            {"patient": "p1"},
            "Observation",
            ((("Patient", "p1"), (("category", LAB),)),),
        ),
        ("user/*.rs", {"fhirUser": "Patient/p1"}, "Observation", ((("Patient", "p1"), ()),)),
        ("user/*.rs", {"fhirUser": "Practitioner/dr"}, "Observation", None),  # an admin type
        ("patient/Observation.rs system/Observation.s", {"patient": "p1"}, "Observation", None),
        (
            "patient/Observation.rs user/Observation.s",
            {"patient": "p1", "fhirUser": "RelatedPerson/r1"},
            "Observation",
            ((("Patient", "p1"), ()), (("RelatedPerson", "r1"), ())),
        ),
    ],
)
def test_search_constraint(scope: str, claims: dict[str, Any], rtype: str | None, expected: Any) -> None:
    from fhirflow.authz.config import AuthConfig
    from fhirflow.authz.policy import SmartPolicy

    constraint = SmartPolicy(
        AuthConfig(mode="smart", issuers=(), admin_user_types=("Practitioner",))
    ).search_constraint(_request(scope, **claims), rtype)

    if expected is None:
        assert constraint is None
    else:
        assert constraint is not None
        assert tuple((a.compartment, a.filters) for a in constraint.alternatives) == expected
        assert constraint.patients is None


@pytest.mark.parametrize(
    ("scope", "rtype"),
    [
        ("patient/Observation.r", "Observation"),  # read without search
        ("patient/Observation.rs", "Condition"),
        ("patient/Observation.rs", None),  # type-specific scopes cannot constrain a search across all types
        ("system/Observation.rs", None),
    ],
)
def test_search_constraint_refuses(scope: str, rtype: str | None) -> None:
    from fhirflow.authz.config import AuthConfig
    from fhirflow.authz.policy import SmartPolicy
    from fhirflow.errors import Forbidden

    with pytest.raises(Forbidden):
        SmartPolicy(AuthConfig(mode="smart", issuers=(), admin_user_types=("Practitioner",))).search_constraint(
            _request(scope, patient="p1"), rtype
        )


def test_included_resources_are_admitted_one_by_one() -> None:
    from fhirflow.authz.config import AuthConfig
    from fhirflow.authz.policy import SmartPolicy

    policy = SmartPolicy(AuthConfig(mode="smart", issuers=()))
    request = _request("patient/*.rs", patient="p1")

    assert policy.admits_resource(request, {"resourceType": "Patient", "id": "p1"})
    assert not policy.admits_resource(request, {"resourceType": "Patient", "id": "p2"})
    assert policy.admits_resource(request, observation("p1"))
    assert not policy.admits_resource(request, {"resourceType": "Organization", "id": "o"})
