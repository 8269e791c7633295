"""FHIR transactions on DynamoDB Local through the multi-batch commit protocol (DESIGN.md §3).

The bundle service runs as in ``fhirflow serve --store dynamodb``: transactions too large for one
TransactWriteItems are prepared by the service and run by the bundle workflow in-process (the
LocalRunner executing the same definition Step Functions runs in AWS). Checked here: Synthea
patients load as one transaction each with every reference resolved; a bad entry or a failed
condition leaves nothing; two transactions racing for one resource never mix; ``Prefer:
respond-async`` answers 202 and then the response; the stream announces exactly the committed
versions, once each.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhirflow.adapters.aws import items
from fhirflow.adapters.aws.dynamodb_store import DynamoDbResourceStore
from fhirflow.adapters.aws.dynamodb_streams import DynamoDbStreamReader
from fhirflow.adapters.aws.dynamodb_transactions import DONE, DynamoDbTransactions
from fhirflow.adapters.memory import InMemoryEventLedger, InMemoryEventPublisher, InMemorySearchIndex
from fhirflow.errors import ServiceUnavailable
from fhirflow.local.gateway import LambdaContext
from fhirflow.ports import Change, ResourceVersion, WorkflowResult
from fhirflow.runtime import Dependencies, build_dependencies
from fhirflow.settings import Settings
from fhirflow.workflow import LocalRunner
from fhirflow.workflow.local import LocalWorkflowExecutor
from fhirflow_bundle.app import build_app, prepare_app_factory
from fhirflow_bundle.transaction.commit import ProtocolCommitter
from fhirflow_bundle.transaction.definition import transaction_workflow
from fhirflow_bundle.transaction.wiring import LocalSweeper, TransactionParts, build_parts
from fhirflow_crud.app import build_app as build_crud
from fhirflow_index_sync import app as index_sync
from fhirflow_index_sync.handler import lambda_handler
from fhirflow_index_sync.sync import IndexSync
from tests.support.lambda_http import Reply, call

SYNTHEA = Path(__file__).resolve().parents[2].parent / "shared" / "synthea"


def synthea_sample() -> list[Path]:
    """The smallest, the median and the largest patient bundle."""
    by_size = sorted(SYNTHEA.glob("*.json"), key=lambda p: len(json.loads(p.read_text()).get("entry", [])))
    return [by_size[0], by_size[len(by_size) // 2], by_size[-1]] if by_size else []


def patient(name: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": name}]}


def post_entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def bundle(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def creates(prefix: str, count: int) -> list[dict[str, Any]]:
    """More creates than one TransactWriteItems holds (two items each): the protocol's path."""
    return [post_entry(patient(f"{prefix}-{n}")) for n in range(count)]


class Recording:
    """Wraps the executor to learn the transactions' ids, and lets a test pause at a state."""

    def __init__(self, inner: LocalWorkflowExecutor) -> None:
        self.inner = inner
        self.runs: list[tuple[dict[str, Any], WorkflowResult]] = []

    def run(self, payload: dict[str, Any]) -> WorkflowResult:
        result = self.inner.run(payload)
        self.runs.append((payload, result))
        return result

    def start(self, name: str, payload: dict[str, Any]) -> None:
        self.inner.start(name, payload)

    def describe(self, name: str) -> WorkflowResult | None:
        return self.inner.describe(name)


@dataclass
class World:
    deps: Dependencies
    parts: TransactionParts
    tenant: str
    hooks: list[Any] = field(default_factory=list)

    @property
    def store(self) -> DynamoDbResourceStore:
        assert isinstance(self.deps.store, DynamoDbResourceStore)
        return self.deps.store

    @property
    def transactions(self) -> DynamoDbTransactions:
        assert self.parts.steps.transactions is not None
        return self.parts.steps.transactions

    @property
    def executor(self) -> Recording:
        committer = self.parts.committer
        assert isinstance(committer, ProtocolCommitter)
        assert isinstance(committer.executor, Recording)
        return committer.executor

    def bundle_app(self) -> Any:
        return build_app(self.deps, parts=self.parts)

    def post(self, body: dict[str, Any] | bytes, **headers: str) -> Reply:
        return call(self.bundle_app(), "POST", f"/tenant/{self.tenant}/", body, headers=headers)

    def get(self, path: str) -> Reply:
        path, _, query = path.partition("?")
        return call(build_crud(self.deps), "GET", f"/tenant/{self.tenant}{path}", query=query)

    def after_task(self, name: str, output: Any) -> None:
        for hook in self.hooks:
            hook(name, output)


