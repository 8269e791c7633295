"""Bulk export in process: the kick-off's parameters, the job's states, the worker's NDJSON files,
the Patient and Group compartments, steps and replays, failures, and the SQS handler.

Everything runs through the real export Application and ExportWorker on the embedded adapters
(SQLite job store, queue and search index; files in a temporary directory); the worker runs when
the test drains the queue, as the embedded worker loop would in the background.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fhirflow.errors import BadRequest
from fhirflow.runtime import build_dependencies
from fhirflow.searchparams.registry import default_registry
from fhirflow.settings import Settings
from fhirflow_export.params import parse_parameters
from tests.unit.test_authz_kit import InProcessClient, Reply, TestIssuer, smart_client

ASYNC = {"prefer": "respond-async"}


class _NoEngine:
    def unsupported(self, criterion: Any) -> str | None:
        return None


def params(
    pairs: list[tuple[str, str]], *, strict: bool = False, patient_level: bool = False, lenient: bool = False
) -> Any:
    return parse_parameters(
        pairs,
        strict=strict,
        registry=default_registry(),
        engine=_NoEngine(),
        patient_level=patient_level,
        lenient=lenient,
    )


# -- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["application/fhir+ndjson", "application/ndjson", "ndjson"])
def test_the_ndjson_output_formats_are_accepted(value: str) -> None:
    assert params([("_outputFormat", value)]).output_format == "application/fhir+ndjson"


@pytest.mark.parametrize(
    ("pairs", "where"),
    [
        ([("_outputFormat", "text/csv")], "_outputFormat"),
        ([("_since", "2024-01-01")], "_since"),  # a date, not an instant
        ([("_since", "yesterday")], "_since"),
        ([("_since", "2024-01-01T00:00:00Z"), ("_since", "2024-01-02T00:00:00Z")], "_since"),
        ([("_type", "Patient,Nonsense")], "_type"),
        ([("_typeFilter", "Observation")], "_typeFilter"),  # no query
        ([("_typeFilter", "Nonsense?x=1")], "_typeFilter"),
        ([("_typeFilter", "Observation?date=notadate")], "date"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(pairs: list[tuple[str, str]], where: str) -> None:
    with pytest.raises(BadRequest) as raised:
        params(pairs)
    assert where in raised.value.issues[0].expression


def test_types_may_repeat_and_be_comma_separated_without_duplicates() -> None:
    assert params([("_type", "Patient, Observation"), ("_type", "Patient,Condition")]).types == (
        "Patient",
        "Observation",
        "Condition",
    )
    assert params([]).types is None


def test_patient_level_refuses_only_types_outside_the_patient_compartment() -> None:
    assert params([("_type", "Organization")]).types == ("Organization",)
    with pytest.raises(BadRequest, match="only types outside the Patient compartment"):
        params([("_type", "Organization")], patient_level=True)
    mixed = params([("_type", "Observation,Organization")], patient_level=True)
    assert (mixed.types, mixed.referenced) == (("Observation",), ("Organization",))
    lenient = params([("_type", "Organization")], patient_level=True, lenient=True)
    assert (lenient.types, lenient.referenced) == ((), ())
    assert [i.expression for i in lenient.issues] == [("_type",)]


def test_since_is_an_instant_in_milliseconds() -> None:
    assert params([("_since", "2024-01-31T12:00:00.250+01:00")]).since_ms == 1706698800250


def test_type_filters_split_at_the_next_type_and_keep_their_or_values() -> None:
    found = params([("_typeFilter", "Observation?status=final,amended&code=x,Condition?clinical-status=active")])
    assert found.type_filters == (
        ("Observation", (("status", "final,amended"), ("code", "x"))),
        ("Condition", (("clinical-status", "active"),)),
    )


@pytest.mark.parametrize(
    "pairs",
    [
        [("_elements", "id")],
        [("patient", "Patient/1")],
        [("includeAssociatedData", "LatestProvenanceResources")],
        [("whatever", "1")],
        [("_type", "Patient"), ("_typeFilter", "Observation?status=final")],  # a filter for a type not asked for
        [("_typeFilter", "Observation?status=final&_count=5")],
        [("_typeFilter", "Observation?nonsense=1")],
    ],
)
def test_unsupported_parameters_are_400_when_strict_and_reported_otherwise(pairs: list[tuple[str, str]]) -> None:
    with pytest.raises(BadRequest):
        params(pairs, strict=True)
    lenient = params(pairs)
    assert lenient.issues
    assert all(i.severity == "warning" for i in lenient.issues)


# -- the server side, in process -----------------------------------------------------------------


def _client(tmp_path: Path, **settings: Any) -> InProcessClient:
    return InProcessClient(build_dependencies(Settings(data_dir=tmp_path, audit="off", **settings)))


def _put(client: InProcessClient, resource: dict[str, Any], tenant: str = "") -> None:
    path = f"{tenant}/{resource['resourceType']}/{resource['id']}"
    assert client.request("PUT", path, body=resource).status in (200, 201)


def _observation(id_: str, *subjects: str, status: str = "final") -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Observation", "id": id_, "status": status, "code": {"text": "x"}}
    if subjects:
        body["subject"] = {"reference": f"Patient/{subjects[0]}"}
        if subjects[1:]:
            body["performer"] = [{"reference": f"Patient/{s}"} for s in subjects[1:]]
    return body


def _path(url: str) -> str:
    return url.split("fhir.test", 1)[1]


def kick_off(client: InProcessClient, path: str, token: str | None = None, **query: str) -> str:
    reply = client.get(path, token, query=query, headers=ASYNC)
    assert reply.status == 202, reply.body
    return _path(reply.headers["Content-Location"])


def finished(client: InProcessClient, status: str, token: str | None = None) -> Reply:
    client.drain_exports()
    return client.get(status, token)


def contents(client: InProcessClient, manifest: Reply, token: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Type → every resource of that type in the export's files."""
    assert manifest.status == 200, manifest.body
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest.body["output"]:
        reply = client.get(_path(entry["url"]), token)
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "application/fhir+ndjson"
        assert len(reply.body) == entry["count"]
        assert all(r["resourceType"] == entry["type"] for r in reply.body)
        out.setdefault(entry["type"], []).extend(reply.body)
    return out


