"""The Lambdas' logs, metrics and traces (fhirflow.observability), as a function's stdout shows them.

Each test runs a real handler in a fresh interpreter that looks like a Lambda execution
environment (``AWS_LAMBDA_FUNCTION_NAME`` and ``_X_AMZN_TRACE_ID`` set), over the embedded
adapters in a temporary directory, and reads the JSON lines the invocation printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TRACE_ID = "1-67a1b2c3-0123456789abcdef01234567"
REQUEST_ID = "c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
SECRET_NAME = "Zebediah-Quuxworth"
TOKEN = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ"

_INVOKE = """
import json, sys
from pathlib import Path
from fhirflow.local.gateway import LambdaContext, build_event
from fhirflow.runtime import build_dependencies
from fhirflow.settings import Settings
import {module} as handler
from {app_module} import build_app

handler.app._app = build_app(build_dependencies(Settings(data_dir=Path(sys.argv[1]), audit="log")))
for number, (method, path, route, params, body) in enumerate(json.loads(sys.argv[2])):
    scope = {{"method": method, "path": path, "query_string": b"", "scheme": "https", "client": ("10.1.2.3", 1),
              "headers": [(b"host", b"fhir.test"), (b"content-type", b"application/fhir+json"),
                          (b"authorization", b"Bearer {token}")]}}
    event = build_event(scope, body.encode(), resource=route, path_params=params)
    event["requestContext"]["requestId"] = "{request_id}" if number == 0 else "second-request"
    result = handler.lambda_handler(event, LambdaContext("fhirflow-crud", f"invocation-{{number}}"))
    print(json.dumps({{"test-result": result["statusCode"]}}), flush=True)
