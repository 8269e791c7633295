"""The standing leak suite for writes, chains and ``_has`` (issue 14): the real embedded server with
SMART on, a real authorization server on 127.0.0.1, driven over HTTP with httpx.

For patient-, user- (a Patient's and a Practitioner's) and granular-scoped tokens, every write
route (PATCH, PUT, DELETE, their conditional forms, bundle entries) and every chain and ``_has`` is
aimed at data outside the token's reach, and the answer is compared with the answer for an id (or a
value) that does not exist at all: the same status, the same body once the ids are blanked out, the
same version headers. A caller that may not read a resource learns nothing about it: no value, no
existence, no version (DESIGN.md §5, COMMON.md "Authorization comes before any work on a resource").
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.test_authz_as import AuthorizationServer

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
IDENTIFIERS = "urn:leak-suite"


@pytest.fixture(scope="module")
def idp() -> Iterator[AuthorizationServer]:
    with AuthorizationServer() as server:
        server.realm("main")
        yield server


@pytest.fixture(scope="module")
def fhir(idp: AuthorizationServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    env = {"FHIRFLOW_AUTH_CONFIG": json.dumps({"issuers": [idp.issuer_config("main")]})}
    data_dir = tmp_path_factory.mktemp("leaks")
    with LocalServer(data_dir=data_dir, extra_args=("--auth", "smart"), env=env) as server:
        yield server


@pytest.fixture
def http(fhir: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fhir.base_url, headers={"Content-Type": FHIR_JSON}, timeout=30) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the world: my record, another patient's, and things we share ---------------------------------


@dataclass(frozen=True)
class World:
    tag: str
    me: str
    them: str
    admin: dict[str, str]

    @property
    def practitioner(self) -> str:
        """The user of the ``practitioner`` token: my GP, my Encounter's participant, my results' performer."""
        return f"dr-{self.tag}"

    @property
    def their_obs(self) -> str:
        return f"obs-them-{self.tag}"

    @property
    def my_vitals(self) -> str:
        """My own Observation, but of a category the granular token does not admit."""
        return f"vitals-me-{self.tag}"

    @property
    def their_family(self) -> str:
        return f"Welch{self.tag}"

    @property
    def their_identifier(self) -> str:
        return f"their-{self.tag}"


def observation(id_: str, patient: str, *, category: str, code: str, value: float, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id_,
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        "valueQuantity": {"value": value, "unit": "mmol/L"},
        **extra,
    }


@pytest.fixture(scope="module")
def world(fhir: LocalServer, idp: AuthorizationServer) -> World:
    tag = uuid.uuid4().hex[:8]
    me, them = f"me-{tag}", f"them-{tag}"
    admin = bearer(idp.realm("main").mint("system/*.cruds"))
    org = {"resourceType": "Organization", "id": f"org-{tag}", "name": "General Hospital"}
    doctor = {"reference": f"Practitioner/dr-{tag}"}
    resources: list[dict[str, Any]] = [
        org,
        {"resourceType": "Practitioner", "id": f"dr-{tag}", "name": [{"family": f"Doctor{tag}"}]},
        {
            "resourceType": "Patient",
            "id": me,
            "name": [{"family": f"Mine{tag}"}],
            "birthDate": "1970-01-01",
            "generalPractitioner": [doctor],
        },
        {"resourceType": "Patient", "id": them, "name": [{"family": f"Welch{tag}"}], "birthDate": "1961-07-23"},
        {
            "resourceType": "Encounter",
            "id": f"enc-me-{tag}",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{me}"},
            "participant": [{"individual": doctor}],
            "serviceProvider": {"reference": f"Organization/{org['id']}"},
        },
        {
            "resourceType": "Encounter",
            "id": f"enc-them-{tag}",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{them}"},
            "serviceProvider": {"reference": f"Organization/{org['id']}"},
        },
        observation(f"obs-me-{tag}", me, category="laboratory", code="2345-7", value=5.4, performer=[doctor]),
        observation(
            f"vitals-me-{tag}",
            me,
            category="vital-signs",
            code="8867-4",
            value=61,
            encounter={"reference": f"Encounter/enc-me-{tag}"},
            performer=[doctor],
        ),
        observation(f"obs-them-{tag}", them, category="laboratory", code="2951-2", value=137.25),
    ]
    with httpx.Client(base_url=fhir.base_url, headers={"Content-Type": FHIR_JSON}, timeout=30) as client:
        for resource in resources:
            reply = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=admin)
            assert reply.status_code == 201, reply.text
        # Their Observation, created conditionally: it holds the uniqueness key of its identifier.
        created = client.post(
            "/Observation",
            json={
                **observation("x", them, category="laboratory", code="2093-3", value=4.9),
                "identifier": [{"system": IDENTIFIERS, "value": f"their-{tag}"}],
            },
            headers={**admin, "If-None-Exist": f"identifier={IDENTIFIERS}|their-{tag}"},
        )
        assert created.status_code == 201, created.text
    return World(tag, me, them, admin)


TOKEN_KINDS = ("patient", "user", "practitioner", "granular")
USER_KINDS = ("patient", "user", "practitioner")
"""The kinds whose reach is a whole compartment."""


def token_for(kind: str, world: World, idp: AuthorizationServer) -> dict[str, str]:
    """A token of each kind, confined to my record (the granular one: to my laboratory results; the
    practitioner's to its own compartment, with ``admin_user_types`` left empty as by default)."""
    realm = idp.realm("main")
    if kind == "patient":
        return bearer(realm.mint("patient/*.cruds", patient=world.me))
    if kind == "user":
        return bearer(realm.mint("user/*.cruds", fhirUser=f"Patient/{world.me}"))
    if kind == "practitioner":
        return bearer(realm.mint("user/*.cruds", fhirUser=f"Practitioner/{world.practitioner}"))
    lab = f"{CATEGORY}|laboratory"
    scopes = f"patient/Observation.cruds?category={lab} patient/Patient.rs patient/Encounter.rs"
    return bearer(realm.mint(scopes, patient=world.me))


def test_each_token_kind_reads_my_record_and_not_theirs(
    http: httpx.Client, idp: AuthorizationServer, world: World
) -> None:
    """The suite's premise: every kind is confined (the practitioner's user token too: no
    ``admin_user_types``), so what follows compares hidden resources with missing ones."""
    for kind in TOKEN_KINDS:
        token = token_for(kind, world, idp)
        assert http.get(f"/Observation/obs-me-{world.tag}", headers=token).status_code == 200, kind
        assert http.get(f"/Observation/{world.their_obs}", headers=token).status_code == 404, kind
        assert http.get(f"/Patient/{world.them}", headers=token).status_code in (403, 404), kind


def hidden_observations(kind: str, world: World) -> list[str]:
    """Observations outside the token's reach: another patient's, and for the granular token my own
    of another category."""
    return [world.their_obs, world.my_vitals] if kind == "granular" else [world.their_obs]


# -- comparing an answer about a hidden resource with one about a resource that does not exist ----


def shape(reply: httpx.Response, *names: str) -> tuple[Any, ...]:
    """What a client sees, with the given ids (and values) blanked out."""

    def blank(text: str) -> str:
        for name in names:
            text = text.replace(name, "<id>")
        return text

    body: Any = None
    if reply.content:
        body = json.loads(blank(reply.text)) if "json" in reply.headers.get("content-type", "") else blank(reply.text)
        if isinstance(body, dict):
            body.pop("meta", None)  # an OperationOutcome's lastUpdated is the time of the answer
            if body.get("resourceType") == "Bundle":
                body.pop("id", None)  # a fresh id per answer
    headers = {h: blank(reply.headers[h]) for h in ("etag", "location", "content-location") if h in reply.headers}
    return reply.status_code, headers, body


def assert_same(hidden: httpx.Response, missing: httpx.Response, hidden_id: str, missing_id: str) -> None:
    assert shape(hidden, hidden_id) == shape(missing, missing_id), (hidden.text, missing.text)


def json_patch(ops: list[dict[str, Any]]) -> bytes:
    return json.dumps(ops).encode()


def unknown(prefix: str = "nobody") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- defect 1: PATCH must authorize its target before it looks at it ------------------------------


PATCH_PROBES = {
    # A `test` op is a yes/no oracle on a value; `copy` and `move` bring a value into the
    # validation message; a bad op fails in the patch engine before or after the check.
    "test-right": [{"op": "test", "path": "/valueQuantity/value", "value": 137.25}],
    "test-wrong": [{"op": "test", "path": "/valueQuantity/value", "value": 1}],
    "copy-into-code": [{"op": "copy", "from": "/valueQuantity", "path": "/status"}],
    "move-subject": [{"op": "move", "from": "/subject", "path": "/code/text"}],
    "remove-missing": [{"op": "remove", "path": "/nothing/here"}],
}


@pytest.mark.parametrize("kind", TOKEN_KINDS)
@pytest.mark.parametrize("probe", sorted(PATCH_PROBES))
def test_patch_answers_a_hidden_resource_as_one_that_does_not_exist(
    http: httpx.Client, idp: AuthorizationServer, world: World, kind: str, probe: str
) -> None:
    token = token_for(kind, world, idp)
    headers = {**token, "Content-Type": JSON_PATCH}
    body = json_patch(PATCH_PROBES[probe])
    nobody = unknown("obs")
    missing = http.patch(f"/Observation/{nobody}", content=body, headers=headers)
    assert missing.status_code == 404
    for hidden_id in hidden_observations(kind, world):
        hidden = http.patch(f"/Observation/{hidden_id}", content=body, headers=headers)

        assert_same(hidden, missing, hidden_id, nobody)
        assert "137.25" not in hidden.text
        assert "mmol" not in hidden.text
    assert http.get(f"/Observation/{world.their_obs}", headers=world.admin).json()["meta"]["versionId"] == "1"


def test_a_write_only_token_cannot_use_patch_to_read_another_patients_values(
    http: httpx.Client, idp: AuthorizationServer, world: World
) -> None:
    """The attack as found: only ``patient/Observation.u``, a JSON Patch ``test`` on another
    patient's value, and the 400/422 that told the two apart."""
    token = bearer(idp.realm("main").mint("patient/Observation.u", patient=world.me))
    headers = {**token, "Content-Type": JSON_PATCH}
    answers = {
        value: http.patch(
            f"/Observation/{world.their_obs}",
            content=json_patch([{"op": "test", "path": "/valueQuantity/value", "value": value}]),
            headers=headers,
        )
        for value in (137.25, 99)
    }
    assert {reply.status_code for reply in answers.values()} == {404}
    assert answers[137.25].json()["issue"] == answers[99].json()["issue"]
    # Its own resources it may still patch.
    own = http.patch(
        f"/Observation/obs-me-{world.tag}",
        content=json_patch([{"op": "replace", "path": "/status", "value": "amended"}]),
        headers=headers,
    )
    assert own.status_code == 200, own.text


@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_a_fhirpath_patch_and_a_bundle_patch_of_a_hidden_resource_reveal_nothing(
    http: httpx.Client, idp: AuthorizationServer, world: World, kind: str
) -> None:
    token = token_for(kind, world, idp)
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {
                "name": "operation",
                "part": [
                    {"name": "type", "valueCode": "replace"},
                    {"name": "path", "valueString": "Observation.status"},
                    {"name": "value", "valueString": "not-a-status"},
                ],
            }
        ],
    }
    nobody = unknown("obs")
    hidden = http.patch(f"/Observation/{world.their_obs}", json=parameters, headers=token)
    missing = http.patch(f"/Observation/{nobody}", json=parameters, headers=token)
    assert_same(hidden, missing, world.their_obs, nobody)

    ops = base64.b64encode(json_patch(PATCH_PROBES["copy-into-code"])).decode()

    def entry(id_: str) -> dict[str, Any]:
        binary = {"resourceType": "Binary", "contentType": JSON_PATCH, "data": ops}
        return {"resource": binary, "request": {"method": "PATCH", "url": f"Observation/{id_}"}}

    batch = {"resourceType": "Bundle", "type": "batch", "entry": [entry(world.their_obs), entry(nobody)]}
    reply = http.post("/", json=batch, headers=token)
    assert reply.status_code == 200, reply.text
    first, second = (e["response"] for e in reply.json()["entry"])
    assert json.dumps(first).replace(world.their_obs, "<id>").replace("entry[0]", "entry[n]") == json.dumps(
        second
    ).replace(nobody, "<id>").replace("entry[1]", "entry[n]")
    assert "137.25" not in reply.text


