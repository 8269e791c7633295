"""``fhirflow import``: bundles and NDJSON, into the embedded store and into a running server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def test_import_into_a_new_directory_with_workers_twice_stores_each_resource_once(tmp_path: Path) -> None:
    """A first run into an empty directory with several worker processes loses nothing, and a
    second run duplicates nothing: Synthea's POST entries carry their ids (and urn:uuid fullUrls),
    which the import writes with PUT, and its patients share Organizations and Practitioners."""
    files = [
        *sorted(SYNTHEA.glob("*Information*.json")),
        *sorted(f for f in SYNTHEA.glob("*.json") if "Information" not in f.name)[:4],
    ]
    if len(files) < 6:
        pytest.skip("no Synthea bundles")
    distinct: dict[str, set[str]] = {}
    copies: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for file in files:
        for entry in json.loads(file.read_text())["entry"]:
            resource = entry["resource"]
            distinct.setdefault(resource["resourceType"], set()).add(resource["id"])
            copies.setdefault((resource["resourceType"], resource["id"]), []).append(resource)
    repeated = {key: max(found, key=lambda r: len(json.dumps(r))) for key, found in copies.items() if len(found) > 1}
    assert repeated, "Synthea repeats its Organizations and Practitioners in patient bundles"
    data_dir = tmp_path / "new"
    for run in range(2):
        done = _fhirflow("import", *map(str, files), "--data-dir", str(data_dir), "--jobs", "3", "--no-progress")
        assert done.returncode == 0, (run, done.stdout, done.stderr)
        assert "; 0 failed" in done.stdout, (run, done.stdout)
    with LocalServer(data_dir=data_dir) as server:
        for rtype, ids in sorted(distinct.items()):
            reply = httpx.get(f"{server.base_url}/{rtype}", params={"_summary": "count"})
            assert reply.json()["total"] == len(ids), rtype
        some = min(distinct["Patient"])
        assert httpx.get(f"{server.base_url}/Patient/{some}").status_code == 200  # Synthea's own ids
        for (rtype, id_), fullest in sorted(repeated.items())[:5]:
            stored = httpx.get(f"{server.base_url}/{rtype}/{id_}").json()
            # Written once: the copies wrote nothing, and the second run changed nothing, so it wrote no
            # version either (an update that changes nothing keeps its version, FHIRFLOW_SKIP_UNCHANGED_UPDATES).
            assert stored["meta"]["versionId"] == "1", (rtype, id_)
            assert stored.get("extension") == fullest.get("extension"), (rtype, id_)  # the fullest copy
