"""The synthesized stack, executed (issue 13, "Proving it offline").

Every Lambda function of the template runs as Lambda would run it — its own process, the
environment the template gives it, its handler — on the template's resources stood up on
DynamoDB Local, moto's server and a shared OpenSearch stand-in. A session of ordinary traffic
goes through them: API Gateway proxy events for the routes the template's REST API maps to each
function (authenticated by SMART tokens of the template's issuer), the table's stream records
into index-sync, the export queue's messages into the export worker, the transaction state
machines' tasks (synchronous and ``respond-async``), the sweeper's schedule. Then every AWS and
OpenSearch call each function made must be allowed by the IAM policy the template gives its role
(and by the domain's access policy), and no request may have failed with a 5xx or a function
error.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.infra.conftest import Synthesized
from tests.support.dynamodb_local import DynamoDbLocal
from tests.support.stack import opensearch
from tests.support.stack.cloud import REGION, Cloud
from tests.support.stack.provision import CREDENTIALS, ExecutedStack, moto_server, stand_up
from tests.support.stack.stepfunctions import executing
from tests.unit.test_authz_kit import TestIssuer

pytestmark = pytest.mark.slow


def _serve_jwks(document: dict[str, Any]) -> tuple[str, ThreadingHTTPServer]:
    body = json.dumps(document).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/jwks", server


def api_routes(cloud: Cloud) -> dict[tuple[str, str], str]:
    """(method, path pattern) → the function the REST API's integration invokes."""
    paths: dict[str, str] = {}
    resources = cloud.of_type("AWS::ApiGateway::Resource")

    def path_of(resource_id: Any) -> str:
        if not isinstance(resource_id, dict) or "Ref" not in resource_id:
            return ""  # the API's root resource
        logical_id = resource_id["Ref"]
        if logical_id not in paths:
            props = resources[logical_id]["Properties"]
            paths[logical_id] = f"{path_of(props['ParentId'])}/{props['PathPart']}"
        return paths[logical_id]

    routes: dict[tuple[str, str], str] = {}
    for method in cloud.of_type("AWS::ApiGateway::Method").values():
        props = method["Properties"]
        uri = json.dumps(props.get("Integration", {}).get("Uri", ""))
        targets = [f for f in cloud.of_type("AWS::Lambda::Function") if f'"{f}"' in uri]
        if targets:
            routes[(props["HttpMethod"], path_of(props["ResourceId"]) or "/")] = targets[0]
    return routes


class Api:
    """Sends API Gateway proxy events to the function the template routes them to."""

    def __init__(self, stack: ExecutedStack, token: str) -> None:
        self.stack = stack
        self.token = token
        self.routes = api_routes(stack.cloud)
        self.answers: list[tuple[str, str, int]] = []
        self.opensearch: Any = None
        """The OpenSearch stand-in itself (what the functions' requests did to it)."""

    def _route(self, method: str, path: str) -> tuple[str, str, dict[str, str]]:
        segments = [s for s in path.split("/") if s]
        best: tuple[int, str, str, dict[str, str]] | None = None
        for (route_method, pattern), function in self.routes.items():
            parts = [s for s in pattern.split("/") if s]
            if route_method != method or len(parts) != len(segments):
                continue
            params = {p[1:-1].rstrip("+"): s for p, s in zip(parts, segments, strict=True) if p.startswith("{")}
            if all(p.startswith("{") or p == s for p, s in zip(parts, segments, strict=True)):
                literal = sum(1 for p in parts if not p.startswith("{"))
                if best is None or literal > best[0]:
                    best = (literal, function, pattern, params)
        assert best is not None, f"the template's API has no route for {method} {path}"
        return best[1], best[2], best[3]

    def call(
        self, method: str, path: str, *, query: dict[str, str] | None = None, body: Any = None, **headers: str
    ) -> tuple[int, Any, dict[str, str]]:
        from fhirflow.local.gateway import build_event

        function, pattern, params = self._route(method, path)
        all_headers = {"authorization": f"Bearer {self.token}", "host": "api.example.org", **headers}
        if body is not None:
            all_headers.setdefault("content-type", "application/fhir+json")
        scope = {
            "method": method,
            "path": path,
            "query_string": urlencode(query or {}).encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in all_headers.items()],
            "scheme": "https",
            "client": ("203.0.113.7", 443),
        }
        raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        event = build_event(scope, raw, resource=pattern, path_params=params)
        answer = self.stack.invoke(function, event)
        assert "errorType" not in answer, f"{method} {path}: {answer.get('errorType')} {answer.get('trace')}"
        result = answer["result"]
        text = result.get("body") or ""
        if result.get("isBase64Encoded"):
            text = base64.b64decode(text).decode("utf-8", "replace")
        parsed: Any = json.loads(text) if text.startswith(("{", "[")) else text
        status = int(result["statusCode"])
        self.answers.append((method, path, status))
        return status, parsed, {k.lower(): str(v) for k, v in (result.get("headers") or {}).items()}


