"""The bundle workflow in the embedded mode (SQLite): ``Prefer: respond-async`` runs the bundle on
the LocalRunner in the background (Route → Prepare → Answered: SQLite commits any transaction in
one SQL transaction), the status URL answers 202 and then the stored answer; and the limits are
in the CapabilityStatement."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from fhirflow.capabilities import LIMITS_EXTENSION
from fhirflow.runtime import Dependencies, build_dependencies
from fhirflow.settings import Settings
from fhirflow_bundle.app import build_app
from fhirflow_bundle.transaction.commit import StoreCommitter
from fhirflow_bundle.transaction.wiring import build_parts
from fhirflow_crud.app import build_app as build_crud
from tests.support.lambda_http import Reply, call


@pytest.fixture
def deps(tmp_path: Path) -> Dependencies:
    return build_dependencies(Settings(data_dir=tmp_path, max_bundle_entries=500))


def patient(name: str) -> dict[str, Any]:
    return {
        "resource": {"resourceType": "Patient", "name": [{"family": name}]},
        "request": {"method": "POST", "url": "Patient"},
    }


def transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def poll(app: Any, location: str) -> Reply:
    path = location.split("fhir.test", 1)[1]
    deadline = time.monotonic() + 30
    while (reply := call(app, "GET", path)).status == 202:
        assert reply.headers["x-progress"] == "in progress"
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.02)
    return reply


def test_sqlite_commits_through_the_store(deps: Dependencies) -> None:
    from fhirflow.workflow.local import LocalWorkflowExecutor

    parts = build_parts(deps, lambda committer, root: build_app(deps))
    assert isinstance(parts.committer, StoreCommitter)
    assert isinstance(parts.executor, LocalWorkflowExecutor)
    assert parts.steps.transactions is None


def test_respond_async_runs_the_transaction_in_the_background(deps: Dependencies) -> None:
    app = build_app(deps)
    accepted = call(
        app, "POST", "/", transaction(*(patient(f"bg-{n}") for n in range(120))), headers={"prefer": "respond-async"}
    )
    assert accepted.status == 202, accepted.body
    assert accepted.json()["resourceType"] == "OperationOutcome"
    location = accepted.headers["content-location"]
    assert location.startswith("http://fhir.test/_async/")
    done = poll(app, location)
    assert done.status == 200
    answer = done.json()
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in answer["entry"]] == ["201"] * 120
    read = call(
        build_crud(deps), "GET", answer["entry"][0]["response"]["location"].split("fhir.test")[1].split("/_history")[0]
    )
    assert read.status == 200
    assert poll(app, location).status == 200  # the answer stays readable


def test_an_async_transaction_with_a_bad_last_entry_answers_400_and_writes_nothing(deps: Dependencies) -> None:
    app = build_app(deps)
    bad = {"resource": {"resourceType": "Patient", "gender": "robot"}, "request": {"method": "POST", "url": "Patient"}}
    accepted = call(app, "POST", "/", transaction(patient("a"), patient("b"), bad), headers={"prefer": "respond-async"})
    assert accepted.status == 202
    done = poll(app, accepted.headers["content-location"])
    assert done.status == 400
    assert "Bundle.entry[2].resource.gender" in done.body.decode()
    history = call(build_crud(deps), "GET", "/_history").json()
    assert not history.get("entry")


def test_an_unknown_job_is_404(deps: Dependencies) -> None:
    app = build_app(deps)
    assert call(app, "GET", "/_async/0123456789abcdef0123456789abcdef").status == 404
    assert call(app, "GET", "/_async/..%2F..%2Fcursor").status == 404


def test_the_capability_statement_reports_the_limits(deps: Dependencies, tmp_path: Path) -> None:
    def limits(settings: Settings) -> dict[str, Any]:
        statement = call(build_crud(build_dependencies(settings)), "GET", "/metadata").json()
        [extension] = [e for e in statement["rest"][0]["extension"] if e["url"] == LIMITS_EXTENSION]
        return {e["url"]: e.get("valueInteger", e.get("valueBoolean")) for e in extension["extension"]}

    embedded = limits(Settings(data_dir=tmp_path, max_bundle_entries=500))
    assert embedded == {"maxBundleEntries": 500, "maxRequestBytes": 16 * 1024 * 1024, "respondAsync": True}
    dynamodb = limits(
        Settings(
            store="dynamodb", data_dir=tmp_path, transaction_batch_items=20, dynamodb_endpoint="http://127.0.0.1:9"
        )
    )
    assert dynamodb["transactionBatchItems"] == 20
    assert dynamodb["transactionDirectMaxItems"] == 100
    assert dynamodb["transactionTimeoutSeconds"] == 300
