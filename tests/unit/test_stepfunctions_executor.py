"""``StepFunctionsWorkflowExecutor`` against the Step Functions API as botocore sends it (the
requests are answered in botocore's ``before-send`` hook, so nothing leaves the process): a
synchronous execution is started once, named by its transaction, and waited for longer than it
may run; a Standard execution keeps the SDK's retries (its start is idempotent by name)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from fhirflow.adapters.aws.stepfunctions import (
    SYNC_EXECUTION_SECONDS,
    SYNC_READ_TIMEOUT_SECONDS,
    StepFunctionsWorkflowExecutor,
)
from fhirflow.errors import ServiceUnavailable

EXPRESS = "arn:aws:states:us-east-1:123456789012:stateMachine:Express"
STANDARD = "arn:aws:states:us-east-1:123456789012:stateMachine:Standard"


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


class Answers:
    """Records each request botocore sends and answers it with the next canned reply."""

    def __init__(self, *replies: tuple[int, dict[str, Any]]) -> None:
        self.replies = list(replies)
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        target = request.headers["X-Amz-Target"].decode().split(".")[-1]
        self.sent.append((target, json.loads(request.body)))
        status, body = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        raw = json.dumps(body).encode()
        return AWSResponse(request.url, status, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(raw))


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def executor(answers: Answers) -> StepFunctionsWorkflowExecutor:
    built = StepFunctionsWorkflowExecutor(EXPRESS, STANDARD, region="us-east-1")
    for client in {id(built.client): built.client, id(built.sync_client): built.sync_client}.values():
        client.meta.events.register("before-send.sfn", answers)
    return built


BUSY = (500, {"__type": "InternalFailure", "message": "try again"})


def test_a_synchronous_start_is_sent_once_even_when_it_fails() -> None:
    answers = Answers(BUSY)
    with pytest.raises(ServiceUnavailable):
        executor(answers).run({"txId": "tx1", "batches": [0, 1]})
    assert [target for target, _ in answers.sent] == ["StartSyncExecution"]  # no SDK retry: no second execution


def test_a_synchronous_execution_is_named_by_its_transaction() -> None:
    done = {"executionArn": "x", "startDate": 0, "stopDate": 0, "status": "SUCCEEDED", "output": '{"status":"ok"}'}
    answers = Answers((200, done))
    result = executor(answers).run({"txId": "0123abcd", "batches": [0]})
    assert result.status == "SUCCEEDED"
    [(_, request)] = answers.sent
    assert request["name"] == "0123abcd"
    assert request["stateMachineArn"] == EXPRESS


def test_the_synchronous_client_outwaits_the_execution() -> None:
    config = StepFunctionsWorkflowExecutor(EXPRESS, STANDARD, region="us-east-1").sync_client.meta.config
    assert config.retries["total_max_attempts"] == 1
    assert config.read_timeout == SYNC_READ_TIMEOUT_SECONDS > SYNC_EXECUTION_SECONDS


def test_an_asynchronous_start_keeps_the_sdk_retries() -> None:
    answers = Answers(BUSY, (200, {"executionArn": "x", "startDate": 0}))
    executor(answers).start("job1", {"job": "job1"})
    assert [target for target, _ in answers.sent] == ["StartExecution", "StartExecution"]