def ids(found: dict[str, list[dict[str, Any]]]) -> dict[str, list[str]]:
    return {rtype: sorted(r["id"] for r in resources) for rtype, resources in found.items()}


@pytest.fixture
def tenant() -> str:
    return f"/tenant/t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(tmp_path: Path) -> InProcessClient:
    return _client(tmp_path)


def test_kick_off_needs_respond_async(client: InProcessClient) -> None:
    reply = client.get("/$export")
    assert reply.status == 400
    assert "respond-async" in reply.body["issue"][0]["diagnostics"]


def test_export_is_defined_on_patient_and_group_only(client: InProcessClient) -> None:
    assert client.get("/Observation/$export", headers=ASYNC).status == 404
    assert client.get("/Patient/x/$export", headers=ASYNC).status == 404
    assert client.get("/Group/missing/$export", headers=ASYNC).status == 404


def test_a_job_goes_from_queued_to_its_manifest_and_the_files_hold_the_stored_resources(
    client: InProcessClient, tenant: str
) -> None:
    stored = [{"resourceType": "Patient", "id": f"p{i}", "active": True} for i in range(3)]
    stored += [_observation(f"o{i}", f"p{i % 3}") for i in range(5)]
    for resource in stored:
        _put(client, resource, tenant)
    status = kick_off(client, f"{tenant}/$export")

    queued = client.get(status)
    manifest = finished(client, status)

    assert queued.status == 202
    assert queued.headers["X-Progress"] == "queued"
    assert manifest.headers["Content-Type"] == "application/json"
    assert manifest.body["request"] == f"http://fhir.test{tenant}/$export"
    assert manifest.body["requiresAccessToken"] is False
    assert manifest.body["error"] == []
    found = contents(client, manifest)
    by_id = {(r["resourceType"], r["id"]): r for rs in found.values() for r in rs}
    for resource in stored:
        exported = by_id[(resource["resourceType"], resource["id"])]
        assert {k: v for k, v in exported.items() if k != "meta"} == resource
    assert len(by_id) == len(stored)


def test_files_are_split_by_the_configured_size_and_steps_resume_where_they_stopped(
    tmp_path: Path, tenant: str
) -> None:
    client = _client(tmp_path, export_file_resources=2)
    for i in range(7):
        _put(client, {"resourceType": "Patient", "id": f"p{i}"}, tenant)
    status = kick_off(client, f"{tenant}/$export", _type="Patient")
    from fhirflow_export.local import export_drainer

    drainer = export_drainer(client.deps)
    drainer.step_seconds = -1.0  # every step stops after its first page: the job runs as many steps
    steps = drainer.drain()
    manifest = client.get(status)

    assert steps >= 2
    assert [e["count"] for e in manifest.body["output"]] == [2, 2, 2, 1]
    assert ids(contents(client, manifest)) == {"Patient": [f"p{i}" for i in range(7)]}


