"""The parity switch: ``fhirflow serve --store dynamodb --dynamodb-endpoint URL`` runs the same
embedded gateway on DynamoDB Local, and its worker follows the table's stream into index-sync."""

from __future__ import annotations

import time
import uuid

import httpx

from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.events import SqliteEventLog
from fhirflow.adapters.sqlite.index import SqliteSearchIndex
from fhirflow.local.launcher import LocalServer
from tests.support.dynamodb_local import CREDENTIALS

FHIR = {"content-type": "application/fhir+json"}


def test_serve_on_dynamodb_local(dynamodb_local, tmp_path) -> None:
    table = f"serve-{uuid.uuid4().hex[:8]}"
    args = ("--store", "dynamodb", "--dynamodb-endpoint", dynamodb_local.endpoint, "--dynamodb-table", table)
    client = dynamodb_local.client()
    try:
        with (
            LocalServer(data_dir=tmp_path / "data", extra_args=args, env=CREDENTIALS) as server,
            httpx.Client(base_url=server.base_url, headers=FHIR, timeout=30) as http,
        ):
            created = http.post("/Patient", json={"resourceType": "Patient", "active": True})
            assert created.status_code == 201, created.text
            pid = created.json()["id"]
            updated = http.put(
                f"/Patient/{pid}",
                json={"resourceType": "Patient", "id": pid, "active": False},
                headers={"If-Match": 'W/"1"'},
            )
            assert updated.status_code == 200
            stale = http.put(
                f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid}, headers={"If-Match": 'W/"1"'}
            )
            assert stale.status_code == 412
            assert http.get(f"/Patient/{pid}").json()["active"] is False
            assert http.get(f"/Patient/{pid}/_history/1").json()["active"] is True
            history = http.get("/Patient/_history").json()
            assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']
            assert http.delete(f"/Patient/{pid}").status_code == 204
            assert http.get(f"/Patient/{pid}").status_code == 410

            # The items are really in DynamoDB Local.
            head = client.get_item(TableName=table, Key={"pk": {"S": f"default#Patient#{pid}"}, "sk": {"S": "head"}})
            assert head["Item"]["v"]["N"] == "3"

            # The worker reads the stream into the index and the local event log (eventually, as in AWS).
            db = SqliteDatabase(tmp_path / "data" / "fhirflow.sqlite3")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if _indexed(db, pid) == 3 and len(SqliteEventLog(db).read()) == 3:
                    break
                time.sleep(0.2)
            assert _indexed(db, pid) == 3
            assert len(SqliteEventLog(db).read()) == 3
    finally:
        for name in (table, f"{table}-ledger"):
            client.delete_table(TableName=name)


def _indexed(db: SqliteDatabase, pid: str) -> int | None:
    try:
        return SqliteSearchIndex(db).indexed_version("default", "Patient", pid)
    except Exception:  # the server may not have created the table yet
        return None