def make_world(settings: Settings, tenant: str) -> World:
    deps = build_dependencies(settings)
    parts = build_parts(deps, prepare_app_factory(deps))
    world = World(deps, parts, tenant)
    workflow = transaction_workflow(max_concurrency=4)
    runner = LocalRunner(workflow, parts.steps.tasks(), max_concurrency=4, after_task=world.after_task)
    executor = LocalWorkflowExecutor(runner)
    committer = parts.committer
    assert isinstance(committer, ProtocolCommitter)
    committer.executor = Recording(executor)
    parts.jobs.executor = executor
    return world


def settings_for(tables: Any, data_dir: Path, **overrides: Any) -> Settings:
    return Settings(
        store="dynamodb",
        data_dir=data_dir,
        dynamodb_table=tables.resources,
        dynamodb_ledger_table=tables.ledger,
        dynamodb_endpoint=tables.endpoint,
        aws_region="us-east-1",
        index_on_write=False,
        **overrides,
    )


@pytest.fixture
def world(shared_tables, tmp_path, tenant) -> World:
    return make_world(settings_for(shared_tables, tmp_path), tenant)


def references(value: Any) -> list[str]:
    return re.findall(r'"reference":\s*"([^"#][^"]*)"', json.dumps(value))


def assert_finished(world: World, tx_id: str) -> None:
    record = world.store.transaction_state(tx_id, cached=False)
    assert record == DONE, f"transaction {tx_id} ended {record}"
    assert tx_id not in world.transactions.due(now_ms=2**60)


# -- Synthea ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("path", synthea_sample(), ids=lambda p: p.name[:24])
def test_synthea_patients_load_as_one_transaction_each(world: World, path: Path) -> None:
    document = json.loads(path.read_text())
    reply = world.post(path.read_bytes(), prefer="return=minimal")
    assert reply.status == 200, reply.body[:500]
    answer = reply.json()
    assert len(answer["entry"]) == len(document["entry"])
    assert all(e["response"]["status"].startswith("201") for e in answer["entry"])
    [(payload, result)] = world.executor.runs  # more than one TransactWriteItems: the protocol ran
    assert result.output["status"] == "committed"
    assert_finished(world, payload["txId"])

    store, tenant = world.store, world.tenant
    resolved: dict[str, bool] = {}
    for entry in answer["entry"]:
        type_, id_ = entry["response"]["location"].split("/_history")[0].rsplit("/", 2)[-2:]
        head = store._get_item(items.key(items.resource_pk(tenant, type_, id_), items.HEAD))
        assert head is not None
        assert items.lock_of(head) is None, f"{type_}/{id_} is still locked"
        current = store.current(tenant, type_, id_)
        assert current is not None
        assert current.body is not None
        text = current.body.decode()
        assert "urn:uuid:" not in text, f"{type_}/{id_} still has a urn:uuid reference"
        for reference in references(json.loads(text)):
            if reference not in resolved:
                target_type, target_id = reference.split("/")[-2:]
                found = store.current(tenant, target_type, target_id)
                resolved[reference] = found is not None and not found.deleted
            assert resolved[reference], f"{type_}/{id_} → {reference} does not resolve"
    assert resolved, "a Synthea patient's resources refer to each other"


