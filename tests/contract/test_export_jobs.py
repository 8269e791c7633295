"""The ExportJobStore contract: the SQLite table (embedded) and the DynamoDB item (DynamoDB Local)
behave alike: create, read back, conditional replace by revision, tenants kept apart."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fhirflow.job_ports import ExportJobStore
from fhirflow_contracts import ExportFile, ExportJob, ExportOwner, instant_of


@pytest.fixture(params=["sqlite", "dynamodb"])
def jobs(request: pytest.FixtureRequest, tmp_path: Any) -> ExportJobStore:
    if request.param == "sqlite":
        from fhirflow.adapters.sqlite.database import SqliteDatabase
        from fhirflow.adapters.sqlite.jobs import SqliteExportJobStore

        return SqliteExportJobStore(SqliteDatabase(tmp_path / "jobs.sqlite3"))
    from fhirflow.adapters.aws.dynamodb_export_jobs import DynamoDbExportJobStore

    tables = request.getfixturevalue("shared_tables")
    return DynamoDbExportJobStore(tables.resources, client=tables.client)


def job(tenant: str = "acme", **changes: Any) -> ExportJob:
    job_id = uuid.uuid4().hex
    base = ExportJob(
        metadata=ExportJob.job_metadata(job_id, 1_700_000_000_000),
        id=job_id,
        tenant=tenant,
        owner=ExportOwner(issuer="https://idp.test", subject="user-1"),
        status="accepted",
        level="system",
        request="https://fhir.test/$export",
        base_url="https://fhir.test",
        transaction_time=instant_of(1_700_000_000_000),
        types=["Patient", "Observation"],
        updated_at=instant_of(1_700_000_000_000),
    )
    return base.model_copy(update=changes)


def test_a_created_job_reads_back_equal(jobs: ExportJobStore) -> None:
    created = job()
    jobs.create(created)
    assert jobs.get(created.tenant, created.id) == created
    assert jobs.get(created.tenant, uuid.uuid4().hex) is None


def test_replace_bumps_the_revision_and_refuses_a_stale_writer(jobs: ExportJobStore) -> None:
    created = job()
    jobs.create(created)

    running = jobs.replace(created.model_copy(update={"status": "in-progress"}))
    stale = jobs.replace(created.model_copy(update={"status": "cancelled"}))
    assert running is not None
    done = jobs.replace(
        running.model_copy(update={"status": "completed", "output": [ExportFile(type="Patient", file="p", count=1)]})
    )

    assert running.revision == 1
    assert stale is None
    assert done is not None
    assert done.revision == 2
    assert jobs.get(created.tenant, created.id) == done


def test_tenants_are_kept_apart(jobs: ExportJobStore) -> None:
    mine = job(tenant="tenant#a")
    jobs.create(mine)
    assert jobs.get("tenant", mine.id) is None
    assert jobs.get("tenant#b", mine.id) is None
    assert jobs.get("tenant#a", mine.id) == mine