@pytest.fixture(scope="module")
def executed(
    synthesized: Synthesized, dynamodb_local: DynamoDbLocal, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ExecutedStack, Api]]:
    import boto3

    template = json.loads(json.dumps(synthesized.template))
    cloud = Cloud(template)
    issuer = TestIssuer(
        issuer=next(iter(_env_values(cloud, "FHIRFLOW_AUTH_ISSUER"))),
        audience=next(iter(_env_values(cloud, "FHIRFLOW_AUTH_AUDIENCE"))),
    )
    jwks_uri, jwks_server = _serve_jwks(issuer.jwks())
    search_env, search_fake = opensearch.serve()
    logs = tmp_path_factory.mktemp("stack-logs")
    with moto_server() as moto_endpoint:

        def moto(service: str) -> Any:
            return boto3.client(service, endpoint_url=moto_endpoint, region_name=REGION, **_keys())

        def dynamodb(service: str) -> Any:
            return dynamodb_local.client(service)

        stand_up(cloud, moto=moto, dynamodb=dynamodb)
        base_env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(logs),
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local.endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": dynamodb_local.endpoint,
            "POWERTOOLS_TRACE_DISABLED": "true",
            # StartSyncExecution goes to sync-states.<region>...: a prefix a local endpoint cannot take.
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
            # Webhook receivers of the tests listen on 127.0.0.1 (plain http): development settings.
            "FHIRFLOW_SUBSCRIPTIONS_ALLOW_PRIVATE": "true",
            "FHIRFLOW_SUBSCRIPTIONS_ALLOW_HTTP": "true",
            **CREDENTIALS,
            **search_env,
        }
        stack = ExecutedStack(cloud, base_env, logs, overrides={"FHIRFLOW_AUTH_JWKS_URI": jwks_uri})
        token = issuer.token("system/*.cruds system/*.read", fhirUser=None)
        api = Api(stack, token)
        api.opensearch = search_fake
        with executing(stack):
            try:
                yield stack, api
            finally:
                stack.stop()
                jwks_server.shutdown()


def _keys() -> dict[str, str]:
    return {"aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": "testing"}


def _env_values(cloud: Cloud, name: str) -> set[str]:
    values = set()
    for function in cloud.of_type("AWS::Lambda::Function").values():
        value = function["Properties"].get("Environment", {}).get("Variables", {}).get(name)
        if isinstance(value, str):
            values.add(value)
    return values


def index_sync(stack: ExecutedStack, reader: Any) -> None:
    """The table's new stream records into index-sync, as the event source mapping would."""
    records = reader.poll()
    if records:
        answer = stack.invoke(stack.function_id("fhirflow_index_sync.handler.lambda_handler"), {"Records": records})
        assert "errorType" not in answer, answer.get("trace")
        assert answer["result"].get("batchItemFailures") == []