def meddler(world: World, path: str, change: dict[str, Any]) -> list[Reply]:
    """Another writer updates ``path`` once, right after the transaction staged its first batch:
    after the transaction read the resource, before it locks it."""
    replies: list[Reply] = []
    once = threading.Lock()

    def hook(name: str, output: Any) -> None:
        with once:
            if name == "StageBatch" and not replies:
                replies.append(call(build_crud(world.deps), "PUT", f"/tenant/{world.tenant}/{path}", change))

    world.hooks.append(hook)
    return replies


# -- all or nothing -------------------------------------------------------------------------------


def test_an_invalid_last_entry_leaves_nothing(world: World) -> None:
    bad = {"resourceType": "Patient", "gender": "robot"}
    reply = world.post(bundle(*creates("ok", 60), post_entry(bad)))
    assert reply.status == 400
    expressions = [e for issue in reply.json()["issue"] for e in issue.get("expression", [])]
    assert "Bundle.entry[60].resource.gender" in expressions
    assert not world.get("/_history").json().get("entry")
    assert world.executor.runs == []  # refused before anything was prepared


def test_a_failed_condition_leaves_nothing(world: World) -> None:
    existing = world.post(bundle(post_entry(patient("Cond")))).json()["entry"][0]["resource"]
    before = world.get("/_history").json()["entry"]
    update = {**existing, "active": True}
    stale = {"resource": update, "request": {"method": "PUT", "url": f"Patient/{existing['id']}", "ifMatch": 'W/"7"'}}
    reply = world.post(bundle(*creates("c", 60), stale))
    assert reply.status == 412, reply.body[:300]
    assert world.get("/_history").json()["entry"] == before


def test_a_conflict_at_the_lock_step_rolls_back_everything_and_runs_again(world: World) -> None:
    """The first run loses the race at the lock step and is rolled back entirely; the transaction
    (no ifMatch: unguarded, like a single PUT) then runs again from the current version and commits."""
    target = world.post(bundle(post_entry(patient("Target")))).json()["entry"][0]["resource"]
    path = f"Patient/{target['id']}"
    update = {"resource": {**target, "active": True}, "request": {"method": "PUT", "url": path}}

    meddled = meddler(world, path, {**target, "gender": "other"})
    reply = world.post(bundle(*creates("lost", 60), update))
    assert meddled[0].status == 200
    assert reply.status == 200, reply.body[:300]
    [(payload, result), (_, again)] = world.executor.runs
    assert result.output["status"] == "aborted"
    assert result.output["error"]["Error"] == "TransactionConflict"
    assert again.output["status"] != "aborted"
    versions = world.get(f"/{path}/_history").json()["entry"]
    assert [e["resource"].get("gender") for e in versions] == [None, "other", None]  # the tx's, the meddler's, v1
    assert world.get(f"/{path}").json()["active"] is True
    history = world.get("/Patient/_history?_count=200").json()["entry"]
    assert len(history) == 3 + 60  # the first run's creates were rolled back: 60, not 120
    assert payload["txId"] not in world.transactions.due(now_ms=2**60)  # rolled back and finished


def test_small_transactions_keep_the_direct_path(world: World) -> None:
    reply = world.post(bundle(*creates("small", 50)))  # 100 items: exactly one TransactWriteItems
    assert reply.status == 200
    assert world.executor.runs == []
    assert len(world.get("/Patient/_history?_count=100").json()["entry"]) == 50


# -- concurrency ------------------------------------------------------------------------------------