# -- defect 6: writes must not tell whether a hidden resource exists, or its version -------------


@pytest.fixture(scope="module")
def deleted_theirs(http_module: httpx.Client, world: World) -> str:
    """Another patient's Observation, written twice and deleted: version 3 is a tombstone."""
    id_ = f"gone-them-{world.tag}"
    body = observation(id_, world.them, category="laboratory", code="2951-2", value=140)
    for _ in range(2):
        assert http_module.put(f"/Observation/{id_}", json=body, headers=world.admin).status_code in (200, 201)
    assert http_module.delete(f"/Observation/{id_}", headers=world.admin).status_code == 204
    return id_


@pytest.fixture(scope="module")
def http_module(fhir: LocalServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fhir.base_url, headers={"Content-Type": FHIR_JSON}, timeout=30) as client:
        yield client


def mine(world: World, id_: str = "x", **extra: Any) -> dict[str, Any]:
    """An Observation every token kind may write: my laboratory result, performed by my doctor."""
    performer = [{"reference": f"Practitioner/{world.practitioner}"}]
    return observation(id_, world.me, category="laboratory", code="2345-7", value=5.5, performer=performer, **extra)


@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_put_delete_and_if_match_answer_a_hidden_resource_as_one_that_does_not_exist(
    http: httpx.Client, idp: AuthorizationServer, world: World, deleted_theirs: str, kind: str
) -> None:
    token = token_for(kind, world, idp)
    for hidden_id in [*hidden_observations(kind, world), deleted_theirs]:
        nobody = unknown("obs")
        theirs = observation("x", world.them, category="laboratory", code="2951-2", value=1)
        probes: list[tuple[str, dict[str, Any]]] = [
            ("PUT", {"json": {**theirs, "id": "{id}"}}),  # a body outside the reach: 403 either way
            ("PUT", {"json": {**mine(world), "id": "{id}"}}),  # update-as-create: 405 either way
            ("PUT", {"json": {**mine(world), "id": "{id}"}, "headers": {"If-Match": 'W/"1"'}}),
            ("PUT", {"json": {**mine(world), "id": "{id}"}, "headers": {"If-Match": 'W/"3"'}}),
            ("DELETE", {}),
            ("DELETE", {"headers": {"If-Match": 'W/"1"'}}),
            ("DELETE", {"headers": {"If-Match": 'W/"3"'}}),
            ("PATCH", {"content": "[]", "headers": {"Content-Type": JSON_PATCH, "If-Match": 'W/"3"'}}),
        ]
        for method, options in probes:
            answers = []
            for id_ in (hidden_id, nobody):
                sent = json.loads(json.dumps(options).replace("{id}", id_))
                headers = {**token, **sent.pop("headers", {})}
                if "content" in sent:
                    sent["content"] = sent["content"].encode()
                answers.append(http.request(method, f"/Observation/{id_}", headers=headers, **sent))
            assert_same(answers[0], answers[1], hidden_id, nobody)
            assert "ETag" not in answers[0].headers, (method, options)
            assert answers[0].status_code != 201, answers[0].text
    still = http.get(f"/Observation/{world.their_obs}", headers=world.admin)
    assert still.json()["meta"]["versionId"] == "1"
    assert http.get(f"/Observation/{deleted_theirs}", headers=world.admin).status_code == 410


