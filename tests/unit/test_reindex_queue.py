"""``$reindex`` on a queue (fhirflow_search/reindex_queue.py) with the embedded adapters, in
process: the kick-off queues the first chunk, chunks queue their successors until the job is
done, status requests only read, and deliveries are idempotent — a redelivered message, a second
worker, a chunk that died before queueing its successor."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirflow.runtime import build_dependencies
from fhirflow.settings import Settings
from fhirflow_contracts import AdvanceReindex
from fhirflow_search.app import reindex_parts
from fhirflow_search.reindex import ReindexRunner
from fhirflow_search.reindex_queue import JobBusy, ReindexChunks, ReindexDrainer, local_queue
from tests.unit.test_authz_kit import InProcessClient
from tests.unit.test_reindex import PREFIX, eye_colour, ids, kick_off, parameters, patient, put

TENANT = "reindex"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, audit="off")


@pytest.fixture
def client(settings: Settings) -> InProcessClient:
    return InProcessClient(build_dependencies(settings))


def loaded(client: InProcessClient, count: int = 5) -> str:
    for n in range(count):
        put(client, patient("blue"), f"p{n}")
    put(client, eye_colour(), "eye")
    return kick_off(client, "/Patient/$reindex")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


def chunks_for(settings: Settings, clock: Clock, *, worker: str = "w1", stall_ms: int = 60_000) -> ReindexChunks:
    parts = reindex_parts(settings)
    runner = ReindexRunner(parts, batch_size=2, max_batches=1, lease_ms=30_000, clock=clock, worker=worker)
    return ReindexChunks(parts, local_queue(settings), runner=runner, stall_ms=stall_ms)


def queued_commands(settings: Settings) -> list[AdvanceReindex]:
    queue = local_queue(settings)
    return [AdvanceReindex.model_validate_json(m.body) for m in queue.receive(100)]


def test_the_kick_off_queues_the_first_chunk_and_the_worker_finishes_the_job_unpolled(
    client: InProcessClient, settings: Settings
) -> None:
    status = loaded(client)
    job_id = status.rsplit("/", 1)[1]
    queue = local_queue(settings)
    [message] = queue.receive(10)
    command = AdvanceReindex.model_validate_json(message.body)
    assert (command.tenant, command.job_id, command.revision) == (TENANT, job_id, 0)
    queue.retry_later(message.seq, 0)  # back for the drainer

    for _ in range(3):  # polling does not move the job
        assert parameters(client.get(status))["processed"] == [0]

    drainer = ReindexDrainer(queue, chunks_for(settings, Clock()))
    done = drainer.drain()

    assert done >= 4  # pin + three batches of two, a chunk each, every one queued by the one before
    assert queue.depth() == 0
    result = parameters(client.get(status))
    assert result["status"] == ["completed"]
    assert result["processed"] == result["total"] == [5]
    assert ids(client.get(f"{PREFIX}/Patient", query={"eye-colour": "blue"})) == [f"p{n}" for n in range(5)]


def test_a_redelivered_message_does_nothing_and_nothing_is_counted_twice(
    client: InProcessClient, settings: Settings
) -> None:
    status = loaded(client)
    clock = Clock()
    chunks = chunks_for(settings, clock)
    [first] = queued_commands(settings)

    assert chunks.advance(first) == "continued"  # pins the catalog state
    [second] = queued_commands(settings)
    assert second.revision > first.revision
    assert chunks.advance(first) == "stale"  # SQS delivered it again
    assert chunks.advance(second) == "continued"
    assert chunks.advance(second) == "stale"
    assert chunks.advance(first) == "stale"
    before = parameters(client.get(status))["processed"]

    while commands := queued_commands(settings):
        [command] = commands  # one chain: never two messages for the job
        chunks.advance(command)

    assert before == [2]
    result = parameters(client.get(status))
    assert result["status"] == ["completed"]
    assert result["processed"] == result["total"] == [5]


def test_a_message_whose_job_another_worker_holds_is_retried_later(client: InProcessClient, settings: Settings) -> None:
    loaded(client)
    clock = Clock()
    [command] = queued_commands(settings)
    jobs = reindex_parts(settings).jobs
    assert jobs.claim_job(TENANT, command.job_id, 0, "someone-else", clock.now, 30_000)

    with pytest.raises(JobBusy):
        chunks_for(settings, clock).advance(command)
    clock.now += 30_001  # that worker died; its lease ran out before the message came back
    assert chunks_for(settings, clock).advance(command) == "continued"


def test_a_chunk_that_died_before_queueing_its_successor_is_resumed_by_its_redelivery(
    client: InProcessClient, settings: Settings
) -> None:
    status = loaded(client)
    clock = Clock()
    chunks = chunks_for(settings, clock, stall_ms=60_000)
    [first] = queued_commands(settings)
    sent: list[str] = []

    class Unreachable:
        def send(self, body: str, *, delay_seconds: int = 0) -> None:
            sent.append(body)
            raise ConnectionError("the queue is unreachable")

    broken = ReindexChunks(chunks.parts, Unreachable(), runner=chunks.runner, stall_ms=60_000)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        broken.advance(first)  # saved its chunk, then could not queue the next
    assert len(sent) == 1
    assert queued_commands(settings) == []

    assert chunks.advance(first) == "stale"  # redelivered at once: maybe its successor is just slow
    clock.now += 60_000
    assert chunks.advance(first) == "requeued"  # nothing moved it for a while: queue the successor
    [successor] = queued_commands(settings)
    meant = AdvanceReindex.model_validate_json(sent[0])  # the message the chunk meant to send
    assert (successor.metadata.event_id, successor.revision) == (meant.metadata.event_id, meant.revision)
    assert chunks.advance(successor) == "continued"
    while commands := queued_commands(settings):
        [command] = commands
        chunks.advance(command)

    result = parameters(client.get(status))
    assert result["status"] == ["completed"]
    assert result["processed"] == result["total"] == [5]