def test_two_transactions_on_one_resource_never_mix(world: World) -> None:
    target = world.post(bundle(post_entry(patient("Race")))).json()["entry"][0]["resource"]
    both_staged = threading.Barrier(2, timeout=60)
    outcomes: dict[str, int] = {}

    def rendezvous() -> Any:
        """Both have read version 1 and staged a batch; from here they race for the locks."""
        seen = threading.Event()

        def hook(name: str, output: Any) -> None:
            if name == "StageBatch" and not seen.is_set():
                seen.set()
                both_staged.wait()

        return hook

    def run(marker: str) -> None:
        own = make_world(world.deps.settings, world.tenant)
        own.hooks.append(rendezvous())
        body = bundle(
            *creates(f"side-{marker}", 60),
            {
                "resource": {**target, "name": [{"family": marker}]},
                "request": {"method": "PUT", "url": f"Patient/{target['id']}", "ifMatch": 'W/"1"'},
            },
        )
        outcomes[marker] = own.post(body).status

    threads = [threading.Thread(target=run, args=(m,)) for m in ("T0", "T1")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # The loser runs again from the winner's version, where its ifMatch W/"1" no longer holds.
    assert sorted(outcomes.values()) == [200, 412], outcomes
    winner = next(m for m, status in outcomes.items() if status == 200)
    loser = "T1" if winner == "T0" else "T0"
    history = world.get(f"/Patient/{target['id']}/_history").json()["entry"]
    assert [e["resource"]["name"][0]["family"] for e in history] == [winner, "Race"]
    families = Counter(
        e["resource"]["name"][0]["family"].rsplit("-", 1)[0]
        for e in world.get("/Patient/_history?_count=500").json()["entry"]
    )
    assert families[f"side-{winner}"] == 60
    assert families[f"side-{loser}"] == 0, "the losing transaction's creates must not exist"


# -- respond-async ----------------------------------------------------------------------------------


def poll(world: World, location: str, timeout: float = 60) -> Reply:
    path = location.split(f"/tenant/{world.tenant}", 1)[1]
    deadline = time.monotonic() + timeout
    while True:
        reply = call(world.bundle_app(), "GET", f"/tenant/{world.tenant}{path}")
        if reply.status != 202 or time.monotonic() > deadline:
            return reply
        assert reply.headers.get("x-progress")
        time.sleep(0.1)


def test_respond_async_answers_202_then_the_transaction_response(world: World) -> None:
    entries = [post_entry(patient("async-0"), "urn:uuid:6b1cbd8e-0000-4000-8000-000000000001")]
    entries += creates("async", 59)
    entries.append(
        post_entry(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": "urn:uuid:6b1cbd8e-0000-4000-8000-000000000001"},
            }
        )
    )
    accepted = world.post(bundle(*entries), prefer="respond-async, return=minimal")
    assert accepted.status == 202, accepted.body[:300]
    location = accepted.headers["content-location"]
    assert f"/tenant/{world.tenant}/_async/" in location
    done = poll(world, location)
    assert done.status == 200, done.body[:300]
    answer = done.json()
    assert answer["type"] == "transaction-response"
    assert len(answer["entry"]) == 61
    assert all(e["response"]["status"].startswith("201") for e in answer["entry"])
    assert "resource" not in answer["entry"][0]  # return=minimal was kept
    observation = answer["entry"][60]["response"]["location"].split(f"/tenant/{world.tenant}")[1].split("/_history")[0]
    assert world.get(observation).json()["subject"]["reference"].startswith("Patient/")
    # Another tenant cannot read the status.
    elsewhere = call(world.bundle_app(), "GET", f"/tenant/other-{world.tenant}{location.split(world.tenant, 1)[1]}")
    assert elsewhere.status == 404


def test_respond_async_reports_a_rolled_back_transaction(world: World) -> None:
    target = world.post(bundle(post_entry(patient("AsyncTarget")))).json()["entry"][0]["resource"]
    path = f"Patient/{target['id']}"
    meddler(world, path, {**target, "active": False})
    update = {"resource": {**target, "active": True}, "request": {"method": "PUT", "url": path}}
    accepted = world.post(bundle(*creates("async-lost", 60), update), prefer="respond-async")
    assert accepted.status == 202
    done = poll(world, accepted.headers["content-location"])
    assert done.status == 409, done.body[:300]
    assert "Bundle.entry[60]" in done.body.decode()
    families = {e["resource"]["name"][0]["family"] for e in world.get("/Patient/_history?_count=200").json()["entry"]}
    assert families == {"AsyncTarget"}


def test_respond_async_answers_a_bad_bundle_at_once(world: World) -> None:
    reply = world.post({"resourceType": "Patient"}, prefer="respond-async")
    assert reply.status == 400


