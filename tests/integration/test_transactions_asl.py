"""The bundle workflow's generated ASL on moto's Step Functions interpreter (``execute_state_machine``).

moto parses the definition (so an invalid one is refused at CreateStateMachine) and executes its
control flow: Choice, Map with ItemSelector, Retry, Catch with ResultPath, Pass, Fail. It cannot
run our Lambda code (no Docker here). Two ways around that, both used:

- Lambda ARNs that name no function: moto fails each invocation with the error ``Exception``,
  which shows where a failing task goes (the rollback branch, the Fail states);
- moto's Docker-less "simple" Lambda backend, which returns the task's input (or a queued
  result) for any ARN: the success paths, and a failure at a chosen task by queueing a result over
  Lambda's 6 MB response limit (``Function.ResponseSizeTooLarge``).

Each path is also run on the LocalRunner with stand-in tasks that behave the same way, and both
must visit the same states in the same order: the two executors of the one definition agree.

What moto cannot show: our task code running inside Step Functions (tested as Python functions
against DynamoDB Local, tests/integration/test_transactions*.py), StartSyncExecution on an Express
state machine (not implemented by moto; executions here run Standard-style), timeouts, and
Retry's waits between attempts for errors we list as transient (moto's invocation errors are not
among them).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fhirflow.workflow import LocalRunner
from fhirflow_bundle.transaction.definition import TASKS, transaction_workflow

ACCOUNT, REGION = "123456789012", "us-east-1"
ARNS = {task: f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:fhirflow-{task}" for task in TASKS}
TOO_LARGE = "x" * 6_300_000
"""A Lambda result over the 6 MB response limit: the invocation fails."""


class ResponseTooLarge(Exception):
    """The LocalRunner's stand-in for a failed invocation."""


@pytest.fixture
def sfn(request: pytest.FixtureRequest) -> Iterator[Any]:
    import boto3
    from moto import mock_aws

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        os.environ.setdefault(name, value)
    config: dict[str, Any] = {"stepfunctions": {"execute_state_machine": True}}
    if getattr(request, "param", None) == "simple-lambda":
        config["lambda"] = {"use_docker": False}
    with mock_aws(config=config):
        yield boto3.client("stepfunctions", region_name=REGION)


def create(sfn: Any, kind: str = "STANDARD") -> str:
    definition = json.dumps(transaction_workflow(max_concurrency=4).to_asl(ARNS))
    name = f"fhirflow-transactions-{kind.lower()}"
    role = f"arn:aws:iam::{ACCOUNT}:role/fhirflow-sfn"
    return str(sfn.create_state_machine(name=name, definition=definition, roleArn=role, type=kind)["stateMachineArn"])


def execute(sfn: Any, machine: str, payload: dict[str, Any], name: str = "e1") -> tuple[dict[str, Any], list[str]]:
    """Run to the end; the execution's description, and the states entered in order."""
    description, events = run_with_history(sfn, machine, payload, name)
    return description, [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]


