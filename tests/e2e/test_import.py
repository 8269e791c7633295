"""``fhirflow import``: bundles and NDJSON, into the embedded store and into a running server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fhirflow.local.launcher import LocalServer

SYNTHEA = Path(__file__).resolve().parents[2].parent / "shared" / "synthea"


def _fhirflow(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fhirflow.cli", *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)


def test_import_bundles_into_the_embedded_store(tmp_path: Path) -> None:
    files = sorted(SYNTHEA.glob("*.json"))[:2]
    if not files:
        pytest.skip("no Synthea bundles")
    expected = sum(len(json.loads(f.read_text())["entry"]) for f in files)
    data_dir = tmp_path / "data"
    done = _fhirflow("import", *map(str, files), "--data-dir", str(data_dir), "--no-progress")
    assert done.returncode == 0, done.stderr
    assert f"imported {expected} resources from 2 files" in done.stdout
    with LocalServer(data_dir=data_dir) as server:
        history = httpx.get(f"{server.base_url}/_history", params={"_count": 1000}).json()
        assert len(history["entry"]) == min(expected, 1000)


def test_import_ndjson_into_a_running_server_reports_failures(
    client: httpx.Client, server: LocalServer, tmp_path: Path
) -> None:
    lines = [
        {"resourceType": "Patient", "id": "import-ndjson-1", "gender": "female"},
        {"resourceType": "Patient", "id": "import-ndjson-2", "gender": "male"},
        {"resourceType": "Patient", "id": "import-ndjson-3", "gender": "robot"},
    ]
    path = tmp_path / "patients.ndjson"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    done = _fhirflow("import", str(path), "--url", server.base_url, "--batch-size", "2", "--no-progress")
    assert done.returncode == 1, done.stdout  # one resource failed validation
    assert "imported 2 resources" in done.stdout
    assert "1 failed" in done.stdout
    assert "Bundle.entry[0]" in done.stdout  # the failure names the entry and why
    assert "robot" in done.stdout
    assert client.get("/Patient/import-ndjson-1").json()["gender"] == "female"
    assert client.get("/Patient/import-ndjson-3").status_code == 404