# -- the stream: staged versions are never announced, committed ones exactly once ----------------------


def test_index_sync_announces_each_committed_version_once_and_no_staged_one(fresh_tables, tmp_path, tenant) -> None:
    world = make_world(settings_for(fresh_tables, tmp_path), tenant)
    committed = world.post(bundle(*creates("kept", 60)))
    assert committed.status == 200

    def fail_lock(name: str, output: Any) -> None:
        if name == "StageBatch":
            raise RuntimeError("the lock step never happens")

    world.hooks.append(fail_lock)
    aborted = world.post(bundle(*creates("gone", 60)))
    assert aborted.status == 503
    world.hooks.clear()

    reader = DynamoDbStreamReader(fresh_tables.resources, endpoint_url=fresh_tables.endpoint, region="us-east-1")
    records = list(reader.records())
    staged = [r for r in records if str(r["dynamodb"]["Keys"]["sk"]["S"]).startswith(items.STAGED_PREFIX)]
    assert len(staged) >= 2 * 60  # both transactions staged (and the rollback removed the second's)

    index, publisher = InMemorySearchIndex(), InMemoryEventPublisher()
    sync = IndexSync(index=index, ledger=InMemoryEventLedger(), publisher=publisher)
    index_sync.use(index_sync.Components(sync, blobs=world.deps.blobs))
    try:
        response = lambda_handler({"Records": records}, LambdaContext("fhirflow-index-sync", "it"))
        assert response["batchItemFailures"] == []
        lambda_handler({"Records": records}, LambdaContext("fhirflow-index-sync", "it"))  # a replay changes nothing
    finally:
        index_sync.use(None)
    events = publisher.events
    assert len(events) == 60
    assert Counter(e.operation for e in events) == {"create": 60}
    assert len({(e.id, e.version_id) for e in events}) == 60
    documents = [key for key in index.documents if key[0] == tenant]
    assert len(documents) == 60
    names = {doc.resource["name"][0]["family"].split("-")[0] for doc in index.documents.values() if doc.resource}
    assert names == {"kept"}


# -- the embedded mode on DynamoDB Local: fhirflow serve --store dynamodb, and its sweeper ------------


def test_the_local_sweeper_resolves_what_a_crash_left(shared_tables, tmp_path, tenant) -> None:
    """``fhirflow serve --store dynamodb`` runs LocalSweeper on a worker thread, as AWS runs the
    sweeper Lambda on a schedule; here one sweep, once the transaction is past due."""
    settings = settings_for(shared_tables, tmp_path, transaction_timeout_seconds=0)
    world = make_world(settings, tenant)
    body = orjson.dumps({"resourceType": "Basic"})
    changes = [
        Change(ResourceVersion(tenant, "Basic", f"crash-{n}", 1, 1_700_000_000_000, False, "POST", body), None)
        for n in range(30)
    ]
    prepared = world.transactions.prepare(changes)
    world.transactions.stage(prepared.tx_id, 0)
    world.transactions.lock(prepared.tx_id, 0)  # ... and then the process died
    assert world.get("/Basic/crash-0").status == 404  # pending: invisible
    assert LocalSweeper(settings).drain() >= 1
    assert world.store.transaction_state(prepared.tx_id, cached=False) == "ABORTED"
    head = world.store._get_item(items.key(items.resource_pk(tenant, "Basic", "crash-0"), items.HEAD))
    assert head is None  # the pending head is gone, so a create of that id succeeds again