def test_update_as_create_is_open_to_a_token_that_may_see_the_whole_type(
    http: httpx.Client, idp: AuthorizationServer, world: World
) -> None:
    """A confined token may not choose ids (405, as for any id it cannot see, next test); one that
    reads every Observation still may, and it creates with POST as before."""
    id_ = unknown("chosen")
    mine_ = observation(id_, world.me, category="laboratory", code="2345-7", value=5.5)
    patient = bearer(idp.realm("main").mint("patient/*.cruds", patient=world.me))
    refused = http.put(f"/Observation/{id_}", json=mine_, headers=patient)
    assert refused.status_code == 405, refused.text
    assert "POST" in refused.json()["issue"][0]["diagnostics"]
    assert http.post("/Observation", json=mine_, headers=patient).status_code == 201
    system = bearer(idp.realm("main").mint("system/Observation.cruds"))
    assert http.put(f"/Observation/{id_}", json=mine_, headers=system).status_code == 201


def created_shape(reply: httpx.Response) -> tuple[Any, ...]:
    body = reply.json()
    kept = {k: v for k, v in body.items() if k not in ("id", "meta", "identifier")}
    return reply.status_code, reply.headers.get("etag"), kept


@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_conditional_writes_evaluate_their_criteria_only_over_what_the_caller_may_read(
    http: httpx.Client, idp: AuthorizationServer, world: World, kind: str
) -> None:
    """Their Observation holds the uniqueness key of its identifier; to this caller it is not there."""
    token = token_for(kind, world, idp)
    theirs = f"identifier={IDENTIFIERS}|{world.their_identifier}"

    def nobody() -> str:
        return f"identifier={IDENTIFIERS}|{unknown()}"

    created = [
        http.post("/Observation", json=mine(world), headers={**token, "If-None-Exist": criteria})
        for criteria in (theirs, nobody())
    ]
    assert created[0].status_code == 201, created[0].text
    assert created_shape(created[0]) == created_shape(created[1])

    without_id = {k: v for k, v in mine(world).items() if k != "id"}
    updated = [http.put(f"/Observation?{criteria}", json=without_id, headers=token) for criteria in (theirs, nobody())]
    assert updated[0].status_code == 201, updated[0].text
    assert created_shape(updated[0]) == created_shape(updated[1])

    other = f"identifier={IDENTIFIERS}|{unknown()}"
    for method, options in (
        ("PATCH", {"content": json_patch([]), "headers": {"Content-Type": JSON_PATCH}}),
        ("DELETE", {}),
    ):
        hidden_only = f"identifier={IDENTIFIERS}|{world.their_identifier}&code=2093-3"
        nothing = f"{other}&code=2093-3"
        answers = [
            http.request(
                method, f"/Observation?{criteria}", headers={**token, **options.get("headers", {})}, **_content(options)
            )
            for criteria in (hidden_only, nothing)
        ]
        assert_same(answers[0], answers[1], world.their_identifier, other.rsplit("|", 1)[1])
    assert http.get(f"/Observation?{theirs}", headers=world.admin).json()["total"] >= 1