class _CloudFormationResponses:
    """The presigned response URL of custom-resource requests: a server on 127.0.0.1 keeping each
    response body the handler PUTs there."""

    def __init__(self) -> None:
        received = self.received = []

        class Receiver(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cloudformation-response?X-Amz-Signature=x"


def _custom_resource_event(stack: ExecutedStack, request: str, response_url: str, **extra: Any) -> dict[str, Any]:
    """What CloudFormation sends the index resource's handler."""
    [(logical_id, resource)] = stack.cloud.of_type("Custom::FhirflowSearchIndex").items()
    properties = stack.cloud.resolve(resource["Properties"])
    return {
        "RequestType": request,
        "RequestId": str(uuid.uuid4()),
        "ResponseURL": response_url,
        "StackId": f"arn:aws:cloudformation:{REGION}:123456789012:stack/fhirflow/{uuid.uuid4()}",
        "LogicalResourceId": logical_id,
        "ResourceType": resource["Type"],
        "ResourceProperties": properties,
        **extra,
    }


def test_the_search_index_is_created_at_deploy_and_never_deleted(executed: tuple[ExecutedStack, Api]) -> None:
    """The template's custom resource, as CloudFormation drives it: Create on a fresh domain creates
    the index with the search mapping; Create again (a stack re-created over a kept domain) and
    Update keep the index, Update putting the mapping; Delete deletes nothing. Each request is
    answered at its response URL; every request to the domain is within the handler's policy and
    the domain's access policy."""
    from fhirflow.adapters.opensearch.mappings import index_mapping

    stack, api = executed
    [(_, resource)] = stack.cloud.of_type("Custom::FhirflowSearchIndex").items()
    on_event = resource["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
    assert stack.functions()[on_event]["Properties"]["Handler"] == "fhirflow_index_sync.provision.on_event"
    index = stack.environment(on_event).get("FHIRFLOW_OPENSEARCH_INDEX", "fhirflow-resources")  # unset: the default
    assert resource["Properties"]["Index"] == index
    assert index not in api.opensearch.created  # a fresh domain
    cloudformation = _CloudFormationResponses()

    def run(request: str, **extra: Any) -> dict[str, Any]:
        event = _custom_resource_event(stack, request, cloudformation.url, **extra)
        answer = stack.invoke(on_event, event)
        assert "errorType" not in answer, answer.get("trace")
        response = cloudformation.received[-1]
        assert response == answer["result"]
        assert response["Status"] == "SUCCESS", response
        assert response["PhysicalResourceId"] == index
        assert (response["RequestId"], response["StackId"]) == (event["RequestId"], event["StackId"])
        return dict(response["Data"])

    try:
        assert run("Create") == {"Created": "true"}
        assert api.opensearch.created[index]["mappings"] == index_mapping()
        assert run("Create") == {"Created": "false"}
        assert api.opensearch.mapping_puts == []
        old = {**stack.cloud.resolve(resource["Properties"]), "Mapping": "an-older-mapping"}
        assert run("Update", PhysicalResourceId=index, OldResourceProperties=old) == {"Created": "false"}
        assert api.opensearch.mapping_puts == [index]
        before = [c for f, c in stack.calls if f == on_event]
        assert run("Delete", PhysicalResourceId=index) == {}
        assert [c for f, c in stack.calls if f == on_event] == before  # no request at all
        assert index in api.opensearch.created
    finally:
        cloudformation.server.shutdown()

    calls = [c for f, c in stack.calls if f == on_event]
    assert all(c["kind"] == "opensearch" for c in calls), calls  # nothing of AWS but the domain
    requests = {(c["method"], c["path"]) for c in calls}
    assert requests == {("HEAD", f"/{index}"), ("PUT", f"/{index}"), ("PUT", f"/{index}/_mapping")}
    violations = [v for v in stack.violations() if v.function == on_event]
    assert not violations, "\n".join(map(str, violations))


def test_ordinary_traffic_through_every_function_stays_within_its_policy(
    executed: tuple[ExecutedStack, Api], dynamodb_local: DynamoDbLocal
) -> None:
    from fhirflow.adapters.aws.dynamodb_streams import DynamoDbStreamReader

    stack, api = executed
    table = stack.cloud.refs[next(iter(stack.cloud.of_type("AWS::DynamoDB::Table")))]
    tables = [r for k, r in stack.cloud.refs.items() if k in stack.cloud.of_type("AWS::DynamoDB::Table")]
    table = next(t for t in tables if "ledger" not in t.lower())
    reader = DynamoDbStreamReader(
        table, client=dynamodb_local.client("dynamodbstreams"), dynamodb_client=dynamodb_local.client()
    )

    # A fresh stack: searches and conditional writes answer before anything was indexed.
    status, _, _ = api.call("GET", "/Patient", query={"family": "Chalmers"})
    assert status == 200
    status, created, _ = api.call(
        "POST",
        "/Patient",
        body={
            "resourceType": "Patient",
            "name": [{"family": "Chalmers"}],
            "identifier": [{"system": "urn:mrn", "value": "1"}],
        },
    )
    assert status == 201, created
    patient = created["id"]
    assert api.call("GET", f"/Patient/{patient}")[0] == 200
    assert api.call("PUT", f"/Patient/{patient}", body={**created, "gender": "male"})[0] == 200
    patch = [{"op": "replace", "path": "/gender", "value": "female"}]
    assert (
        api.call(
            "PATCH",
            f"/Patient/{patient}",
            body=json.dumps(patch).encode(),
            **{"content-type": "application/json-patch+json"},
        )[0]
        == 200
    )
    for path in (f"/Patient/{patient}/_history", f"/Patient/{patient}/_history/1", "/Patient/_history", "/_history"):
        assert api.call("GET", path)[0] == 200, path
    assert api.call("GET", "/metadata")[0] == 200
    assert api.call("GET", "/.well-known/smart-configuration")[0] == 200
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": f"Patient/{patient}"},
    }
    assert api.call("POST", "/Observation", body=observation)[0] == 201
    index_sync(stack, reader)

    status, bundle, _ = api.call("GET", "/Patient", query={"family": "Chalmers"})
    assert status == 200
    assert [e["resource"]["id"] for e in bundle.get("entry", [])] == [patient]
    form = urlencode({"family": "Chalmers"}).encode()
    assert (
        api.call("POST", "/Patient/_search", body=form, **{"content-type": "application/x-www-form-urlencoded"})[0]
        == 200
    )
    assert api.call("GET", "/", query={"_type": "Patient"})[0] == 200
    assert api.call("GET", f"/Patient/{patient}/Observation")[0] == 200
    # Conditional interactions search the index (crud's role: search grant and the catalog's items).
    status, found, _ = api.call(
        "POST", "/Patient", body={"resourceType": "Patient"}, **{"if-none-exist": "identifier=urn:mrn|1"}
    )
    assert status == 200, found  # the indexed match, not a second Patient
    assert found["id"] == patient
    status, _, _ = api.call(
        "PUT",
        "/Patient",
        query={"identifier": "urn:mrn|2"},
        body={"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "2"}]},
    )
    assert status == 201  # no match: created
    index_sync(stack, reader)
    assert api.call("DELETE", "/Patient", query={"identifier": "urn:mrn|2"})[0] in (200, 204)

    # A small transaction, run by the bundle function itself: a conditional create and a
    # conditional reference, both resolved by search.
    small = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "1"}]},
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|1"},
            },
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": {**observation, "subject": {"reference": "Patient?identifier=urn:mrn|1"}},
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    status, reply, _ = api.call("POST", "/", body=small)
    assert status == 200, reply
    assert reply["entry"][0]["response"]["status"].startswith("200")  # the existing Patient
    assert reply["entry"][1]["response"]["status"].startswith("201")

    # A transaction with a conditional reference: Prepare searches (synchronous, then respond-async).
    entries = [
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {**observation, "subject": {"reference": "Patient?identifier=urn:mrn|1"}},
            "request": {"method": "POST", "url": "Observation"},
        }
        for _ in range(120)  # more writes than one TransactWriteItems takes: the batched commit protocol
    ]
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    status, reply, _ = api.call("POST", "/", body=transaction)
    failed_calls = [c["error"][:300] for _, c in stack.calls if "error" in c]
    assert status == 200, "\n".join([str(reply)[:300], *stack.workflow_failures, *failed_calls])
    status, _, headers = api.call("POST", "/", body=transaction, prefer="respond-async")
    assert status == 202
    job_path = "/" + headers["content-location"].split("/", 3)[3]
    for _ in range(100):
        status, _, _ = api.call("GET", job_path)
        if status != 202:
            break
        time.sleep(0.1)
    assert status == 200
    index_sync(stack, reader)

    # Bulk export: kick-off, the worker on the queue's message, status, a file.
    status, _, headers = api.call(
        "GET", "/$export", query={"_type": "Patient"}, prefer="respond-async", accept="application/fhir+json"
    )
    assert status == 202
    _export_work(stack)
    status, manifest, _ = api.call("GET", "/" + headers["content-location"].split("/", 3)[3])
    assert status == 200, manifest

    assert api.call("DELETE", f"/Patient/{patient}")[0] in (200, 204)
    index_sync(stack, reader)
    sweep = stack.invoke(stack.function_id("fhirflow_bundle.transaction.handlers.sweep"), {})
    assert "errorType" not in sweep, sweep.get("trace")

    server_errors = [a for a in api.answers if a[2] >= 500]
    assert not server_errors
    violations = stack.violations()
    assert not violations, "\n".join(map(str, violations))
    used = {logical_id for logical_id, _ in stack.calls}
    steps = {k for k, f in stack.functions().items() if ".transaction.handlers." in f["Properties"]["Handler"]}
    assert len(used) >= 6 + len(steps) - 1, sorted(used)  # everything but the rollback step made calls