@pytest.mark.slow
def test_serve_on_dynamodb_runs_large_transactions_in_process(dynamodb_local, tmp_path) -> None:
    import httpx

    from fhirflow.adapters.aws.schema import ensure_tables
    from fhirflow.local.launcher import LocalServer
    from tests.support.dynamodb_local import CREDENTIALS

    table = f"serve-tx-{tmp_path.name[-8:]}"
    client = dynamodb_local.client()
    ensure_tables(client, table, f"{table}-ledger")
    args = ("--store", "dynamodb", "--dynamodb-endpoint", dynamodb_local.endpoint, "--dynamodb-table", table)
    try:
        with (
            LocalServer(data_dir=tmp_path / "data", extra_args=args, env=CREDENTIALS) as server,
            httpx.Client(base_url=server.base_url, timeout=120) as http,
        ):
            reply = http.post("/", json=bundle(*creates("served", 80)), headers={"Prefer": "return=minimal"})
            assert reply.status_code == 200, reply.text[:300]
            locations = [e["response"]["location"] for e in reply.json()["entry"]]
            assert len(locations) == 80
            assert http.get(locations[-1].split(server.base_url)[1].split("/_history")[0]).status_code == 200
            statement = http.get("/metadata").json()
            [limits] = [e for e in statement["rest"][0]["extension"] if e["url"].endswith("server-limits")]
            assert {"url": "transactionBatchItems", "valueInteger": 25} in limits["extension"]
    finally:
        for name in (table, f"{table}-ledger"):
            client.delete_table(TableName=name)


# -- the synchronous budget (Step Functions behind API Gateway) -------------------------------------


class LostStart:
    """StartSyncExecution whose answer never arrives (a dropped connection): the execution did
    start, and runs on after the caller has given up on it."""

    def __init__(self, inner: LocalWorkflowExecutor) -> None:
        self.inner = inner
        self.payloads: list[dict[str, Any]] = []

    def run(self, payload: dict[str, Any]) -> WorkflowResult:
        self.payloads.append(payload)
        raise ServiceUnavailable("The transaction workflow is unreachable; retry shortly")

    def start(self, name: str, payload: dict[str, Any]) -> None:
        self.inner.start(name, payload)

    def describe(self, name: str) -> WorkflowResult | None:
        return self.inner.describe(name)


def test_a_client_told_a_transaction_failed_never_sees_it_commit(world: World) -> None:
    committer = world.parts.committer
    assert isinstance(committer, ProtocolCommitter)
    recording = committer.executor
    assert isinstance(recording, Recording)
    lost = LostStart(recording.inner)
    committer.executor = lost
    reply = world.post(bundle(*creates("lost-start", 60)))
    assert reply.status == 503, reply.body[:300]
    assert "nothing was written" in reply.json()["issue"][0]["diagnostics"]
    # The execution the client gave up on runs to its end: it must not commit.
    [payload] = lost.payloads
    late = recording.inner.run(payload)
    assert late.output["status"] == "aborted"
    assert not world.get("/_history").json().get("entry")


def test_a_transaction_too_large_to_finish_in_time_is_refused_before_writing(shared_tables, tmp_path, tenant) -> None:
    world = make_world(settings_for(shared_tables, tmp_path, transaction_sync_max_items=150), tenant)
    committer = world.parts.committer
    assert isinstance(committer, ProtocolCommitter)
    committer.sync_max_items = 150  # what build_parts sets where Step Functions runs the workflow
    reply = world.post(bundle(*creates("big", 80)))  # 160 items
    assert reply.status == 413, reply.body[:300]
    issue = reply.json()["issue"][0]
    assert "Prefer: respond-async" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry"]
    assert world.executor.runs == []
    assert not world.get("/_history").json().get("entry")
    # The same bundle asynchronously is accepted.
    accepted = world.post(bundle(*creates("big", 80)), prefer="respond-async")
    assert accepted.status == 202


def test_only_step_functions_imposes_the_synchronous_budget(shared_tables, tmp_path, tenant) -> None:
    local = make_world(settings_for(shared_tables, tmp_path), tenant).parts.committer
    assert isinstance(local, ProtocolCommitter)
    assert local.sync_max_items is None
    machine = "arn:aws:states:us-east-1:123456789012:stateMachine:Express"
    settings = settings_for(shared_tables, tmp_path, transaction_state_machine=machine, transaction_sync_max_items=7)
    deps = build_dependencies(settings)
    remote = build_parts(deps, prepare_app_factory(deps)).committer
    assert isinstance(remote, ProtocolCommitter)
    assert remote.sync_max_items == 7