def test_type_since_and_type_filter(client: InProcessClient, tenant: str) -> None:
    _put(client, {"resourceType": "Patient", "id": "p1"}, tenant)
    _put(client, _observation("old", "p1"), tenant)
    since = client.get(f"{tenant}/Observation/old").body["meta"]["lastUpdated"]
    _put(client, _observation("new", "p1", status="amended"), tenant)  # same millisecond at worst: _since is ge
    _put(client, _observation("prelim", "p1", status="preliminary"), tenant)

    only_observations = contents(client, finished(client, kick_off(client, f"{tenant}/$export", _type="Observation")))
    filtered = contents(
        client,
        finished(
            client,
            kick_off(
                client,
                f"{tenant}/$export",
                _typeFilter="Observation?status=final,amended,Observation?status=amended",
            ),
        ),
    )
    later = client.get(f"{tenant}/Observation/new").body["meta"]["lastUpdated"]
    recent = contents(client, finished(client, kick_off(client, f"{tenant}/$export", _since=later)))

    assert ids(only_observations) == {"Observation": ["new", "old", "prelim"]}
    assert ids(filtered) == {"Observation": ["new", "old"], "Patient": ["p1"]}  # "new" matches both: once
    assert "old" not in ids(recent).get("Observation", [])
    assert "prelim" in ids(recent)["Observation"]
    assert since <= later


def test_patient_level_exports_only_resources_in_some_patient_compartment(client: InProcessClient, tenant: str) -> None:
    _put(client, {"resourceType": "Patient", "id": "p1"}, tenant)
    _put(client, _observation("about-p1", "p1"), tenant)
    _put(client, _observation("about-nobody"), tenant)
    _put(client, {"resourceType": "Organization", "id": "org"}, tenant)

    found = ids(contents(client, finished(client, kick_off(client, f"{tenant}/Patient/$export"))))

    assert found == {"Patient": ["p1"], "Observation": ["about-p1"]}


def test_group_level_exports_the_active_members_compartments_once(client: InProcessClient, tenant: str) -> None:
    for patient in ("a", "b", "c", "gone"):
        _put(client, {"resourceType": "Patient", "id": patient}, tenant)
    _put(client, _observation("only-a", "a"), tenant)
    _put(client, _observation("a-and-b", "b", "a"), tenant)  # in both members' compartments
    _put(client, _observation("only-c", "c"), tenant)
    _put(client, _observation("only-gone", "gone"), tenant)
    group = {
        "resourceType": "Group",
        "id": "g",
        "type": "person",
        "actual": True,
        "member": [
            {"entity": {"reference": "Patient/b"}},
            {"entity": {"reference": "http://fhir.test" + tenant + "/Patient/a"}},
            {"entity": {"reference": "Patient/gone"}, "inactive": True},
        ],
    }
    _put(client, group, tenant)

    found = ids(
        contents(client, finished(client, kick_off(client, f"{tenant}/Group/g/$export", _type="Patient,Observation")))
    )

    assert found == {"Patient": ["a", "b"], "Observation": ["a-and-b", "only-a"]}


def test_cancel_deletes_the_files_and_the_job_is_gone(client: InProcessClient, tenant: str) -> None:
    _put(client, {"resourceType": "Patient", "id": "p1"}, tenant)
    status = kick_off(client, f"{tenant}/$export")
    manifest = finished(client, status)
    file_path = _path(manifest.body["output"][0]["url"])

    cancelled = client.request("DELETE", status)

    assert cancelled.status == 202
    assert client.get(status).status == 404
    assert client.get(file_path).status == 404
    assert client.request("DELETE", status).status == 404


def test_a_job_cancelled_before_it_runs_writes_nothing(client: InProcessClient, tenant: str) -> None:
    _put(client, {"resourceType": "Patient", "id": "p1"}, tenant)
    status = kick_off(client, f"{tenant}/$export")

    assert client.request("DELETE", status).status == 202
    client.drain_exports()

    from fhirflow_export.app import parts_for

    record = parts_for(client.deps.settings).jobs.get(tenant.rsplit("/", 1)[1], status.rsplit("/", 1)[1])
    assert record is not None
    assert record.status == "cancelled"  # the worker left it as the cancel did
    assert record.output == []