def _content(options: dict[str, Any]) -> dict[str, Any]:
    return {"content": options["content"]} if "content" in options else {}


@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_bundle_entries_answer_a_hidden_resource_as_one_that_does_not_exist(
    http: httpx.Client, idp: AuthorizationServer, world: World, deleted_theirs: str, kind: str
) -> None:
    token = token_for(kind, world, idp)
    for hidden_id in [*hidden_observations(kind, world), deleted_theirs]:
        nobody = unknown("obs")
        hidden_ref = f"Observation?identifier={IDENTIFIERS}|{world.their_identifier}"
        missing_ref = f"Observation?identifier={IDENTIFIERS}|{nobody}"

        def entries(id_: str, reference: str) -> list[dict[str, Any]]:
            return [
                {"request": {"method": "DELETE", "url": f"Observation/{id_}"}},
                {"request": {"method": "DELETE", "url": f"Observation/{id_}", "ifMatch": 'W/"3"'}},
                {
                    "request": {"method": "PUT", "url": f"Observation/{id_}", "ifMatch": 'W/"3"'},
                    "resource": {**mine(world), "id": id_},
                },
                {"request": {"method": "PUT", "url": f"Observation/{id_}"}, "resource": {**mine(world), "id": id_}},
                {
                    "request": {"method": "POST", "url": "Observation"},
                    "resource": {**mine(world), "hasMember": [{"reference": reference}]},
                },
            ]

        for kind_of_bundle in ("batch", "transaction"):
            answers = []
            for id_, reference in ((hidden_id, hidden_ref), (nobody, missing_ref)):
                for entry in entries(id_, reference):
                    bundle = {"resourceType": "Bundle", "type": kind_of_bundle, "entry": [entry]}
                    answers.append(http.post("/", json=bundle, headers=token))
            half = len(answers) // 2
            for hidden, missing in zip(answers[:half], answers[half:], strict=True):
                assert shape(hidden, hidden_id, world.their_identifier) == shape(missing, nobody, nobody), (
                    hidden.text,
                    missing.text,
                )


