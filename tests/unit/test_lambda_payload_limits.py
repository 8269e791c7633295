"""Lambda's payload limits, answered by the service (issue 13, defect 5): a body larger than
``max_body_bytes`` is a 413 OperationOutcome before any work, and an answer larger than
``max_response_bytes`` (measured as the proxy result Lambda returns, JSON escaping included)
is a 413 OperationOutcome instead of API Gateway's bare 502. The crud service on the embedded
store, driven with API Gateway proxy events."""

from __future__ import annotations

from pathlib import Path

import orjson

from fhirflow.runtime import build_dependencies
from fhirflow.settings import Settings
from fhirflow_bundle.app import build_app as build_bundle_app
from fhirflow_crud.app import build_app
from tests.support.lambda_http import call

LIMIT = 64 * 1024


def app(tmp_path: Path, **limits: int) -> object:
    return build_app(build_dependencies(Settings(data_dir=tmp_path, **limits)))


def patient(note_bytes: int) -> dict[str, object]:
    # Quotes in the text: JSON escaping makes the Lambda result larger than the body itself.
    text = ('"' * 10 + "x" * 90) * (note_bytes // 100)
    return {"resourceType": "Patient", "name": [{"family": "Big", "text": text}]}


def test_a_body_over_the_limit_is_refused_with_an_outcome(tmp_path: Path) -> None:
    """Every route, the bundle service's too (it read any size before)."""
    deps = build_dependencies(Settings(data_dir=tmp_path, max_body_bytes=LIMIT))
    crud = build_app(deps)
    entry = {"resource": patient(LIMIT + 1000), "request": {"method": "POST", "url": "Patient"}}
    reply = call(build_bundle_app(deps), "POST", "/", {"resourceType": "Bundle", "type": "batch", "entry": [entry]})
    assert reply.status == 413
    outcome = reply.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "too-costly"
    assert str(LIMIT) in outcome["issue"][0]["diagnostics"]
    assert call(crud, "GET", "/Patient", query="family=Big").json().get("total", 0) == 0  # nothing was stored


def test_an_answer_over_the_limit_is_an_outcome_not_a_gateway_error(tmp_path: Path) -> None:
    crud = app(tmp_path, max_response_bytes=LIMIT)
    # The body alone fits; escaped into the Lambda result it does not.
    created = call(crud, "POST", "/Patient", patient(int(LIMIT * 0.95)), headers={"prefer": "return=minimal"})
    assert created.status == 201
    path = "/" + created.headers["location"].split("/", 3)[3].split("/_history")[0]
    read = call(crud, "GET", path)
    assert read.status == 413
    outcome = read.json()
    assert outcome["issue"][0]["code"] == "too-costly"
    assert "_elements" in outcome["issue"][0]["diagnostics"]
    # Asking for less works.
    small = call(crud, "GET", path, query="_elements=id")
    assert small.status == 200


def test_no_limit_in_the_embedded_mode(tmp_path: Path) -> None:
    crud = app(tmp_path)
    created = call(crud, "POST", "/Patient", patient(LIMIT * 2))
    assert created.status == 201
    assert len(orjson.dumps(created.json())) > LIMIT * 2