def test_a_redelivered_step_changes_nothing(client: InProcessClient, tenant: str) -> None:
    from fhirflow_contracts import StartExport
    from fhirflow_export.app import build_worker, parts_for

    _put(client, {"resourceType": "Patient", "id": "p1"}, tenant)
    status = kick_off(client, f"{tenant}/$export")
    first = finished(client, status)
    tenant_id, job_id = tenant.rsplit("/", 1)[1], status.rsplit("/", 1)[1]
    before = parts_for(client.deps.settings).jobs.get(tenant_id, job_id)

    build_worker(client.deps).run(StartExport.of(tenant=tenant_id, job_id=job_id, now_ms=0), should_yield=lambda: False)

    assert parts_for(client.deps.settings).jobs.get(tenant_id, job_id) == before
    assert client.get(status).body == first.body


def test_the_final_failed_attempt_marks_the_job_failed(client: InProcessClient, tenant: str) -> None:
    from fhirflow_contracts import StartExport
    from fhirflow_export.app import build_worker

    status = kick_off(client, f"{tenant}/$export")
    worker = build_worker(client.deps)

    class Broken:
        def __getattr__(self, name: str) -> Any:
            raise RuntimeError("the index is down")

    worker.engine = Broken()  # type: ignore[assignment]
    command = StartExport.of(tenant=tenant.rsplit("/", 1)[1], job_id=status.rsplit("/", 1)[1], now_ms=0)
    with pytest.raises(RuntimeError):
        worker.run(command, should_yield=lambda: False)
    assert client.get(status).status == 202  # a retry may still succeed
    worker.run(command, should_yield=lambda: False, final_attempt=True)

    failed = client.get(status)
    assert failed.status == 500
    assert failed.outcome_codes == ["exception"]
    assert "RuntimeError" in failed.body["issue"][0]["diagnostics"]


def test_lenient_kick_off_reports_what_it_ignored_in_the_error_file(client: InProcessClient, tenant: str) -> None:
    _put(client, {"resourceType": "Patient", "id": "p1"}, tenant)
    manifest = finished(client, kick_off(client, f"{tenant}/$export", _elements="id", _type="Patient"))

    [error] = manifest.body["error"]
    outcomes = client.get(_path(error["url"])).body

    assert error["type"] == "OperationOutcome"
    assert outcomes[0]["issue"][0]["expression"] == ["_elements"]
    strict = client.get(
        f"{tenant}/$export", query={"_elements": "id"}, headers={"prefer": "respond-async, handling=strict"}
    )
    assert strict.status == 400


def test_post_kick_off_takes_a_parameters_resource(client: InProcessClient, tenant: str) -> None:
    _put(client, {"resourceType": "Patient", "id": "p1"}, tenant)
    _put(client, _observation("o1", "p1"), tenant)
    body = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueString": "Observation"}]}

    reply = client.request("POST", f"{tenant}/$export", body=body, headers=ASYNC)
    manifest = finished(client, _path(reply.headers["Content-Location"]))

    assert reply.status == 202
    assert manifest.body["request"] == f"http://fhir.test{tenant}/$export"
    assert ids(contents(client, manifest)) == {"Observation": ["o1"]}
    bad = {"resourceType": "Parameters", "parameter": [{"name": "_type", "valueInteger": 1}]}
    assert client.request("POST", f"{tenant}/$export", body=bad, headers=ASYNC).status == 400


def test_another_principal_cannot_see_poll_download_or_cancel_a_job(tmp_path: Path) -> None:
    issuer = TestIssuer()
    client = smart_client(tmp_path, issuer)
    owner = issuer.token("system/*.rs")
    other = issuer.token("system/*.rs", sub="user-2")
    assert (
        client.request("PUT", "/Patient/p1", token=issuer.token(), body={"resourceType": "Patient", "id": "p1"}).status
        == 201
    )
    status = kick_off(client, "/$export", owner)
    manifest = finished(client, status, owner)
    file_path = _path(manifest.body["output"][0]["url"])

    assert manifest.body["requiresAccessToken"] is True
    assert client.get(status, other).status == 404
    assert client.get(file_path, other).status == 404
    assert client.request("DELETE", status, token=other).status == 404
    assert client.get(file_path, owner).status == 200


