"""Cold start as Lambda sees it: each handler imported *and serving its first request* under Python
3.12, from the code asset and the dependencies layer as they are built, next to ``import boto3``
plus one client created the same way (issue 13, "Proving it offline").

Each sample is a fresh ``python3.12 -E -s -B`` (pyenv's; the row says so when there is none) running
``bench/coldstart_sample.py``: ``sys.path`` is the staged code (``/var/task``: the packages as
:func:`fhirflow_infra.packaging.stage_code` stages the CDK asset, with its ``.pyc``), the layer
(``/opt/python``: ``infra/build_layer.py --x86-64-twin``, the pinned ``infra/layer.lock`` for this
machine's architecture, with its ``.pyc``) and the interpreter's library; nothing is written.

No network is counted: every AWS and OpenSearch endpoint (``AWS_ENDPOINT_URL``,
``FHIRFLOW_DYNAMODB_ENDPOINT``, ``FHIRFLOW_OPENSEARCH_URL``, the queue URLs) is :class:`EmptyAws`, a
loopback stand-in that answers at once with an empty result, the credentials are fake, and every
other connection a sample attempts is refused and counted (a row with one fails). The functions have
no identity provider (``FHIRFLOW_AUTH=off``: no JWKS fetch) and the cursor secret in their environment
(no Secrets Manager read). Most first requests make no call at all (``$validate``; a batch of one
invalid entry; an export kick-off refused for its type; a stream record that is not a change); a
search must read the search-parameter catalog and query the index, the matcher must load the
subscriptions: the rows say how many stand-in calls each made. What is timed is then the code's own
work: settings, adapters and their clients, parsing, validating, authorizing, answering.

The samples run in turns (boto3, handler A, handler B, boto3, ...) so that the machine's noise
falls on all alike, after one discarded warm-up round (the page cache).
"""

from __future__ import annotations

import base64
import glob
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.loadgen import percentile
from bench.report import Row, Target

REPO = Path(__file__).resolve().parent.parent
SAMPLE = Path(__file__).resolve().parent / "coldstart_sample.py"
LAYER = REPO / "infra" / "build" / "layer-x86_64" / "python"
CODE = REPO / "infra" / "build" / "bench-code"
BASELINE = "boto3"
MAX_RATIO = 1.5
NO_FAILURES = "0 batch item failure(s)"
PATIENT = json.loads((REPO / "bench" / "data" / "patient.json").read_text())