"""


def invoke(
    tmp_path: Path,
    requests: list[tuple[str, str, str, dict[str, str], str]],
    *,
    module: str = "fhirflow_crud.handler",
    app_module: str = "fhirflow_crud.app",
    env: dict[str, str] | None = None,
    expect: list[int] | None = None,
) -> list[dict[str, Any]]:
    """Run the handler on ``requests`` in a Lambda-like process; every JSON line of its stdout."""
    script = _INVOKE.format(module=module, app_module=app_module, token=TOKEN, request_id=REQUEST_ID)
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_", "FHIRFLOW_"))},
        "AWS_LAMBDA_FUNCTION_NAME": "fhirflow-crud",
        "_X_AMZN_TRACE_ID": f"Root={TRACE_ID};Parent=53995c3f42cd8ad8;Sampled=1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        **(env or {}),
    }
    completed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), json.dumps(requests)],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    assert [line["test-result"] for line in lines if "test-result" in line] == (expect or [201] * len(requests))
    return [line for line in lines if "test-result" not in line]


def patient_create() -> tuple[str, str, str, dict[str, str], str]:
    body = {"resourceType": "Patient", "name": [{"family": SECRET_NAME, "given": ["Ann"]}], "birthDate": "1970-01-01"}
    return ("POST", "/Patient", "/{type}", {"type": "Patient"}, json.dumps(body))


def test_application_logs_carry_the_correlation_ids_and_never_the_body_or_the_token(tmp_path: Path) -> None:
    lines = invoke(tmp_path, [patient_create(), patient_create()])
    audit = [line for line in lines if line.get("audit") == "fhir-request"]
    assert len(audit) == 2, lines
    first, second = audit
    # Powertools' keys on an application logger's line (fhirflow.audit): which request, which trace.
    assert first["correlation_id"] == REQUEST_ID
    assert second["correlation_id"] == "second-request"
    assert first["xray_trace_id"] == TRACE_ID
    assert first["service"] == "crud"
    assert first["cold_start"] is True
    assert second["cold_start"] is False
    assert first["function_request_id"] == "invocation-0"
    assert first["what"]["interaction"] == "create"
    assert first["what"]["type"] == "Patient"
    everything = json.dumps(lines)
    assert SECRET_NAME not in everything
    assert "1970-01-01" not in everything
    assert TOKEN not in everything


def test_the_function_service_name_comes_from_its_environment(tmp_path: Path) -> None:
    lines = invoke(tmp_path, [patient_create()], env={"POWERTOOLS_SERVICE_NAME": "crud-blue"})
    assert {line["service"] for line in lines if "service" in line} == {"crud-blue"}


def emf_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if "_aws" in line]


def test_each_invocation_flushes_request_metrics_as_emf(tmp_path: Path) -> None:
    lines = invoke(
        tmp_path, [patient_create(), patient_create()], env={"POWERTOOLS_METRICS_NAMESPACE": "fhirflow-test"}
    )
    emf = emf_lines(lines)
    requests = [line for line in emf if "Requests" in line]
    assert len(requests) == 2, emf  # flushed per invocation, not batched across them
    first = requests[0]
    (directive,) = first["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "fhirflow-test"
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {"Requests": "Count", "Latency": "Milliseconds"}
    assert sorted(map(sorted, directive["Dimensions"])) == [
        ["interaction", "service", "status_class"],
        ["resource_type", "service"],
    ]
    assert (first["service"], first["interaction"], first["status_class"]) == ("crud", "create", "2xx")
    assert first["resource_type"] == "Patient"
    assert first["Requests"] == [1.0]
    assert 0 < first["Latency"][0] < 60_000
    assert first["request_id"] == REQUEST_ID
    assert requests[1]["request_id"] == "second-request"
    cold = [line for line in emf if "ColdStart" in line]
    assert len(cold) == 1  # the first invocation only
    assert cold[0]["service"] == "crud"
    assert SECRET_NAME not in json.dumps(emf)


def test_a_path_that_names_no_resource_type_does_not_become_a_dimension_value(tmp_path: Path) -> None:
    made_up = ("POST", "/Zebediah", "/{type}", {"type": "Zebediah"}, "{}")
    lines = invoke(tmp_path, [made_up], expect=[404])
    (request,) = [line for line in emf_lines(lines) if "Requests" in line]
    assert request["resource_type"] == "other"
    assert request["status_class"] == "4xx"
    assert "Zebediah" not in json.dumps(emf_lines(lines))


def test_outside_lambda_the_handler_prints_no_metrics(tmp_path: Path) -> None:
    lines = invoke(tmp_path, [patient_create()], env={"AWS_LAMBDA_FUNCTION_NAME": ""})
    assert emf_lines(lines) == []
    assert not [line for line in lines if "correlation_id" in line]  # the embedded mode's own logging


_TRACE = """
import json, sys
from pathlib import Path
from types import SimpleNamespace
from aws_xray_sdk.core import xray_recorder

sent = []
class Capture:  # the X-Ray daemon's place: what the SDK would send over UDP
    def send_entity(self, entity):
        sent.append(entity)
    def set_daemon_address(self, address):
        pass
xray_recorder.configure(emitter=Capture())

from fhirflow.local.gateway import LambdaContext, build_event
from fhirflow.runtime import build_dependencies
from fhirflow.settings import Settings
import fhirflow_crud.handler as handler
from fhirflow_crud.app import build_app
from fhirflow.adapters.opensearch.client import traced

handler.app._app = build_app(build_dependencies(Settings(data_dir=Path(sys.argv[1]), audit="off")))

def tenant_table_read(event, context):  # a handler that calls DynamoDB (stubbed: no network)
    import boto3
    from botocore.stub import Stubber
    client = boto3.client("dynamodb", region_name="eu-west-1", aws_access_key_id="k", aws_secret_access_key="s")
    with Stubber(client) as stub:
        stub.add_response("get_item", {}, {"TableName": "fhirflow-resources", "Key": {"pk": {"S": "x"}}})
        client.get_item(TableName="fhirflow-resources", Key={"pk": {"S": "x"}})
    search = SimpleNamespace(transport=SimpleNamespace(perform_request=lambda method, url, *a, **k: {}))
    traced(search)
    search.transport.perform_request("POST", "/fhirflow/_search", body={"query": {}})
    return {"statusCode": 200, "body": ""}