def _export_work(stack: ExecutedStack) -> None:
    import boto3

    worker = stack.function_id("fhirflow_export.handler.worker_handler")
    queue_url = stack.environment(worker)["FHIRFLOW_EXPORT_QUEUE_URL"]
    sqs = boto3.client("sqs", endpoint_url=stack.base_env["AWS_ENDPOINT_URL"], region_name=REGION, **_keys())
    for _ in range(20):
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:{queue_url.rsplit('/', 1)[-1]}",
                "awsRegion": REGION,
            }
            for m in messages
        ]
        answer = stack.invoke(worker, {"Records": records})
        assert "errorType" not in answer, answer.get("trace")
        failed = {f["itemIdentifier"] for f in answer["result"].get("batchItemFailures", [])}
        for message in messages:
            if message["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def _sqs_records(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """The queue's messages as the event source mapping hands them to a function."""
    got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
    return [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m.get("Attributes", {}),
            "messageAttributes": {},
            "eventSource": "aws:sqs",
            "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:{queue_url.rsplit('/', 1)[-1]}",
            "awsRegion": REGION,
        }
        for m in got
    ]


def _run_sqs_function(stack: ExecutedStack, function: str, sqs: Any, queue_url: str) -> int:
    records = _sqs_records(sqs, queue_url)
    if not records:
        return 0
    answer = stack.invoke(function, {"Records": records})
    assert "errorType" not in answer, answer.get("trace")
    assert answer["result"].get("batchItemFailures") == []
    for record in records:
        sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"])
    return len(records)