class EmptyAws(ThreadingHTTPServer):
    """A loopback stand-in that answers every AWS and OpenSearch call at once with an empty result
    (no item, no hits), for the first requests that cannot be served without one (a search reads
    the search-parameter catalog and queries the index; the matcher loads the subscriptions). Its
    answers take well under a millisecond each; the rows say how many calls a request made."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EmptyAnswers)
        self.calls = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _EmptyAnswers(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmptyAws

    def _answer(self) -> None:
        self.server.calls += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = self.headers.get("X-Amz-Target", "")
        if target.endswith((".Query", ".Scan")):
            body: dict[str, Any] = {"Items": [], "Count": 0, "ScannedCount": 0}
        elif target.endswith(".BatchGetItem"):
            body = {"Responses": {}, "UnprocessedKeys": {}}
        elif "_search" in self.path:
            body = {"took": 0, "timed_out": False, "hits": {"total": {"value": 0, "relation": "eq"}, "hits": []}}
        elif "_count" in self.path:
            body = {"count": 0}
        else:
            body = {}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.0" if target else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_HEAD = _answer  # noqa: N815 - http.server's names

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@dataclass(frozen=True)
class Case:
    """One function: its module and handler, and the first event it serves."""

    name: str
    module: str
    handler: str
    event: dict[str, Any]
    expect: object
    """The status its first request must answer (the event was handled, not refused by a crash)."""
    environment: dict[str, str] = field(default_factory=dict)


def proxy_event(
    method: str,
    path: str,
    resource: str,
    *,
    body: Any = None,
    query: dict[str, str] | None = None,
    prefer: str | None = None,
) -> dict[str, Any]:
    """An API Gateway REST proxy event as the stack's routes produce (tests/events/apigw_rest_get.json's shape)."""
    headers = {"Accept": "application/fhir+json", "Host": "a1b2c3d4e5.execute-api.eu-central-1.amazonaws.com"}
    if body is not None:
        headers["Content-Type"] = "application/fhir+json"
    if prefer is not None:
        headers["Prefer"] = prefer
    pairs = zip([s for s in resource.split("/") if s], [s for s in path.split("/") if s], strict=False)
    params = {name.strip("{}+"): value for name, value in pairs if name.startswith("{")} or None

    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": params,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": f"/prod{path}",
            "accountId": "123456789012",
            "stage": "prod",
            "requestId": "c0ld5ta7-1111-4000-8000-000000000000",
            "identity": {"sourceIp": "203.0.113.7"},
        },
        # Binary media types */*: API Gateway hands every body to the function base64-encoded.
        "body": base64.b64encode(json.dumps(body).encode()).decode() if body is not None else None,
        "isBase64Encoded": body is not None,
    }


def cases() -> list[Case]:
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {"resourceType": "Patient", "gender": "unknown-code"},
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    head_update = {  # a head item's MODIFY: not a committed change (records.py), so nothing to index
        "eventID": "1",
        "eventName": "MODIFY",
        "eventSource": "aws:dynamodb",
        "awsRegion": "eu-central-1",
        "dynamodb": {
            "Keys": {"pk": {"S": "default#Patient#p1"}, "sk": {"S": "head"}},
            "NewImage": {"pk": {"S": "default#Patient#p1"}, "sk": {"S": "head"}},
            "SequenceNumber": "100000000000000000001",
            "SizeBytes": 64,
            "StreamViewType": "NEW_IMAGE",
        },
        "eventSourceARN": "arn:aws:dynamodb:eu-central-1:123456789012:table/fhirflow/stream/2026-12-06T00:00:00.000",
    }
    not_a_change = {
        "messageId": "0b4f6e6c-0000-4000-8000-000000000001",
        "receiptHandle": "bench",
        "body": json.dumps({"detail-type": "SubscriptionHeartbeat", "source": "fhirflow", "detail": {}}),
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:eu-central-1:123456789012:fhirflow-changes",
        "awsRegion": "eu-central-1",
    }
    return [
        Case(
            "crud",
            "fhirflow_crud.handler",
            "lambda_handler",
            proxy_event("POST", "/Patient/$validate", "/{type}/$validate", body=PATIENT),
            200,
        ),
        Case(
            "search",
            "fhirflow_search.handler",
            "lambda_handler",
            proxy_event("GET", "/Patient", "/{type}", query={"name": "chalmers"}),
            200,
        ),
        Case("bundle", "fhirflow_bundle.handler", "lambda_handler", proxy_event("POST", "/", "/", body=batch), 200),
        Case(
            "export",
            "fhirflow_export.handler",
            "lambda_handler",
            proxy_event("GET", "/$export", "/$export", query={"_type": "NotAType"}, prefer="respond-async"),
            400,
        ),
        Case("index-sync", "fhirflow_index_sync.handler", "lambda_handler", {"Records": [head_update]}, NO_FAILURES),
        Case("subscriptions", "fhirflow_subscriptions.aws", "match_handler", {"Records": [not_a_change]}, NO_FAILURES),
    ]


def environment(endpoint: str) -> dict[str, str]:
    """A deployed function's settings, every endpoint the loopback stand-in and the credentials fake."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TZ")}
    return {
        **keep,
        "AWS_REGION": "eu-central-1",
        "AWS_DEFAULT_REGION": "eu-central-1",
        "AWS_ACCESS_KEY_ID": "AKIAFAKEBENCHONLY000",
        "AWS_SECRET_ACCESS_KEY": "fake-bench-only",
        "AWS_SESSION_TOKEN": "fake-bench-only",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_LAMBDA_FUNCTION_NAME": "fhirflow-coldstart",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "fhirflow",
        "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
        "FHIRFLOW_STORE": "dynamodb",
        "FHIRFLOW_DYNAMODB_ENDPOINT": endpoint,
        "FHIRFLOW_SEARCH_INDEX": "opensearch",
        "FHIRFLOW_OPENSEARCH_URL": endpoint,
        "FHIRFLOW_EVENTS": "eventbridge",
        "FHIRFLOW_EVENT_BUS": "fhirflow",
        "FHIRFLOW_AUTH": "off",
        "FHIRFLOW_CURSOR_SECRET": "bench-cursor-secret-not-a-real-one-0000",
        "FHIRFLOW_BLOB_BUCKET": "fhirflow-blobs",
        "FHIRFLOW_EXPORT_BUCKET": "fhirflow-exports",
        "FHIRFLOW_EXPORT_QUEUE_URL": f"{endpoint}/123456789012/fhirflow-export",
        "FHIRFLOW_SUBSCRIPTIONS_TABLE": "fhirflow-subscriptions",
        "FHIRFLOW_SUBSCRIPTIONS_QUEUE_URL": f"{endpoint}/123456789012/fhirflow-notifications.fifo",
    }