# -- defect 2: chains and _has look only at what the token may read -------------------------------


def chain_probes(kind: str, world: World) -> list[tuple[str, str, str]]:
    """(search, hidden fact, a value that matches nothing): the answer must not depend on which."""
    me, tag = world.me, world.tag
    probes = [
        # The attack as found: my Encounter, through our shared Organization, to other patients'.
        (
            f"Encounter?patient={me}&service-provider._has:Encounter:service-provider:patient.family={{}}",
            world.their_family,
            "Nobody",
        ),
        (
            f"Encounter?patient={me}&service-provider._has:Encounter:service-provider:patient.birthdate={{}}",
            "1961-07-23",
            "1900-01-01",
        ),
        (
            f"Encounter?patient={me}&service-provider._has:Encounter:service-provider:_has:Observation:encounter:code={{}}",
            "2951-2",
            "0000-0",
        ),
        (
            "Encounter?service-provider:Organization._has:Encounter:service-provider:_id={}",
            f"enc-them-{tag}",
            "enc-none",
        ),
        ("Patient?_has:Observation:patient:code={}", "2951-2", "0000-0"),
        ("Observation?subject:Patient.family={}", world.their_family, "Nobody"),
    ]
    if kind == "granular":  # my own vital signs are outside this token's reach
        probes.append((f"Encounter?_has:Observation:encounter:code={{}}&patient={me}", "8867-4", "0000-0"))
        probes.append(("Encounter?_has:Observation:encounter:category={}", "vital-signs", "nothing"))
    return probes