def test_subscriptions_matcher_deliverer_and_ticker_stay_within_their_policies(
    executed: tuple[ExecutedStack, Api], dynamodb_local: DynamoDbLocal
) -> None:
    """A Subscription written through the API, its activation and a matching change through the
    template's bus rule → changes queue → matcher → FIFO queue → deliverer → a receiver on 127.0.0.1,
    and the ticker's scheduled event: every call within each function's policy."""
    import boto3

    from fhirflow.adapters.aws.dynamodb_streams import DynamoDbStreamReader
    from tests.support.webhook_receiver import Receiver

    stack, api = executed
    cloud = stack.cloud
    tables = [r for k, r in cloud.refs.items() if k in cloud.of_type("AWS::DynamoDB::Table")]
    table = next(t for t in tables if "ledger" not in t.lower() and "subscriptions" not in t.lower())
    reader = DynamoDbStreamReader(
        table, client=dynamodb_local.client("dynamodbstreams"), dynamodb_client=dynamodb_local.client()
    )
    matcher = stack.function_id("fhirflow_subscriptions.aws.match_handler")
    deliverer = stack.function_id("fhirflow_subscriptions.aws.deliver_handler")
    ticker = stack.function_id("fhirflow_subscriptions.aws.tick_handler")
    fifo_url = stack.environment(deliverer)["FHIRFLOW_SUBSCRIPTIONS_QUEUE_URL"]
    sqs = boto3.client("sqs", endpoint_url=stack.base_env["AWS_ENDPOINT_URL"], region_name=REGION, **_keys())
    events = boto3.client("events", endpoint_url=stack.base_env["AWS_ENDPOINT_URL"], region_name=REGION, **_keys())
    # The template's rule from the bus to the matcher's queue (stand_up makes queues and buses, not rules).
    [(rule_id, rule)] = [(k, r) for k, r in cloud.of_type("AWS::Events::Rule").items() if "Subscriptions" in k]
    [target] = rule["Properties"]["Targets"]
    changes_id = target["Arn"]["Fn::GetAtt"][0]
    changes_url = cloud.refs[changes_id]
    changes_arn = sqs.get_queue_attributes(QueueUrl=changes_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus = cloud.resolve(rule["Properties"]["EventBusName"])
    events.put_rule(Name=rule_id, EventBusName=bus, EventPattern=json.dumps(rule["Properties"]["EventPattern"]))
    events.put_targets(Rule=rule_id, EventBusName=bus, Targets=[{"Id": "changes", "Arn": changes_arn}])

    with Receiver() as receiver:
        subscription = {
            "resourceType": "Subscription",
            "status": "requested",
            "reason": "executed stack",
            "criteria": "Observation?code=http://loinc.org|1234-5",
            "channel": {"type": "rest-hook", "endpoint": receiver.url + "/hook"},
        }
        status, created, _ = api.call("POST", "/Subscription", body=subscription)
        assert status == 201, created
        # Activation: its change → matcher → status write. The stream may still hold what earlier
        # tests wrote (a fresh reader starts at the oldest record), so a few rounds.
        for _ in range(40):
            index_sync(stack, reader)
            _run_sqs_function(stack, matcher, sqs, changes_url)
            status, current, _ = api.call("GET", f"/Subscription/{created['id']}")
            if current["status"] == "active":
                break
        assert current["status"] == "active", current
        for _ in range(40):  # the rest of the stream, and the status write's own change
            index_sync(stack, reader)
            if not _run_sqs_function(stack, matcher, sqs, changes_url):
                break
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "1234-5"}]},
        }
        assert api.call("POST", "/Observation", body=observation)[0] == 201
        index_sync(stack, reader)
        assert _run_sqs_function(stack, matcher, sqs, changes_url) >= 1
        assert _run_sqs_function(stack, deliverer, sqs, fifo_url) == 1
        [request] = receiver.wait_for(1)
        assert request.method == "POST"
        assert request.path == "/hook"
        assert request.body == b""  # R4 without a payload
        assert request.headers["webhook-id"]
        status, _, _ = api.call("GET", f"/Subscription/{created['id']}/$status")
        assert status == 200
    tick = stack.invoke(ticker, {"version": "0", "detail-type": "Scheduled Event", "source": "aws.scheduler"})
    assert "errorType" not in tick, tick.get("trace")

    # These functions' calls, and the API functions' that touch subscriptions (the write hook's
    # secrets, $status): the other functions are the first test's.
    mine = {
        matcher,
        deliverer,
        ticker,
        stack.function_id("fhirflow_crud.handler.lambda_handler"),
        stack.function_id("fhirflow_subscriptions.handler.lambda_handler"),
    }
    violations = [v for v in stack.violations() if v.function in mine]
    assert not violations, "\n".join(map(str, violations))
    used = {logical_id for logical_id, _ in stack.calls}
    assert {matcher, deliverer, ticker} <= used