def run_with_history(
    sfn: Any, machine: str, payload: dict[str, Any], name: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    arn = sfn.start_execution(stateMachineArn=machine, name=name, input=json.dumps(payload))["executionArn"]
    deadline = time.monotonic() + 60
    while (description := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the execution did not finish"
        time.sleep(0.05)
    return description, sfn.get_execution_history(executionArn=arn)["events"]


def entered_input(events: list[dict[str, Any]], state: str) -> Any:
    [details] = [
        e["stateEnteredEventDetails"] for e in events if e.get("stateEnteredEventDetails", {}).get("name") == state
    ]
    return json.loads(details["input"])


def queue_results(*results: str) -> None:
    from moto.awslambda_simple.models import lambda_simple_backends

    lambda_simple_backends[ACCOUNT][REGION].lambda_simple_results_queue.extend(results)


def local(payload: dict[str, Any], results: dict[str, list[Any]]) -> tuple[Any, list[str]]:
    """The same definition on the LocalRunner; a task's queued result replaces the echo, and
    ``TOO_LARGE`` fails it, as in moto."""

    def task(key: str) -> Any:
        def run(data: Any) -> Any:
            queued = results.get(key) or []
            if not queued:
                return data
            result = queued.pop(0)
            if result == TOO_LARGE:
                raise ResponseTooLarge
            return json.loads(result)

        return run

    runner = LocalRunner(transaction_workflow(max_concurrency=4), {t: task(t) for t in TASKS}, sleep=lambda _: None)
    execution = runner.run(payload)
    return execution, [name.rsplit("/", 1)[-1] for name in execution.states]


SYNC = {"txId": "tx-1", "batches": [0]}


def test_the_generated_asl_is_accepted_for_express_and_standard_machines(sfn: Any) -> None:
    for kind in ("EXPRESS", "STANDARD"):
        arn = create(sfn, kind)
        described = sfn.describe_state_machine(stateMachineArn=arn)
        assert described["type"] == kind
        assert json.loads(described["definition"])["States"]["Commit"]["Resource"] == ARNS["commit"]
    # moto parses the definition (it does not check Next targets; the DSL does that itself).
    broken = transaction_workflow().to_asl(ARNS)
    broken["States"]["Commit"]["Type"] = "Taskk"
    with pytest.raises(ClientError, match="ASLParserException"):
        sfn.create_state_machine(name="broken", definition=json.dumps(broken), roleArn=f"arn:aws:iam::{ACCOUNT}:role/x")


def test_a_task_that_cannot_be_invoked_routes_to_the_rollback(sfn: Any) -> None:
    description, entered = execute(sfn, create(sfn), SYNC)
    # Stage fails → Rollback (which cannot be invoked either) → RollbackFailed: the sweeper's job.
    assert entered == ["Route", "Stage", "StageBatch", "Rollback", "RollbackFailed"]
    assert (description["status"], description["error"]) == ("FAILED", "RollbackFailed")
    execution, path = local(SYNC, {"stage": [TOO_LARGE], "rollback": [TOO_LARGE]})
    assert path == entered
    assert (execution.status, execution.error) == ("FAILED", "RollbackFailed")


def test_a_prepare_that_cannot_be_invoked_fails_without_touching_anything(sfn: Any) -> None:
    description, entered = execute(sfn, create(sfn), {"job": "job-1"})
    assert entered == ["Route", "Prepare", "PrepareFailed"]
    assert description["error"] == "PrepareFailed"


@pytest.mark.parametrize("sfn", ["simple-lambda"], indirect=True)
def test_the_protocol_runs_stage_lock_commit_apply_finish(sfn: Any) -> None:
    description, entered = execute(sfn, create(sfn), {"txId": "tx-1", "batches": [0, 1, 2]})
    assert description["status"] == "SUCCEEDED"
    assert json.loads(description["output"]) == {"txId": "tx-1", "batches": [0, 1, 2], "status": "committed"}
    top = [name for name in entered if not name.endswith("Batch")]
    assert top == ["Route", "Stage", "Lock", "Commit", "Apply", "Finish", "Committed"]
    for step in ("StageBatch", "LockBatch", "ApplyBatch"):
        assert entered.count(step) == 3  # one iteration per batch
    execution, path = local({"txId": "tx-1", "batches": [0, 1, 2]}, {})
    assert [name for name in path if not name.endswith("Batch")] == top
    assert execution.output == json.loads(description["output"])


@pytest.mark.parametrize("sfn", ["simple-lambda"], indirect=True)
def test_a_failing_lock_rolls_back_and_ends_aborted(sfn: Any) -> None:
    results = {"stage": ["{}"], "lock": [TOO_LARGE], "rollback": [json.dumps({**SYNC, "decision": "aborted"})]}
    queue_results(*results["stage"], *results["lock"], *results["rollback"])
    description, events = run_with_history(sfn, create(sfn), SYNC, "e1")
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
    assert entered == ["Route", "Stage", "StageBatch", "Lock", "LockBatch", "Rollback", "RolledBack", "Aborted"]
    assert json.loads(description["output"])["status"] == "aborted"
    # What the rollback received: the Map's error at $.error, the rest of the state intact.
    rollback_input = entered_input(events, "Rollback")
    assert rollback_input["txId"] == "tx-1"
    assert rollback_input["error"]["Error"] == "Function.ResponseSizeTooLarge"
    execution, path = local(SYNC, {key: list(value) for key, value in results.items()})
    assert path == entered
    assert execution.output["status"] == "aborted"


@pytest.mark.parametrize("sfn", ["simple-lambda"], indirect=True)
def test_a_rollback_that_finds_it_committed_goes_on_to_apply(sfn: Any) -> None:
    results = {"commit": [TOO_LARGE], "rollback": [json.dumps({**SYNC, "decision": "committed"})]}
    queue_results("{}", "{}", TOO_LARGE, results["rollback"][0])  # stage, lock, commit, rollback
    description, entered = execute(sfn, create(sfn), SYNC)
    assert entered == [
        "Route", "Stage", "StageBatch", "Lock", "LockBatch", "Commit", "Rollback", "RolledBack",
        "Apply", "ApplyBatch", "Finish", "Committed",
    ]  # fmt: skip
    assert json.loads(description["output"])["status"] == "committed"
    _, path = local(SYNC, {key: list(value) for key, value in results.items()})
    assert path == entered


@pytest.mark.parametrize("sfn", ["simple-lambda"], indirect=True)
def test_after_the_commit_point_a_failing_apply_still_ends_committed(sfn: Any) -> None:
    queue_results("{}", "{}", json.dumps(SYNC), TOO_LARGE)  # stage, lock, commit, apply
    description, entered = execute(sfn, create(sfn), SYNC)
    assert entered[-3:] == ["Apply", "ApplyBatch", "Committed"]  # Finish is left to the sweeper
    output = json.loads(description["output"])
    assert output["status"] == "committed"
    assert output["applyError"]["Error"] == "Function.ResponseSizeTooLarge"
    execution, path = local(SYNC, {"apply": [TOO_LARGE]})
    assert path == entered
    assert execution.output["applyError"]["Error"] == "ResponseTooLarge"


@pytest.mark.parametrize("sfn", ["simple-lambda"], indirect=True)
def test_respond_async_starts_at_prepare(sfn: Any) -> None:
    machine = create(sfn)
    queue_results(json.dumps({"status": "answered", "job": "j1"}))
    _, answered = execute(sfn, machine, {"job": "j1"}, name="answered")
    assert answered == ["Route", "Prepare", "Prepared", "Answered"]
    prepared = {"status": "prepared", "job": "j2", "txId": "tx-2", "batches": [0]}
    queue_results(json.dumps(prepared))
    description, entered = execute(sfn, machine, {"job": "j2"}, name="prepared")
    assert entered[:4] == ["Route", "Prepare", "Prepared", "Stage"]
    assert entered[-1] == "Committed"
    assert json.loads(description["output"]) == {**prepared, "status": "committed"}
    for payload, queued, states in (({"job": "j1"}, answered, None), ({"job": "j2"}, entered, prepared)):
        results = {"prepare": [json.dumps(states or {"status": "answered", "job": "j1"})]}
        _, path = local(payload, results)
        assert path == queued