@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_chains_and_has_answer_from_what_the_token_may_read(
    http: httpx.Client, idp: AuthorizationServer, world: World, kind: str
) -> None:
    token = token_for(kind, world, idp)
    for search, hidden, nothing in chain_probes(kind, world):
        for extra in ("", "&_summary=count", "&_total=accurate"):
            answers = [http.get(f"/{search.format(value)}{extra}", headers=token) for value in (hidden, nothing)]
            assert answers[0].status_code in (200, 403), answers[0].text
            assert shape(answers[0], hidden, nothing) == shape(answers[1], hidden, nothing), (search, extra)
            assert f"enc-me-{world.tag}" not in answers[0].text  # each probe matches nothing once limited


@pytest.mark.parametrize("kind", USER_KINDS)
def test_a_conditional_write_with_a_chain_does_not_reach_other_patients_facts(
    http: httpx.Client, idp: AuthorizationServer, world: World, kind: str
) -> None:
    token = token_for(kind, world, idp)
    search = f"Encounter?patient={world.me}&service-provider._has:Encounter:service-provider:patient.family={{}}"
    answers = [
        http.patch(f"/{search.format(value)}", content=b"[]", headers={**token, "Content-Type": JSON_PATCH})
        for value in (world.their_family, "Nobody")
    ]
    assert answers[0].status_code == 404, answers[0].text
    assert shape(answers[0], world.their_family, "Nobody") == shape(answers[1], world.their_family, "Nobody")


