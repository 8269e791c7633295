"""A small Python DSL for state machines: one definition, two executors.

``Workflow.to_asl`` renders the Amazon States Language the CDK app deploys to Step Functions;
:class:`fhirflow.workflow.runner.LocalRunner` executes the same objects in-process, calling Python
functions where the state machine calls Lambdas (DESIGN.md §6: "one Python definition of the
workflow produces both the ASL for CDK and the local runner's plan").

Only the ASL the bundle workflow needs is modelled, with Step Functions' meaning:

- ``Task``: call a task (a Lambda in AWS, a Python function locally) with the state as input;
  ``ResultPath`` places the result, ``Retry`` and ``Catch`` handle its errors;
- ``Map``: run a sub-workflow per item of an array (``ItemsPath``), each item's input built by
  ``ItemSelector`` (``$$.Map.Item.Value``/``Index`` and paths into the Map's input);
- ``Choice`` with ``IsPresent``, ``StringEquals`` and ``And``;
- ``Pass`` (optionally setting a constant ``Result`` at ``ResultPath``), ``Succeed``, ``Fail``.

Paths are the ``$.a.b`` subset of JSONPath (:mod:`fhirflow.workflow.paths`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ALL_ERRORS = "States.ALL"
TASK_FAILED = "States.TaskFailed"


@dataclass(frozen=True, slots=True)
class Retry:
    """Step Functions' retrier: ``max_attempts`` more tries after the first, waiting
    ``interval_seconds * backoff_rate ** (n - 1)`` (capped by ``max_delay_seconds``)."""

    errors: tuple[str, ...]
    max_attempts: int = 3
    interval_seconds: float = 1.0
    backoff_rate: float = 2.0
    max_delay_seconds: int | None = None

    def delay(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (1-based)."""
        wait = self.interval_seconds * self.backoff_rate ** (attempt - 1)
        return min(wait, self.max_delay_seconds) if self.max_delay_seconds is not None else wait

    def to_asl(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ErrorEquals": list(self.errors),
            "MaxAttempts": self.max_attempts,
            # ASL requires a positive integer; sub-second intervals are a LocalRunner-only nicety.
            "IntervalSeconds": max(1, round(self.interval_seconds)),
            "BackoffRate": self.backoff_rate,
        }
        if self.max_delay_seconds is not None:
            out["MaxDelaySeconds"] = self.max_delay_seconds
        return out


@dataclass(frozen=True, slots=True)
class Catch:
    """On one of ``errors`` (after retries), go to ``next`` with ``{"Error", "Cause"}`` at ``result_path``."""

    errors: tuple[str, ...]
    next: str
    result_path: str | None = "$.error"

    def to_asl(self) -> dict[str, Any]:
        return {"ErrorEquals": list(self.errors), "Next": self.next, "ResultPath": self.result_path}


# -- Choice conditions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IsPresent:
    variable: str

    def to_asl(self) -> dict[str, Any]:
        return {"Variable": self.variable, "IsPresent": True}


@dataclass(frozen=True, slots=True)
class StringEquals:
    """Step Functions fails the execution (``States.Runtime``) when the variable is missing:
    combine with :class:`IsPresent` in an :class:`And` where it may be absent."""

    variable: str
    value: str

    def to_asl(self) -> dict[str, Any]:
        return {"Variable": self.variable, "StringEquals": self.value}


@dataclass(frozen=True, slots=True)
class And:
    conditions: tuple[Condition, ...]

    def to_asl(self) -> dict[str, Any]:
        return {"And": [c.to_asl() for c in self.conditions]}


Condition = IsPresent | StringEquals | And


@dataclass(frozen=True, slots=True)
class Rule:
    condition: Condition
    next: str

    def to_asl(self) -> dict[str, Any]:
        return {**self.condition.to_asl(), "Next": self.next}


# -- states -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    task: str
    """The task's key: resolved to a Lambda ARN by ``to_asl`` and to a Python function by the runner."""
    next: str | None = None
    """The following state; None ends the (sub-)workflow here."""
    retry: tuple[Retry, ...] = ()
    catch: tuple[Catch, ...] = ()
    result_path: str | None = "$"
    timeout_seconds: int | None = None
    comment: str = ""

    def to_asl(self, resources: Mapping[str, str]) -> dict[str, Any]:
        if self.task not in resources:
            raise KeyError(f"state {self.name}: no resource for task '{self.task}'")
        out: dict[str, Any] = {"Type": "Task", "Resource": resources[self.task]}
        if self.result_path != "$":
            out["ResultPath"] = self.result_path
        if self.timeout_seconds is not None:
            out["TimeoutSeconds"] = self.timeout_seconds
        return _finish(out, self.next, self.retry, self.catch, self.comment)


