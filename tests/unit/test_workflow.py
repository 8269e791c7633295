"""The workflow DSL: its ASL, its validation, and the LocalRunner's Step Functions semantics
(Retry, Catch, ResultPath, Map with ItemSelector, Choice), plus the bundle workflow's shape."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from fhirflow.workflow import (
    ALL_ERRORS,
    TASK_FAILED,
    And,
    Catch,
    Choice,
    Fail,
    IsPresent,
    LocalRunner,
    Map,
    Pass,
    Retry,
    Rule,
    StringEquals,
    Succeed,
    Task,
    Workflow,
)
from fhirflow_bundle.transaction.definition import TASKS, TRANSIENT_ERRORS, transaction_workflow


class Flaky(Exception):
    pass


class Fatal(Exception):
    pass


class Killed(BaseException):
    """The process dying: nothing in the workflow may handle it."""


def runner(workflow: Workflow, tasks: dict[str, Any], **kwargs: Any) -> tuple[LocalRunner, list[float]]:
    slept: list[float] = []
    return LocalRunner(workflow, tasks, sleep=slept.append, **kwargs), slept


# -- the DSL -------------------------------------------------------------------------------------


def test_a_workflow_refuses_unknown_and_unreachable_states() -> None:
    with pytest.raises(ValueError, match="unknown states"):
        Workflow("A", (Task("A", "a", next="Nowhere"),))
    with pytest.raises(ValueError, match="nothing reaches"):
        Workflow("A", (Task("A", "a"), Succeed("Orphan")))
    with pytest.raises(ValueError, match="unique"):
        Workflow("A", (Task("A", "a", next="A"), Task("A", "b")))
    with pytest.raises(ValueError, match="StartAt"):
        Workflow("B", (Succeed("A"),))


def test_to_asl_renders_each_state_type() -> None:
    inner = Workflow("Each", (Task("Each", "each", retry=(Retry(("Flaky",), max_attempts=2),)),))
    workflow = Workflow(
        "Pick",
        (
            Choice("Pick", (Rule(And((IsPresent("$.x"), StringEquals("$.x", "go"))), "Work"),), default="Stop"),
            Task("Work", "work", next="All", result_path="$.out", catch=(Catch((ALL_ERRORS,), "Stop", "$.err"),)),
            Map(
                "All",
                "$.items",
                inner,
                item_selector={"id.$": "$.id", "item.$": "$$.Map.Item.Value"},
                max_concurrency=3,
                result_path=None,
                next="Mark",
            ),
            Pass("Mark", result="done", result_path="$.status"),
            Fail("Stop", "Stopped", "because"),
        ),
        timeout_seconds=60,
    )
    asl = workflow.to_asl({"work": "arn:work", "each": "arn:each"})
    assert asl["StartAt"] == "Pick"
    assert asl["TimeoutSeconds"] == 60
    states = asl["States"]
    assert states["Pick"] == {
        "Type": "Choice",
        "Choices": [
            {"And": [{"Variable": "$.x", "IsPresent": True}, {"Variable": "$.x", "StringEquals": "go"}], "Next": "Work"}
        ],
        "Default": "Stop",
    }
    assert states["Work"] == {
        "Type": "Task",
        "Resource": "arn:work",
        "ResultPath": "$.out",
        "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Stop", "ResultPath": "$.err"}],
        "Next": "All",
    }
    assert states["All"]["ItemProcessor"] == {
        "ProcessorConfig": {"Mode": "INLINE"},
        "StartAt": "Each",
        "States": {
            "Each": {
                "Type": "Task",
                "Resource": "arn:each",
                "Retry": [{"ErrorEquals": ["Flaky"], "MaxAttempts": 2, "IntervalSeconds": 1, "BackoffRate": 2.0}],
                "End": True,
            }
        },
    }
    assert states["All"]["ItemSelector"] == {"id.$": "$.id", "item.$": "$$.Map.Item.Value"}
    assert states["All"]["ResultPath"] is None
    assert states["All"]["MaxConcurrency"] == 3
    assert states["Mark"] == {"Type": "Pass", "Result": "done", "ResultPath": "$.status", "End": True}
    assert states["Stop"] == {"Type": "Fail", "Error": "Stopped", "Cause": "because"}
    with pytest.raises(KeyError, match="each"):
        workflow.to_asl({"work": "arn:work"})
    assert workflow.tasks() == {"work", "each"}


# -- the LocalRunner ------------------------------------------------------------------------------


def test_retry_backs_off_then_succeeds() -> None:
    calls = []

    def flaky(data: Any) -> Any:
        calls.append(data)
        if len(calls) < 3:
            raise Flaky("not yet")
        return {"ok": len(calls)}

    workflow = Workflow("T", (Task("T", "t", retry=(Retry(("Flaky",), max_attempts=3, interval_seconds=2),)),))
    local, slept = runner(workflow, {"t": flaky})
    execution = local.run({"n": 1})
    assert execution.status == "SUCCEEDED"
    assert execution.output == {"ok": 3}
    assert slept == [2, 4]


def test_retries_exhausted_go_to_the_catcher_with_error_and_cause() -> None:
    def always(data: Any) -> Any:
        raise Flaky("still failing")

    workflow = Workflow(
        "T",
        (
            Task(
                "T",
                "t",
                next="Done",
                retry=(Retry(("Flaky",), max_attempts=2),),
                catch=(Catch((TASK_FAILED,), "Caught"),),
            ),
            Succeed("Done"),
            Pass("Caught"),
        ),
    )
    local, slept = runner(workflow, {"t": always})
    execution = local.run({"keep": True})
    assert execution.status == "SUCCEEDED"
    assert execution.states == ["T", "Caught"]
    assert len(slept) == 2
    error = execution.output["error"]
    assert error["Error"] == "Flaky"
    assert json.loads(error["Cause"]) == {"errorMessage": "still failing", "errorType": "Flaky"}
    assert execution.output["keep"] is True


def test_an_error_no_retrier_or_catcher_matches_fails_the_execution() -> None:
    def fatal(data: Any) -> Any:
        raise Fatal("boom")

    workflow = Workflow(
        "T", (Task("T", "t", retry=(Retry(("Flaky",)),), catch=(Catch(("Flaky",), "Other"),)), Succeed("Other"))
    )
    local, slept = runner(workflow, {"t": fatal})
    execution = local.run({})
    assert (execution.status, execution.error, slept) == ("FAILED", "Fatal", [])


def test_the_first_matching_retrier_decides_even_when_exhausted() -> None:
    def always(data: Any) -> Any:
        raise Flaky("x")

    retriers = (Retry(("Flaky",), max_attempts=1), Retry((ALL_ERRORS,), max_attempts=5))
    local, slept = runner(Workflow("T", (Task("T", "t", retry=retriers),)), {"t": always})
    assert local.run({}).status == "FAILED"
    assert len(slept) == 1


def test_map_runs_each_item_with_its_selector_and_keeps_the_input() -> None:
    seen: list[Any] = []
    lock = threading.Lock()

    def each(data: Any) -> Any:
        with lock:
            seen.append(data)
        return data["item"] * 10

    inner = Workflow("Each", (Task("Each", "each"),))
    workflow = Workflow(
        "All",
        (
            Map(
                "All",
                "$.items",
                inner,
                {"tx.$": "$.tx", "item.$": "$$.Map.Item.Value", "i.$": "$$.Map.Item.Index"},
                next="Keep",
                result_path="$.results",
            ),
            Map("Keep", "$.items", inner, {"item.$": "$$.Map.Item.Value"}, result_path=None),
        ),
    )
    local, _ = runner(workflow, {"each": each}, max_concurrency=4)
    execution = local.run({"tx": "t1", "items": [1, 2, 3]})
    assert execution.status == "SUCCEEDED"
    assert execution.output == {"tx": "t1", "items": [1, 2, 3], "results": [10, 20, 30]}
    assert sorted((s["item"], s.get("i"), s.get("tx")) for s in seen[:3]) == [(1, 0, "t1"), (2, 1, "t1"), (3, 2, "t1")]
    assert execution.states.count("All/Each") == 3


def test_a_failing_iteration_fails_the_map_with_its_error() -> None:
    def each(data: Any) -> Any:
        if data["item"] == 2:
            raise Fatal("item 2")
        return data

    inner = Workflow("Each", (Task("Each", "each"),))
    workflow = Workflow(
        "All",
        (
            Map("All", "$.items", inner, {"item.$": "$$.Map.Item.Value"}, catch=(Catch((ALL_ERRORS,), "Undo"),)),
            Pass("Undo"),
        ),
    )
    for concurrency in (1, 4):
        local, _ = runner(workflow, {"each": each}, max_concurrency=concurrency)
        execution = local.run({"items": [1, 2, 3]})
        assert execution.status == "SUCCEEDED"
        assert execution.states[-1] == "Undo"
        assert execution.output["error"]["Error"] == "Fatal"


def test_choice_follows_rules_and_a_missing_string_variable_is_a_runtime_error() -> None:
    workflow = Workflow(
        "C",
        (
            Choice("C", (Rule(StringEquals("$.s", "a"), "A"),), default="B"),
            Pass("A", result="took-a", result_path="$.path"),
            Pass("B", result="took-b", result_path="$.path"),
        ),
    )
    local, _ = runner(workflow, {})
    assert local.run({"s": "a"}).output["path"] == "took-a"
    assert local.run({"s": "z"}).output["path"] == "took-b"
    missing = local.run({})
    assert (missing.status, missing.error) == ("FAILED", "States.Runtime")


def test_after_task_exceptions_count_as_task_failures_and_base_exceptions_escape() -> None:
    calls: list[str] = []

    def work(data: Any) -> Any:
        calls.append("work")
        return data

    def once_then_fine(name: str, output: Any) -> None:
        if len(calls) == 1:
            raise Flaky("after the first call")

    workflow = Workflow("T", (Task("T", "t", retry=(Retry(("Flaky",), max_attempts=2),)),))
    local, _ = runner(workflow, {"t": work}, after_task=once_then_fine)
    assert local.run({}).status == "SUCCEEDED"
    assert calls == ["work", "work"]  # the retry ran the (idempotent) task again

    def die(name: str, output: Any) -> None:
        raise Killed

    local, _ = runner(workflow, {"t": work}, after_task=die)
    with pytest.raises(Killed):
        local.run({})


def test_the_runner_needs_a_function_for_every_task() -> None:
    with pytest.raises(ValueError, match="each"):
        LocalRunner(Workflow("T", (Task("T", "each"),)), {})


# -- the bundle workflow ----------------------------------------------------------------------------


def test_the_transaction_workflow_has_the_protocol_shape() -> None:
    workflow = transaction_workflow(max_concurrency=7, timeout_seconds=300)
    assert workflow.tasks() == set(TASKS)
    asl = workflow.to_asl({task: f"arn:aws:lambda:us-east-1:1:function:{task}" for task in TASKS})
    states = asl["States"]
    assert asl["StartAt"] == "Route"
    assert asl["TimeoutSeconds"] == 300
    assert states["Route"]["Choices"] == [{"Variable": "$.txId", "IsPresent": True, "Next": "Stage"}]
    assert states["Route"]["Default"] == "Prepare"
    # prepare → stage → lock → commit → apply → finish
    assert [states[s].get("Next") for s in ("Stage", "Lock", "Commit", "Apply", "Finish")] == [
        "Lock",
        "Commit",
        "Apply",
        "Finish",
        "Committed",
    ]
    for name in ("Stage", "Lock", "Apply"):
        state = states[name]
        assert state["Type"] == "Map"
        assert state["ItemsPath"] == "$.batches"
        assert state["MaxConcurrency"] == 7
        assert state["ResultPath"] is None
        assert state["ItemSelector"] == {"txId.$": "$.txId", "batch.$": "$$.Map.Item.Value"}
        [task] = state["ItemProcessor"]["States"].values()
        assert task["Retry"][0]["ErrorEquals"] == list(TRANSIENT_ERRORS)
    # Before the commit point every failure rolls back; after it, nothing does.
    for name in ("Stage", "Lock", "Commit"):
        assert states[name]["Catch"] == [{"ErrorEquals": ["States.ALL"], "Next": "Rollback", "ResultPath": "$.error"}]
    assert states["Apply"]["Catch"][0]["Next"] == "Committed"
    assert states["Finish"]["Catch"][0]["Next"] == "Committed"
    assert states["RolledBack"]["Choices"][0]["Next"] == "Apply"  # it had committed after all
    assert states["RolledBack"]["Default"] == "Aborted"
    assert states["Rollback"]["Catch"][0]["Next"] == "RollbackFailed"
    assert states["Prepare"]["Catch"][0]["Next"] == "PrepareFailed"
    assert states["Committed"] == {"Type": "Pass", "Result": "committed", "ResultPath": "$.status", "End": True}
    assert states["Aborted"] == {"Type": "Pass", "Result": "aborted", "ResultPath": "$.status", "End": True}