@pytest.mark.parametrize("kind", USER_KINDS)
def test_chains_and_has_still_find_what_the_token_may_read(
    http: httpx.Client, idp: AuthorizationServer, world: World, kind: str
) -> None:
    token = token_for(kind, world, idp)

    def ids(search: str) -> set[str]:
        reply = http.get(f"/{search}", headers=token)
        assert reply.status_code == 200, reply.text
        return {entry["resource"]["id"] for entry in reply.json().get("entry", [])}

    tag = world.tag
    # (other tests of this module add Observations of mine too)
    assert ids(f"Observation?subject:Patient.family=Mine{tag}") >= {f"obs-me-{tag}", f"vitals-me-{tag}"}
    assert f"obs-them-{tag}" not in ids(f"Observation?subject:Patient.family=Welch{tag}")
    assert ids("Patient?_has:Observation:patient:code=2345-7") >= {world.me}
    assert ids(f"Encounter?_has:Observation:encounter:code=8867-4&patient={world.me}") == {f"enc-me-{tag}"}
    assert ids(f"Observation?encounter:Encounter.patient.family=Mine{tag}") == {f"vitals-me-{tag}"}


def exported_ids(http: httpx.Client, token: dict[str, str], **params: str) -> set[str]:
    """A Patient-level export run to the end: the ids in its files."""
    accepted = http.get("/Patient/$export", params=params, headers={**token, "Prefer": "respond-async"})
    assert accepted.status_code == 202, accepted.text
    status = accepted.headers["content-location"].split(str(http.base_url).rstrip("/"), 1)[1]
    for _ in range(1200):  # a guard against a hang, not a timing assertion
        reply = http.get(status, headers=token)
        if reply.status_code != 202:
            break
        time.sleep(0.05)
    assert reply.status_code == 200, reply.text
    ids: set[str] = set()
    for output in reply.json()["output"]:
        path = output["url"].split(str(http.base_url).rstrip("/"), 1)[1]
        ids |= {json.loads(line)["id"] for line in http.get(path, headers=token).text.splitlines()}
    return ids


@pytest.mark.parametrize("kind", USER_KINDS)
def test_an_export_type_filter_with_a_chain_does_not_reach_other_patients_facts(
    http: httpx.Client, idp: AuthorizationServer, world: World, kind: str
) -> None:
    token = token_for(kind, world, idp)
    chain = "Encounter?service-provider._has:Encounter:service-provider:patient.family={}"
    answers = [
        exported_ids(http, token, _type="Encounter", _typeFilter=chain.format(family))
        for family in (world.their_family, "Nobody")
    ]
    assert answers == [set(), set()]
    assert exported_ids(http, token, _type="Encounter") == {f"enc-me-{world.tag}"}