@dataclass(frozen=True, slots=True)
class Map:
    name: str
    items_path: str
    processor: Workflow
    item_selector: Mapping[str, Any] = field(default_factory=dict)
    """Each iteration's input; a key ending in ``.$`` takes its value from a path
    (``$$.Map.Item.Value``, ``$$.Map.Item.Index`` or a ``$.``-path into the Map's input)."""
    max_concurrency: int = 0
    """0: as many as Step Functions allows (the LocalRunner then uses its own cap)."""
    next: str | None = None
    retry: tuple[Retry, ...] = ()
    catch: tuple[Catch, ...] = ()
    result_path: str | None = "$"
    comment: str = ""

    def to_asl(self, resources: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "Type": "Map",
            "ItemsPath": self.items_path,
            "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, **self.processor.to_asl(resources)},
            "MaxConcurrency": self.max_concurrency,
        }
        if self.item_selector:
            out["ItemSelector"] = dict(self.item_selector)
        if self.result_path != "$":
            out["ResultPath"] = self.result_path
        return _finish(out, self.next, self.retry, self.catch, self.comment)


@dataclass(frozen=True, slots=True)
class Choice:
    name: str
    rules: tuple[Rule, ...]
    default: str
    comment: str = ""

    def to_asl(self, resources: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {"Type": "Choice", "Choices": [r.to_asl() for r in self.rules], "Default": self.default}
        if self.comment:
            out["Comment"] = self.comment
        return out


@dataclass(frozen=True, slots=True)
class Pass:
    name: str
    next: str | None = None
    result: Any = None
    """A constant placed at ``result_path``; None passes the input through unchanged."""
    result_path: str | None = "$"
    comment: str = ""

    def to_asl(self, resources: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {"Type": "Pass"}
        if self.result is not None:
            out["Result"] = self.result
            out["ResultPath"] = self.result_path
        return _finish(out, self.next, (), (), self.comment)


@dataclass(frozen=True, slots=True)
class Succeed:
    name: str
    comment: str = ""

    def to_asl(self, resources: Mapping[str, str]) -> dict[str, Any]:
        return {"Type": "Succeed", **({"Comment": self.comment} if self.comment else {})}


@dataclass(frozen=True, slots=True)
class Fail:
    name: str
    error: str
    cause: str = ""
    comment: str = ""

    def to_asl(self, resources: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {"Type": "Fail", "Error": self.error}
        if self.cause:
            out["Cause"] = self.cause
        if self.comment:
            out["Comment"] = self.comment
        return out


State = Task | Map | Choice | Pass | Succeed | Fail


def _finish(
    out: dict[str, Any], next_: str | None, retry: tuple[Retry, ...], catch: tuple[Catch, ...], comment: str
) -> dict[str, Any]:
    if comment:
        out["Comment"] = comment
    if retry:
        out["Retry"] = [r.to_asl() for r in retry]
    if catch:
        out["Catch"] = [c.to_asl() for c in catch]
    if next_ is None:
        out["End"] = True
    else:
        out["Next"] = next_
    return out


def _targets(state: State) -> list[str]:
    if isinstance(state, Choice):
        return [r.next for r in state.rules] + [state.default]
    if isinstance(state, Task | Map):
        return ([state.next] if state.next else []) + [c.next for c in state.catch]
    if isinstance(state, Pass):
        return [state.next] if state.next else []
    return []


@dataclass(frozen=True, slots=True)
class Workflow:
    start_at: str
    states: tuple[State, ...]
    comment: str = ""
    timeout_seconds: int | None = None

    def __post_init__(self) -> None:
        names = [s.name for s in self.states]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"state names must be unique: {duplicates}")
        known = set(names)
        if self.start_at not in known:
            raise ValueError(f"StartAt names no state: {self.start_at}")
        for state in self.states:
            missing = [t for t in _targets(state) if t not in known]
            if missing:
                raise ValueError(f"state {state.name} goes to unknown states {missing}")
        unreachable = known - self._reachable()
        if unreachable:
            raise ValueError(f"states that nothing reaches: {sorted(unreachable)}")

    def _reachable(self) -> set[str]:
        by_name = {s.name: s for s in self.states}
        seen: set[str] = set()
        stack = [self.start_at]
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.add(name)
                stack.extend(_targets(by_name[name]))
        return seen

    def state(self, name: str) -> State:
        for state in self.states:
            if state.name == name:
                return state
        raise KeyError(name)

    def tasks(self) -> set[str]:
        """Every task key used, in Map processors too (what ``to_asl`` needs a resource for)."""
        found: set[str] = set()
        for state in self.states:
            if isinstance(state, Task):
                found.add(state.task)
            elif isinstance(state, Map):
                found |= state.processor.tasks()
        return found

    def to_asl(self, resources: Mapping[str, str]) -> dict[str, Any]:
        """The Amazon States Language document, with each task's ``Resource`` from ``resources``."""
        out: dict[str, Any] = {"StartAt": self.start_at}
        if self.comment:
            out["Comment"] = self.comment
        if self.timeout_seconds is not None:
            out["TimeoutSeconds"] = self.timeout_seconds
        out["States"] = {s.name: s.to_asl(resources) for s in self.states}
        return out
