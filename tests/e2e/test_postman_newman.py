"""The Postman collection (postman/, generated from the route table by tools/gen_postman.py), run
by newman (npm) against the embedded server, as a user runs it with the local environment: every
assertion of every request must pass (issue 15, point 7)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhirflow.local.launcher import LocalServer
from tests.e2e.webhooks import Receiver

ROOT = Path(__file__).resolve().parents[2]
NEWMAN = ROOT / "node_modules" / ".bin" / "newman"
COLLECTION = ROOT / "postman" / "fhirflow.postman_collection.json"
LOCAL_ENV = ROOT / "postman" / "fhirflow-local.postman_environment.json"


@pytest.fixture(scope="module")
def newman_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    # The subscription's endpoint is a receiver on 127.0.0.1 over http, which the server refuses by default.
    env = {"FHIRFLOW_SUBSCRIPTIONS_ALLOW_HTTP": "true", "FHIRFLOW_SUBSCRIPTIONS_ALLOW_PRIVATE": "true"}
    with LocalServer(data_dir=tmp_path_factory.mktemp("newman"), env=env, workers=2) as running:
        yield running


def _newman(server: LocalServer, receiver: Receiver, report: Path) -> subprocess.CompletedProcess[str]:
    if not NEWMAN.exists():
        pytest.skip("newman is not installed (make setup installs it with npm ci)")
    node = shutil.which("node")
    assert node is not None
    command = [
        node,
        str(NEWMAN.resolve()),
        "run",
        str(COLLECTION),
        "--environment",
        str(LOCAL_ENV),
        "--env-var",
        f"baseUrl={server.base_url}",
        "--env-var",
        f"subscriptionEndpoint={receiver.url}",
        "--reporters",
        "cli,json",
        "--reporter-json-export",
        str(report),
        "--timeout-request",
        "60000",
        "--disable-unicode",
        "--color",
        "off",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def test_newman_runs_the_collection_green(newman_server: LocalServer, tmp_path: Path) -> None:
    report = tmp_path / "newman.json"
    with Receiver() as receiver:
        finished = _newman(newman_server, receiver, report)

    assert report.exists(), f"newman wrote no report: {finished.stderr[-3000:]}{finished.stdout[-3000:]}"
    run = json.loads(report.read_text())["run"]
    failures = [f"{f['source']['name']}: {f['error'].get('test', '')} {f['error']['message']}" for f in run["failures"]]
    assert failures == [], finished.stdout[-6000:]
    assert finished.returncode == 0, finished.stdout[-6000:]
    stats = run["stats"]
    assert stats["assertions"]["total"] > 100
    assert stats["assertions"]["failed"] == 0
    # Every request of the collection ran (a setNextRequest loop may add runs, never skip one).
    collection = json.loads(COLLECTION.read_text())
    names = {item["name"] for folder in collection["item"] for item in folder["item"]}
    ran = {execution["item"]["name"] for execution in run["executions"]}
    assert names == ran