@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_list_membership_answers_only_from_lists_the_token_may_read(
    http: httpx.Client, idp: AuthorizationServer, world: World, kind: str
) -> None:
    """``_list`` is a reverse chain from a List: another patient's List that holds my Observation
    must not tell me so."""
    tag = world.tag
    for owner in (world.them, world.me):
        listed = {
            "resourceType": "List",
            "id": f"list-{owner}",
            "status": "current",
            "mode": "working",
            "subject": {"reference": f"Patient/{owner}"},
            "entry": [{"item": {"reference": f"Observation/obs-me-{tag}"}}],
            # my doctor keeps my List (the Practitioner compartment's link to a List)
            **({"source": {"reference": f"Practitioner/{world.practitioner}"}} if owner == world.me else {}),
        }
        assert http.put(f"/List/list-{owner}", json=listed, headers=world.admin).status_code in (200, 201)
    token = token_for(kind, world, idp)
    for extra in ("", "&_summary=count"):
        answers = [
            http.get(f"/Observation?_list={list_id}{extra}", headers=token)
            for list_id in (f"list-{world.them}", "list-nobody")
        ]
        assert shape(answers[0], f"list-{world.them}") == shape(answers[1], "list-nobody"), answers[0].text
        assert f"obs-me-{tag}" not in answers[0].text
    if kind != "granular":  # (no List scope)
        own = http.get(f"/Observation?_list=list-{world.me}", headers=token)
        assert [e["resource"]["id"] for e in own.json()["entry"]] == [f"obs-me-{tag}"]


# -- _include:iterate walks on only from what the token may read ----------------------------------


@pytest.fixture(scope="module")
def linked_through_theirs(http_module: httpx.Client, world: World) -> dict[str, str]:
    """My Observation ``start`` has a member of theirs (hidden), whose member is mine again (``end``):
    the only path from ``start`` to ``end`` goes through their Observation. ``direct`` is mine with
    ``end`` as its own member, the control."""
    tag = world.tag
    ids = {"start": f"chain-start-{tag}", "middle": f"chain-theirs-{tag}", "end": f"chain-end-{tag}"}
    ids["direct"] = f"chain-direct-{tag}"

    def member(id_: str) -> dict[str, Any]:
        return {"hasMember": [{"reference": f"Observation/{id_}"}]}

    resources = [
        mine(world, ids["end"]),
        observation(ids["middle"], world.them, category="laboratory", code="2951-2", value=1, **member(ids["end"])),
        mine(world, ids["start"], **member(ids["middle"])),
        mine(world, ids["direct"], **member(ids["end"])),
    ]
    for resource in resources:
        reply = http_module.put(f"/Observation/{resource['id']}", json=resource, headers=world.admin)
        assert reply.status_code == 201, reply.text
    return ids


@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_include_iterate_never_walks_through_a_resource_the_token_may_not_read(
    http: httpx.Client, idp: AuthorizationServer, world: World, linked_through_theirs: dict[str, str], kind: str
) -> None:
    ids = linked_through_theirs
    token = token_for(kind, world, idp)

    def found(search: str) -> set[str]:
        reply = http.get(f"/Observation?{search}", headers=token)
        assert reply.status_code == 200, reply.text
        return {entry["resource"]["id"] for entry in reply.json().get("entry", [])}

    # Forwards: start -> (theirs) -> end; end is mine, but reached only through theirs.
    assert found(f"_id={ids['start']}&_include:iterate=Observation:has-member") == {ids["start"]}
    assert found(f"_id={ids['direct']}&_include:iterate=Observation:has-member") == {ids["direct"], ids["end"]}
    # Backwards: end <- (theirs) <- start.
    reverse = found(f"_id={ids['end']}&_revinclude:iterate=Observation:has-member")
    assert reverse == {ids["end"], ids["direct"]}
    # The same searches with a token that may read everything walk the whole graph.
    everything = http.get(
        f"/Observation?_id={ids['start']}&_include:iterate=Observation:has-member", headers=world.admin
    )
    assert {e["resource"]["id"] for e in everything.json()["entry"]} == {ids["start"], ids["middle"], ids["end"]}