def python312() -> str | None:
    """pyenv's newest 3.12 (under ``pyenv root``, ``$PYENV_ROOT`` or ~/.pyenv), else None."""
    roots = [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        asked = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False)
        roots.insert(0, asked.stdout.strip() if asked.returncode == 0 else "")
    for root in filter(None, roots):
        found = sorted(glob.glob(os.path.join(root, "versions", "3.12*", "bin", "python3.12")), reverse=True)
        if found:
            return found[0]
    return None


def stage() -> None:
    """The code as the CDK asset ships it (with its 3.12 bytecode), staged afresh for this run."""
    import sys

    sys.path.insert(0, str(REPO / "infra"))
    from fhirflow_infra.packaging import stage_code

    stage_code(CODE)


@dataclass
class Samples:
    total: list[float] = field(default_factory=list)
    imports: list[float] = field(default_factory=list)
    statuses: set[str] = field(default_factory=set)
    attempts: list[str] = field(default_factory=list)
    calls: int = 0


def sample(python: str, spec: Path, env: dict[str, str]) -> dict[str, Any]:
    completed = subprocess.run(
        [python, "-E", "-s", "-B", str(SAMPLE), str(spec)],
        env=env,
        cwd=CODE,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"cold-start sample {spec.stem} failed: {completed.stderr.strip()[-1500:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _skip(reason: str) -> list[Row]:
    return [Row("coldstart", "skipped", note=reason)]


def run(*, quick: bool) -> list[Row]:
    python = python312()
    if python is None:
        return _skip("no Python 3.12 under pyenv (pyenv install 3.12): Lambda's runtime cannot be imitated")
    if not LAYER.is_dir():
        return _skip(f"no x86_64 twin of the layer at {LAYER.relative_to(REPO)}: build it with `make layer-x86_64`")
    stage()
    rounds = 7 if quick else 15
    stub = EmptyAws()
    env = environment(stub.url)
    all_cases = cases()
    with tempfile.TemporaryDirectory() as scratch:
        specs: dict[str, Path] = {}
        base = {"code": str(CODE), "layer": str(LAYER), "stub_port": stub.server_address[1]}
        specs[BASELINE] = Path(scratch) / "boto3.json"
        specs[BASELINE].write_text(json.dumps({**base, "module": "boto3"}))
        for case in all_cases:
            specs[case.name] = Path(scratch) / f"{case.name}.json"
            specs[case.name].write_text(
                json.dumps({**base, "module": case.module, "handler": case.handler, "event": case.event})
            )
        samples = {name: Samples() for name in specs}
        for round_number in range(rounds + 1):
            for name, spec in specs.items():
                calls = stub.calls
                result = sample(python, spec, env)
                result["calls"] = stub.calls - calls
                if round_number:  # round 0 warms the page cache
                    found = samples[name]
                    found.total.append((result["import"] + result["first"]) * 1000)
                    found.imports.append(result["import"] * 1000)
                    found.statuses.add(str(result["status"]))
                    found.attempts += result["attempts"]
                    found.calls = max(found.calls, result["calls"])
    stub.shutdown()
    version = Path(python).parent.parent.name
    baseline = statistics.median(samples[BASELINE].total)
    rows = [
        Row(
            "coldstart",
            "import boto3 + client (3.12, layer)",
            median_ms=baseline,
            p99_ms=percentile(samples[BASELINE].total, 99),
            samples=rounds,
            note=f"baseline; Python {version}; import {statistics.median(samples[BASELINE].imports):.0f} ms",
        )
    ]
    for case in all_cases:
        found = samples[case.name]
        median = statistics.median(found.total)
        ratio = median / baseline
        wrong = found.statuses - {str(case.expect)}
        problems = []
        if found.attempts:
            problems.append(f"tried the network: {sorted(set(found.attempts))[:2]}")
        if wrong:
            problems.append(f"answered {sorted(found.statuses)}, expected {case.expect}")
        rows.append(
            Row(
                "coldstart",
                f"{case.name}: import + first request",
                median_ms=median,
                p99_ms=percentile(found.total, 99),
                samples=rounds,
                errors=len(problems),
                target=Target(f"≤ {MAX_RATIO:g}x boto3 ({MAX_RATIO * baseline:.0f} ms)", ratio <= MAX_RATIO),
                note="; ".join(
                    [
                        f"{ratio:.2f}x boto3",
                        f"import {statistics.median(found.imports):.0f} ms",
                        f"answered {case.expect}",
                        f"{found.calls} stub call(s)",
                        *problems,
                    ]
                ),
            )
        )
    return rows