def test_reindex_runs_on_its_queue_through_the_worker_within_its_policy(
    executed: tuple[ExecutedStack, Api], dynamodb_local: DynamoDbLocal
) -> None:
    """A SearchParameter and older data through the API, ``$reindex`` kicked off by the search
    function, the worker on the queue's messages (each chunk queues the next) until none is
    left: the job is complete without a status poll having moved it, the parameter finds the
    older data, and every call of the search function and the worker is within its policy."""
    import boto3

    from fhirflow.adapters.aws.dynamodb_searchparams import DynamoDbSearchParamCatalog
    from fhirflow.adapters.aws.dynamodb_streams import DynamoDbStreamReader
    from fhirflow.model import DEFAULT_TENANT

    stack, api = executed
    cloud = stack.cloud
    tables = [r for k, r in cloud.refs.items() if k in cloud.of_type("AWS::DynamoDB::Table")]
    table = next(t for t in tables if "ledger" not in t.lower() and "subscriptions" not in t.lower())
    reader = DynamoDbStreamReader(
        table, client=dynamodb_local.client("dynamodbstreams"), dynamodb_client=dynamodb_local.client()
    )
    eye = "http://example.org/executed-eye"
    for colour in ("hazel", "hazel", "amber"):
        patient = {"resourceType": "Patient", "extension": [{"url": eye, "valueCode": colour}]}
        assert api.call("POST", "/Patient", body=patient)[0] == 201
    definition = {
        "resourceType": "SearchParameter",
        "url": "http://example.org/SearchParameter/executed-eye",
        "name": "ExecutedEye",
        "status": "active",
        "description": "Eye colour (executed stack)",
        "code": "executed-eye",
        "base": ["Patient"],
        "type": "token",
        "expression": f"Patient.extension.where(url = '{eye}').value",
    }
    assert api.call("POST", "/SearchParameter", body=definition)[0] == 201
    catalog = DynamoDbSearchParamCatalog(table, client=dynamodb_local.client())
    for _ in range(100):  # the stream may hold what earlier tests wrote: until index-sync recorded it
        index_sync(stack, reader)
        if any(p.code == "executed-eye" for p in catalog.custom_params(DEFAULT_TENANT)):
            break
    assert any(p.code == "executed-eye" for p in catalog.custom_params(DEFAULT_TENANT))

    status, _, headers = api.call("POST", "/Patient/$reindex")
    assert status == 202
    job_path = "/" + headers["content-location"].split("/", 3)[3]
    status, _, headers = api.call("GET", job_path)
    assert (status, headers["x-progress"]) == (202, "queued")  # a poll reads; it does not advance

    worker = stack.function_id("fhirflow_search.reindex_handler.lambda_handler")
    queue_url = stack.environment(worker)["FHIRFLOW_REINDEX_QUEUE_URL"]
    sqs = boto3.client("sqs", endpoint_url=stack.base_env["AWS_ENDPOINT_URL"], region_name=REGION, **_keys())
    chunks = 0
    for _ in range(50):
        ran = _run_sqs_function(stack, worker, sqs, queue_url)
        if not ran:
            break
        chunks += ran
    assert chunks >= 1  # (a chunk runs up to 50 batches: these few resources take one)

    status, result, _ = api.call("GET", job_path)
    assert status == 200, result
    final = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in result["parameter"]}
    assert final["status"] == "completed", final
    assert final["searchable"] == "Patient.executed-eye"
    status, bundle, _ = api.call("GET", "/Patient", query={"executed-eye": "hazel"}, prefer="handling=strict")
    assert status == 200, bundle
    assert len([e for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]) == 2

    mine = {worker, stack.function_id("fhirflow_search.handler.lambda_handler")}
    violations = [v for v in stack.violations() if v.function in mine]
    assert not violations, "\n".join(map(str, violations))
    assert worker in {logical_id for logical_id, _ in stack.calls}
