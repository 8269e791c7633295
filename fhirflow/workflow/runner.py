"""``LocalRunner``: executes a :class:`~fhirflow.workflow.dsl.Workflow` in-process, as Step Functions would.

Tasks are Python functions taking the state's input and returning its result (the functions the
Lambda wrappers call in AWS). Errors are named like Lambda names them for Step Functions: the
exception's class name, with ``{"errorMessage", "errorType"}`` as the cause; ``Retry`` and
``Catch`` then apply with Step Functions' rules (``States.ALL`` matches every error,
``States.TaskFailed`` every task error; the first matching retrier counts its own attempts; a
caught error is placed at the catcher's ``ResultPath`` as ``{"Error", "Cause"}``).

``after_task`` is a test hook: it runs after each task returns, as if it were the task's last
line. An ``Exception`` raised there is the task failing (Retry and Catch apply); a
``BaseException`` that is not an ``Exception`` escapes everything, like the process dying.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

from fhirflow.workflow import paths
from fhirflow.workflow.dsl import (
    ALL_ERRORS,
    TASK_FAILED,
    And,
    Catch,
    Choice,
    Condition,
    Fail,
    IsPresent,
    Map,
    Pass,
    Retry,
    State,
    StringEquals,
    Succeed,
    Task,
    Workflow,
)

TaskFunction = Callable[[Any], Any]
RUNTIME_ERROR = "States.Runtime"


class StateFailure(Exception):
    """A state failed with a Step Functions error name and cause (after its retries)."""

    def __init__(self, error: str, cause: str) -> None:
        super().__init__(f"{error}: {cause[:200]}")
        self.error = error
        self.cause = cause


@dataclass
class Execution:
    status: Literal["SUCCEEDED", "FAILED"]
    output: Any = None
    error: str | None = None
    cause: str | None = None
    states: list[str] = field(default_factory=list)
    """Every state entered, in order (a Map's inner states as ``Map/Inner``)."""


def error_of(exc: Exception) -> StateFailure:
    """How Lambda reports a Python exception to Step Functions."""
    if isinstance(exc, StateFailure):
        return exc
    name = type(exc).__name__
    return StateFailure(name, json.dumps({"errorMessage": str(exc), "errorType": name}))


def _matches(patterns: tuple[str, ...], error: str) -> bool:
    if ALL_ERRORS in patterns or error in patterns:
        return True
    return TASK_FAILED in patterns and not error.startswith("States.")


def _holds(condition: Condition, data: Any) -> bool:
    if isinstance(condition, IsPresent):
        return paths.present(data, condition.variable)
    if isinstance(condition, StringEquals):
        value = paths.get(data, condition.variable)
        return isinstance(value, str) and value == condition.value
    assert isinstance(condition, And)
    return all(_holds(c, data) for c in condition.conditions)


class LocalRunner:
    def __init__(
        self,
        workflow: Workflow,
        tasks: Mapping[str, TaskFunction],
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_concurrency: int = 8,
        after_task: Callable[[str, Any], None] | None = None,
    ) -> None:
        missing = workflow.tasks() - set(tasks)
        if missing:
            raise ValueError(f"no function for tasks {sorted(missing)}")
        self.workflow = workflow
        self.tasks = dict(tasks)
        self.sleep = sleep
        self.max_concurrency = max(1, max_concurrency)
        self.after_task = after_task
        self._lock = threading.Lock()

    def run(self, data: Any) -> Execution:
        trail: list[str] = []
        try:
            output = self._execute(self.workflow, data, trail, prefix="")
        except StateFailure as failure:
            return Execution("FAILED", error=failure.error, cause=failure.cause, states=trail)
        return Execution("SUCCEEDED", output=output, states=trail)

    # -- the state loop --------------------------------------------------------------------------

    def _execute(self, workflow: Workflow, data: Any, trail: list[str], *, prefix: str) -> Any:
        state: State | None = workflow.state(workflow.start_at)
        while state is not None:
            with self._lock:
                trail.append(prefix + state.name)
            next_name: str | None
            if isinstance(state, Succeed):
                return data
            if isinstance(state, Fail):
                raise StateFailure(state.error, state.cause)
            if isinstance(state, Pass):
                if state.result is not None:
                    data = paths.put(data, state.result_path, state.result)
                next_name = state.next
            elif isinstance(state, Choice):
                next_name = self._choose(state, data)
            else:
                data, next_name = self._with_retry_and_catch(state, data, trail, prefix)
            if next_name is None:
                return data
            state = workflow.state(next_name)
        return data

    def _choose(self, state: Choice, data: Any) -> str:
        try:
            for rule in state.rules:
                if _holds(rule.condition, data):
                    return rule.next
        except paths.PathError as exc:
            raise StateFailure(RUNTIME_ERROR, f"state {state.name}: {exc}") from exc
        return state.default

    def _with_retry_and_catch(
        self, state: Task | Map, data: Any, trail: list[str], prefix: str
    ) -> tuple[Any, str | None]:
        attempts: dict[int, int] = {}
        while True:
            try:
                result = self._task(state, data) if isinstance(state, Task) else self._map(state, data, trail, prefix)
                return paths.put(data, state.result_path, result), state.next
            except paths.PathError as exc:
                failure = StateFailure(RUNTIME_ERROR, f"state {state.name}: {exc}")
            except Exception as exc:
                failure = error_of(exc)
            retrier = self._retrier(state.retry, failure.error, attempts)
            if retrier is not None:
                self.sleep(retrier.delay(attempts[id(retrier)]))
                continue
            catcher = self._catcher(state.catch, failure.error)
            if catcher is None:
                raise failure
            caught = {"Error": failure.error, "Cause": failure.cause}
            return paths.put(data, catcher.result_path, caught), catcher.next

    @staticmethod
    def _retrier(retriers: tuple[Retry, ...], error: str, attempts: dict[int, int]) -> Retry | None:
        for retrier in retriers:
            if _matches(retrier.errors, error):
                used = attempts.get(id(retrier), 0)
                if used >= retrier.max_attempts:
                    return None  # the first matching retrier decides, even when it is exhausted
                attempts[id(retrier)] = used + 1
                return retrier
        return None

    @staticmethod
    def _catcher(catchers: tuple[Catch, ...], error: str) -> Catch | None:
        return next((c for c in catchers if _matches(c.errors, error)), None)

    # -- Task and Map ------------------------------------------------------------------------------

    def _task(self, state: Task, data: Any) -> Any:
        result = self.tasks[state.task](data)
        if self.after_task is not None:
            self.after_task(state.name, result)
        return result

    def _map(self, state: Map, data: Any, trail: list[str], prefix: str) -> list[Any]:
        items = paths.get(data, state.items_path)
        if not isinstance(items, list):
            raise paths.PathError(f"{state.items_path} is not an array")
        inputs = [self._item_input(state, data, item, index) for index, item in enumerate(items)]
        inner = f"{prefix}{state.name}/"
        limit = min(state.max_concurrency or self.max_concurrency, self.max_concurrency)
        if limit <= 1 or len(inputs) <= 1:
            return [self._execute(state.processor, item, trail, prefix=inner) for item in inputs]
        pool = ThreadPoolExecutor(max_workers=min(limit, len(inputs)), thread_name_prefix="fhirflow-map")
        try:
            futures: list[Future[Any]] = [
                pool.submit(self._execute, state.processor, item, trail, prefix=inner) for item in inputs
            ]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in futures:
                if future in done and future.exception() is not None:
                    # Like Step Functions: the first failing iteration fails the Map; the rest stop.
                    for other in futures:
                        other.cancel()
                    future.result()
            return [future.result() for future in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _item_input(state: Map, data: Any, item: Any, index: int) -> Any:
        if not state.item_selector:
            return item
        built: dict[str, Any] = {}
        for key, value in state.item_selector.items():
            if not key.endswith(".$"):
                built[key] = value
            elif value == "$$.Map.Item.Value":
                built[key[:-2]] = item
            elif value == "$$.Map.Item.Index":
                built[key[:-2]] = index
            else:
                built[key[:-2]] = paths.get(data, str(value))
        return built
