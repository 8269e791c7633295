"""Rebuilding the OpenSearch index from DynamoDB (fhirflow/index_rebuild.py): the search
conformance fixture as head items (with history rows, deleted and pending heads beside them) on
DynamoDB Local, the index on the fake OpenSearch. Indexed as index-sync would, emptied, rebuilt:
the same documents, and the conformance table gives the same answers. Interrupted and resumed:
the same final index, nothing twice."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhirflow.adapters.aws import items
from fhirflow.adapters.aws.dynamodb_heads import DynamoDbHeadScanner
from fhirflow.adapters.memory.adapters import InMemoryBlobStore
from fhirflow.adapters.opensearch.engine import OpenSearchSearchEngine
from fhirflow.adapters.opensearch.search import OpenSearchSearchIndex
from fhirflow.adapters.sqlite.database import SqliteDatabase
from fhirflow.adapters.sqlite.store import SqliteResourceStore
from fhirflow.cursor import CursorSigner
from fhirflow.http import Application
from fhirflow.index_rebuild import Checkpoint, FileCheckpoints, IndexRebuild, RebuildError, rebuild_command
from fhirflow.ports import ResourceVersion
from fhirflow.runtime import Dependencies
from fhirflow.settings import Settings
from fhirflow_search.app import build_app
from fhirflow_search.settings import SearchSettings
from fhirflow_search.usecase import SearchService
from tests.search import fixtures
from tests.search.cases import CASES, OPENSEARCH_UNSUPPORTED
from tests.search.test_conformance import check_case
from tests.support.opensearch_fake import FakeOpenSearch

NOW_MS = 1_718_000_000_000  # the conformance table's fixed now (tests/search/conftest.py)
LARGE = 100_000
FIELDS = ("tenant", "type", "id", "version", "last_updated", "deleted", "method")


class FixedClock:
    @staticmethod
    def now_ms() -> int:
        return NOW_MS


def _resources() -> list[tuple[str, dict[str, Any], int]]:
    """(tenant, resource, lastUpdated) of the fixture, the first copy of each resource only (the
    copy the index keeps: a second write at the same version is refused)."""
    if not fixtures.EXAMPLES.exists() or not fixtures.SYNTHEA.exists():
        pytest.skip(f"the HL7 examples and Synthea bundles are not under {fixtures.SHARED}")
    seen: set[tuple[str, str, str]] = set()
    out = []
    for tenant, batch in fixtures.batches():
        for resource, ms in batch:
            key = (tenant, resource["resourceType"], resource["id"])
            if key not in seen:
                seen.add(key)
                out.append((tenant, resource, ms))
    return out


def _write_items(client: Any, table: str, all_items: list[dict[str, Any]]) -> None:
    for start in range(0, len(all_items), 25):
        requests = [{"PutRequest": {"Item": item}} for item in all_items[start : start + 25]]
        while requests:
            reply = client.batch_write_item(RequestItems={table: requests})
            requests = reply.get("UnprocessedItems", {}).get(table, [])


@pytest.fixture(scope="module")
def loaded(dynamodb_local: Any) -> dict[str, Any]:
    """The fixture in a table of its own: each resource's head (version 2) and its two version
    items (history), plus resources that must not be indexed — deleted ones and one a transaction
    created that has not committed (a pending head)."""
    from tests.support.aws import create_tables

    tables = create_tables(dynamodb_local)
    resources = _resources()
    table_items: list[dict[str, Any]] = []
    blobs = InMemoryBlobStore()
    for tenant, resource, ms in resources:
        body = orjson.dumps(resource)
        blob = None
        if len(body) > LARGE:  # as the store does: the body in the blob bucket, its key in the items
            blob = f"bodies/{tenant}/{resource['resourceType']}/{resource['id']}"
            blobs.put(blob, body)
        for version in (1, 2):
            stored = ResourceVersion(tenant, resource["resourceType"], resource["id"], version, ms, False, "PUT", body)
            kept = stored if blob is None else ResourceVersion(*[getattr(stored, f) for f in FIELDS], body=None)
            table_items.append(items.version_item(kept, blob, request_id="", shards=4))
        table_items.append(items.head_item(kept, blob))
    assert blobs.blobs, "the fixture has large bodies: the rebuild reads them from the blob store"
    for n in range(5):
        gone = ResourceVersion("default", "Patient", f"deleted-{n}", 2, NOW_MS, True, "DELETE", None)
        table_items.append(items.head_item(gone, None))
    pending_body = orjson.dumps({"resourceType": "Patient", "id": "pending"})
    pending = items.head_item(
        ResourceVersion("default", "Patient", "pending", 1, NOW_MS, False, "POST", pending_body), None
    )
    pending[items.PENDING] = {"BOOL": True}
    table_items.append(pending)
    _write_items(tables.client, tables.resources, table_items)

    reference = FakeOpenSearch()  # the index as index-sync builds it, write by write
    index = OpenSearchSearchIndex(client=reference, create_missing=True)
    index.ensure_index()
    assert fixtures.load_opensearch(index) == len(resources)
    return {"tables": tables, "reference": reference, "count": len(resources), "blobs": blobs}


def _same_documents(rebuilt: FakeOpenSearch, reference: FakeOpenSearch) -> None:
    """The same documents as index-sync's, but at the heads' version (2; the reference wrote 1)."""
    assert rebuilt.docs.keys() == reference.docs.keys()
    for doc_id, document in rebuilt.docs.items():
        expected = reference.docs[doc_id]
        diff = {k for k in document.keys() | expected.keys() if document.get(k) != expected.get(k)}
        assert diff <= {"version"}, (doc_id, diff)
        assert document["version"] == 2


def _rebuild(loaded: dict[str, Any], fake: FakeOpenSearch, path: Path, **options: Any) -> IndexRebuild:
    tables = loaded["tables"]
    scanner = DynamoDbHeadScanner(tables.resources, client=tables.client, tenant=options.pop("tenant", None))
    index = OpenSearchSearchIndex(client=fake)
    checkpoints = options.pop("checkpoints", None) or FileCheckpoints(path)
    return IndexRebuild(scanner, index, checkpoints, blobs=loaded["blobs"], **options)


def _app(fake: FakeOpenSearch, tmp_path: Path) -> Application:
    engine = OpenSearchSearchEngine(OpenSearchSearchIndex(client=fake), clock=lambda: NOW_MS)
    deps = Dependencies(
        settings=Settings(data_dir=tmp_path),
        store=SqliteResourceStore(SqliteDatabase(tmp_path / "scratch.sqlite3")),
        cursors=CursorSigner(b"k"),
    )
    deps.clock = FixedClock()
    return build_app(deps, SearchService(engine, SearchSettings()))  # type: ignore[arg-type]


def test_an_emptied_index_rebuilt_from_the_table_answers_the_conformance_table_as_before(
    loaded: dict[str, Any], tmp_path: Path
) -> None:
    fake = FakeOpenSearch()  # a new domain: no index yet (the rebuild creates it with the mapping)

    final = _rebuild(loaded, fake, tmp_path / "rebuild.json", segments=3, page_size=400).run()

    assert final.done
    assert final.total("indexed") == loaded["count"]
    assert final.total("failed") == final.total("unchanged") == 0
    _same_documents(fake, loaded["reference"])  # no deleted, pending or history row among them
    app = _app(fake, tmp_path)
    for case in CASES:
        if case.id not in OPENSEARCH_UNSUPPORTED:
            check_case(app, case)


class KilledAfter(FileCheckpoints):
    """The process dies after ``saves`` checkpoints: the next page is indexed, its checkpoint never written."""

    def __init__(self, path: Path, saves: int) -> None:
        super().__init__(path)
        self.saves = saves

    def save(self, checkpoint: Checkpoint) -> None:
        if self.saves == 0:
            raise KeyboardInterrupt  # as abrupt as it gets short of SIGKILL: nothing after it runs
        self.saves -= 1
        super().save(checkpoint)


def test_a_rebuild_stopped_midway_goes_on_from_its_checkpoint(loaded: dict[str, Any], tmp_path: Path) -> None:
    fake = FakeOpenSearch()
    path = tmp_path / "rebuild.json"
    first = _rebuild(loaded, fake, path, segments=3, page_size=300)
    first.progress = lambda checkpoint: first.stop.set() if checkpoint.total("pages") >= 2 else None

    stopped = first.run()

    assert not stopped.done
    assert 0 < len(fake.docs) < loaded["count"]
    resumed = _rebuild(loaded, fake, path, segments=3, page_size=300).run()
    assert resumed.done
    assert resumed.total("indexed") == loaded["count"]  # every page once
    _same_documents(fake, loaded["reference"])


def test_a_rebuild_killed_between_a_page_and_its_checkpoint_resumes_without_duplicates(
    loaded: dict[str, Any], tmp_path: Path
) -> None:
    fake = FakeOpenSearch()
    path = tmp_path / "rebuild.json"
    with pytest.raises(KeyboardInterrupt):
        _rebuild(loaded, fake, path, segments=2, page_size=300, checkpoints=KilledAfter(path, 3)).run()
    indexed_before = len(fake.docs)
    assert 0 < indexed_before < loaded["count"]

    resumed = _rebuild(loaded, fake, path, segments=2, page_size=300).run()

    assert resumed.done
    assert resumed.total("unchanged") > 0  # the page indexed before the kill, indexed again: a no-op
    assert resumed.total("indexed") + resumed.total("unchanged") == loaded["count"]
    assert len(fake.docs) == loaded["count"]
    _same_documents(fake, loaded["reference"])


def test_an_unreachable_index_stops_the_rebuild_and_a_resume_finishes_it(
    loaded: dict[str, Any], tmp_path: Path
) -> None:
    fake = FakeOpenSearch()
    path = tmp_path / "rebuild.json"
    rebuild = _rebuild(loaded, fake, path, segments=1, page_size=300)
    rebuild.progress = lambda checkpoint: setattr(fake, "down", checkpoint.total("pages") >= 2)

    with pytest.raises(Exception, match=r"unreachable|busy|refused"):
        rebuild.run()
    fake.down = False
    assert not FileCheckpoints(path).load().done  # type: ignore[union-attr]

    resumed = _rebuild(loaded, fake, path, segments=1, page_size=300).run()
    assert resumed.done
    _same_documents(fake, loaded["reference"])


def test_the_command_rebuilds_one_tenant_with_a_progress_bar_and_refuses_another_rebuild_s_checkpoint(
    loaded: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tables = loaded["tables"]
    fake = FakeOpenSearch()
    args = argparse.Namespace(
        store="dynamodb",
        table=tables.resources,
        dynamodb_endpoint=tables.endpoint,
        opensearch_url="https://search.invalid",
        index=None,
        blob_bucket=None,
        tenant=fixtures.OTHER_TENANT,
        segments=2,
        page_size=200,
        checkpoint=str(tmp_path / "other.json"),
        no_progress=False,
    )

    assert rebuild_command(args, client=fake) == 0

    expected = FakeOpenSearch()
    expected.docs = {k: v for k, v in loaded["reference"].docs.items() if v["tenant"] == fixtures.OTHER_TENANT}
    assert expected.docs
    _same_documents(fake, expected)
    assert "done:" in capsys.readouterr().out
    with pytest.raises(RebuildError, match="another rebuild"):
        rebuild_command(argparse.Namespace(**{**vars(args), "tenant": None}), client=fake)


_KILLABLE = """
import argparse, os, sys
from fhirflow.index_rebuild import rebuild_command
from tests.support.stack import opensearch
proxy = opensearch.connect(os.environ[opensearch.ADDRESS_ENV], os.environ[opensearch.AUTHKEY_ENV])
client = opensearch.RecordingClient(proxy, lambda method, path: None)
args = argparse.Namespace(**{k: (None if v == "" else v) for k, v in (a.split("=", 1) for a in sys.argv[1:])})
args.segments, args.page_size, args.no_progress = int(args.segments), int(args.page_size), True
sys.exit(rebuild_command(args, client=client))
"""


def test_the_command_killed_with_sigkill_resumes_from_its_checkpoint(loaded: dict[str, Any], tmp_path: Path) -> None:
    """``fhirflow rebuild-index`` in a process of its own, killed (SIGKILL: nothing runs after it)
    once its checkpoint shows progress, then run again: the same index as an uninterrupted rebuild."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.support.stack import opensearch

    tables = loaded["tables"]
    env, fake = opensearch.serve()
    checkpoint = tmp_path / "killed.json"
    options = {
        "store": "dynamodb",
        "table": tables.resources,
        "dynamodb_endpoint": tables.endpoint,
        "opensearch_url": "https://search.invalid",
        "index": "",
        "blob_bucket": "",
        "tenant": fixtures.OTHER_TENANT,
        "segments": "2",
        "page_size": "10",
        "checkpoint": str(checkpoint),
    }
    argv = [sys.executable, "-c", _KILLABLE, *(f"{k}={v}" for k, v in options.items())]
    process_env = {**os.environ, **env, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}
    process = subprocess.Popen(argv, env=process_env, cwd=Path(__file__).resolve().parents[2])
    try:
        for _ in range(2000):  # a guard against hanging, not a timing assertion
            saved = FileCheckpoints(checkpoint).load() if checkpoint.exists() else None
            if (saved is not None and saved.total("pages") >= 3) or process.poll() is not None:
                break
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    killed = FileCheckpoints(checkpoint).load()
    assert killed is not None
    assert not killed.done, "the rebuild finished before it could be killed"

    args = argparse.Namespace(**{**options, "index": None, "blob_bucket": None, "segments": 2, "page_size": 10})
    args.no_progress = True
    assert rebuild_command(args, client=fake) == 0

    expected = FakeOpenSearch()
    expected.docs = {k: v for k, v in loaded["reference"].docs.items() if v["tenant"] == fixtures.OTHER_TENANT}
    _same_documents(fake, expected)
    final = FileCheckpoints(checkpoint).load()
    assert final is not None
    assert final.done
    assert final.total("indexed") + final.total("unchanged") == len(expected.docs)