def test_a_patient_token_cannot_export_a_group_it_may_not_read(tmp_path: Path) -> None:
    issuer = TestIssuer()
    client = smart_client(tmp_path, issuer)
    admin = issuer.token("system/*.cruds")
    for resource in ({"resourceType": "Patient", "id": "p1"}, {"resourceType": "Patient", "id": "p2"}):
        client.request("PUT", f"/Patient/{resource['id']}", token=admin, body=resource)
    group = {"resourceType": "Group", "id": "g2", "type": "person", "actual": True}
    group["member"] = [{"entity": {"reference": "Patient/p2"}}]
    client.request("PUT", "/Group/g2", token=admin, body=group)

    reply = client.get("/Group/g2/$export", issuer.token("patient/*.rs", patient="p1"), headers=ASYNC)

    assert reply.status == 404


def test_the_capability_statement_lists_the_export_operations(client: InProcessClient) -> None:
    statement = client.get("/metadata").body
    bulk = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
    rest = statement["rest"][0]
    # The export operations only: the resources also list $validate, $meta... (test_operations.py).
    by_type = {r["type"]: [op for op in r.get("operation", []) if op["name"] == "export"] for r in rest["resource"]}

    assert [op for op in rest["operation"] if op["name"] == "export"] == [
        {"name": "export", "definition": f"{bulk}export"}
    ]
    assert by_type["Patient"] == [{"name": "export", "definition": f"{bulk}patient-export"}]
    assert by_type["Group"] == [{"name": "export", "definition": f"{bulk}group-export"}]
    assert not by_type["Observation"]


# -- the SQS worker's Lambda handler -------------------------------------------------------------


def test_the_worker_handler_reports_the_messages_it_could_not_run(
    client: InProcessClient, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhirflow_export import app
    from fhirflow_export.handler import worker_handler

    _put(client, {"resourceType": "Patient", "id": "p1"}, tenant)
    status = kick_off(client, f"{tenant}/$export")
    [queued] = app.local_queue(client.deps.settings).receive(1)  # what SQS would deliver
    event = json.loads((Path(__file__).parents[1] / "events" / "sqs_start_export.json").read_text())
    good, bad = event["Records"]
    good["body"] = queued.body
    monkeypatch.setattr(app, "_worker", app.build_worker(client.deps))

    result = worker_handler(event, _Context(function_name="fhirflow-export-worker", aws_request_id="r1"))

    assert result == {"batchItemFailures": [{"itemIdentifier": bad["messageId"]}]}
    assert client.get(status).status == 200


@dataclass(frozen=True)
class _Context:
    """A Lambda context with the worker's whole timeout ahead of it."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int = 2048
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:111122223333:function:fhirflow-export-worker"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


def test_with_files_on_s3_the_manifest_carries_presigned_urls(
    tmp_path: Path, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from moto import mock_aws

    from fhirflow.adapters.aws.s3_blobs import S3BlobStore
    from fhirflow_export.app import build_app, build_worker, local_queue, parts_for
    from fhirflow_export.kickoff import ExportParts
    from fhirflow_export.local import ExportDrainer

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")  # moto's fake credentials, never real ones
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="exports")
        client = _client(tmp_path)
        local = parts_for(client.deps.settings)
        parts = ExportParts(
            jobs=local.jobs, queue=local.queue, files=S3BlobStore("exports", client=s3), engine=local.engine
        )
        client.apps["export"] = build_app(client.deps, parts)
        _put(client, {"resourceType": "Patient", "id": "p1"}, tenant)
        status = kick_off(client, f"{tenant}/$export")
        ExportDrainer(local_queue(client.deps.settings), build_worker(client.deps, parts)).drain()
        manifest = client.get(status)

        [entry] = manifest.body["output"]
        assert manifest.body["requiresAccessToken"] is False  # the URL is the credential
        assert entry["url"].startswith("https://exports.s3.us-east-1.amazonaws.com/export/")  # SigV4, regional endpoint
        assert "Signature=" in entry["url"]
        assert "Expires" in manifest.headers
        key = entry["url"].split("amazonaws.com/", 1)[1].split("?", 1)[0]
        lines = s3.get_object(Bucket="exports", Key=key)["Body"].read().splitlines()
        assert [json.loads(line)["id"] for line in lines] == ["p1"]