from fhirflow.observability import api_handler
scope = {"method": "GET", "path": "/metadata", "query_string": b"", "scheme": "https", "client": ("10.1.2.3", 1),
         "headers": [(b"host", b"fhir.test")]}
event = build_event(scope, b"", resource="/metadata", path_params={})
handler.lambda_handler(event, LambdaContext("fhirflow-crud", "invocation-0"))
api_handler(tenant_table_read)(event, LambdaContext("fhirflow-crud", "invocation-1"))

def described(entity):
    return {"name": entity.name, "namespace": getattr(entity, "namespace", None),
            "annotations": entity.annotations, "aws": getattr(entity, "aws", {}),
            "children": [described(c) for c in entity.subsegments]}
print(json.dumps({"sent": [described(e) for e in sent]}, default=str))
"""


def traced_invocations(tmp_path: Path, **env: str) -> list[dict[str, Any]]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_", "FHIRFLOW_"))},
        "AWS_LAMBDA_FUNCTION_NAME": "fhirflow-crud",
        "LAMBDA_TASK_ROOT": str(REPO),  # the X-Ray SDK's sign that it runs in Lambda
        "_X_AMZN_TRACE_ID": f"Root={TRACE_ID};Parent=53995c3f42cd8ad8;Sampled=1",
        **env,
    }
    completed = subprocess.run(
        [sys.executable, "-c", _TRACE, str(tmp_path)],
        env=environment,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    [report] = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith('{"sent"')]
    return list(report["sent"])


def _flatten(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for entity in entities:
        found.append(entity)
        found += _flatten(entity["children"])
    return found


def test_with_tracing_on_handlers_aws_calls_and_opensearch_requests_are_subsegments(tmp_path: Path) -> None:
    entities = _flatten(traced_invocations(tmp_path))
    names = [e["name"] for e in entities]
    handlers = [e for e in entities if e["name"] == "## lambda_handler"]
    assert handlers, names
    assert handlers[0]["annotations"]["ColdStart"] is True
    assert handlers[0]["annotations"]["Service"] == "crud"
    [dynamodb] = [e for e in entities if e["name"] == "dynamodb"]
    assert dynamodb["namespace"] == "aws"
    assert dynamodb["aws"]["operation"] == "GetItem"
    assert dynamodb["aws"]["table_name"] == "fhirflow-resources"
    [search] = [e for e in entities if e["name"] == "OpenSearch"]
    assert search["annotations"] == {"method": "POST", "api": "_search"}
    assert "query" not in json.dumps(search)  # no body in the trace


def test_the_xray_sdk_loads_on_the_first_traced_invocation_never_with_the_handler() -> None:
    script = (
        "import sys; import fhirflow_crud.handler, fhirflow.tracing as t; "
        "print('xray' if 'aws_xray_sdk' in sys.modules else 'none'); "
        "print('tracer' if t.tracer() is not None else 'off', 'xray' if 'aws_xray_sdk' in sys.modules else 'none')"
    )
    cases = (
        ({"AWS_LAMBDA_FUNCTION_NAME": "f", "POWERTOOLS_TRACE_DISABLED": "true"}, ["none", "off none"]),
        ({"AWS_LAMBDA_FUNCTION_NAME": "f", "LAMBDA_TASK_ROOT": str(REPO)}, ["none", "tracer xray"]),
        ({"AWS_LAMBDA_FUNCTION_NAME": ""}, ["none", "off none"]),  # the embedded mode
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "AWS_"))}
    for env, expected in cases:
        completed = subprocess.run(
            [sys.executable, "-c", script], env={**base, **env}, cwd=REPO, capture_output=True, text=True, check=True
        )
        assert completed.stdout.split("\n")[:2] == expected, env
