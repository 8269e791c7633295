"""The bundle workflow on Step Functions: both state machines carry exactly the ASL the Python
definition generates, each task resolves to its own step function, the bundle service may run
them, and the sweeper runs on a schedule."""

from __future__ import annotations

import json
from typing import Any

from fhirflow.adapters.aws.stepfunctions import SYNC_EXECUTION_SECONDS, SYNC_READ_TIMEOUT_SECONDS
from fhirflow.settings import Settings
from fhirflow_bundle.transaction.definition import TASKS, transaction_workflow
from fhirflow_infra.transactions import EXPRESS_LIMIT_SECONDS, SWEEP_INTERVAL, step_handlers
from tests.infra.conftest import Synthesized


def _machines(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    return {
        m["Properties"]["StateMachineType"]: m["Properties"]
        for m in synthesized.resources("AWS::StepFunctions::StateMachine").values()
    }


def _policy_statements(synthesized: Synthesized, role_ref: dict[str, Any]) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for policy in synthesized.resources("AWS::IAM::Policy").values():
        if role_ref in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _actions(statements: list[dict[str, Any]], resource: Any) -> set[str]:
    found: set[str] = set()
    for statement in statements:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if resource in resources:
            actions = statement["Action"]
            found.update([actions] if isinstance(actions, str) else actions)
    return found


def test_an_express_and_a_standard_machine_run_the_generated_definition(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    settings: Settings = stack.settings
    machines = _machines(synthesized)
    assert sorted(machines) == ["EXPRESS", "STANDARD"]
    functions = synthesized.resources("AWS::Lambda::Function")
    for kind, timeout in (
        ("EXPRESS", min(settings.transaction_timeout_seconds, SYNC_EXECUTION_SECONDS)),
        ("STANDARD", settings.transaction_timeout_seconds),
    ):
        machine = machines[kind]
        substitutions = machine["DefinitionSubstitutions"]
        placeholders = {task: next(k for k in substitutions if k.lower() == f"{task}functionarn") for task in TASKS}
        expected = transaction_workflow(
            max_concurrency=settings.transaction_max_concurrency, timeout_seconds=timeout
        ).to_asl({task: "${" + placeholder + "}" for task, placeholder in placeholders.items()})
        assert json.loads(machine["DefinitionString"]) == expected
        assert expected["TimeoutSeconds"] == timeout <= (EXPRESS_LIMIT_SECONDS if kind == "EXPRESS" else timeout)
        for task, placeholder in placeholders.items():
            [logical, attribute] = substitutions[placeholder]["Fn::GetAtt"]
            assert attribute == "Arn"
            assert functions[logical]["Properties"]["Handler"] == step_handlers()[task]
        assert machine["TracingConfiguration"] == {"Enabled": True}
        logging = machine["LoggingConfiguration"]
        assert logging["Level"] == "ALL"
        assert logging["IncludeExecutionData"] is False  # states carry ids only; never resources
        log_group = logging["Destinations"][0]["CloudWatchLogsLogGroup"]["LogGroupArn"]["Fn::GetAtt"][0]
        key = synthesized.logical_id(stack.data_key)
        assert synthesized.template["Resources"][log_group]["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [key, "Arn"]}


def test_each_machine_may_invoke_its_step_functions(synthesized: Synthesized) -> None:
    transactions = synthesized.stack.transactions
    for machine in (transactions.express, transactions.standard):
        role = {"Ref": synthesized.stack.get_logical_id(machine.role.node.default_child)}
        statements = _policy_statements(synthesized, role)
        for task in TASKS:
            arn = {"Fn::GetAtt": [synthesized.logical_id(transactions.functions[task].function), "Arn"]}
            assert "lambda:InvokeFunction" in _actions(statements, arn), task
        sweeper = {"Fn::GetAtt": [synthesized.logical_id(transactions.functions["sweep"].function), "Arn"]}
        assert "lambda:InvokeFunction" not in _actions(statements, sweeper)


def test_the_bundle_service_runs_transactions_and_reads_async_executions(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    bundle = stack.api_functions["bundle"]
    variables = synthesized.template["Resources"][synthesized.logical_id(bundle.function)]["Properties"]["Environment"][
        "Variables"
    ]
    express = {"Ref": synthesized.logical_id(stack.transactions.express)}
    standard = {"Ref": synthesized.logical_id(stack.transactions.standard)}
    assert variables["FHIRFLOW_TRANSACTION_STATE_MACHINE"] == express
    assert variables["FHIRFLOW_TRANSACTION_ASYNC_STATE_MACHINE"] == standard
    statements = _policy_statements(synthesized, {"Ref": stack.get_logical_id(bundle.role.node.default_child)})
    assert "states:StartSyncExecution" in _actions(statements, express)
    assert "states:StartExecution" in _actions(statements, standard)
    assert any("states:DescribeExecution" in _actions([s], s["Resource"]) for s in statements)
    # Only the bundle service starts them.
    for name, function in stack.api_functions.items():
        if name != "bundle":
            others = _policy_statements(synthesized, {"Ref": stack.get_logical_id(function.role.node.default_child)})
            assert not any(str(a).startswith("states:") for s in others for a in _actions([s], s["Resource"])), name


def test_step_functions_reach_the_table_and_blobs(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    table = {"Fn::GetAtt": [synthesized.logical_id(stack.tables.table), "Arn"]}
    blobs = {"Fn::Join": ["", [{"Fn::GetAtt": [synthesized.logical_id(stack.buckets.blobs), "Arn"]}, "/*"]]}
    # TransactWriteItems needs the item actions it carries; the sweeper queries the open-transactions GSI.
    needed = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:ConditionCheckItem"}
    needed |= {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchWriteItem"}
    for name, function in stack.transactions.functions.items():
        statements = _policy_statements(synthesized, {"Ref": stack.get_logical_id(function.role.node.default_child)})
        assert needed <= _actions(statements, table), name
        assert {"s3:PutObject", "s3:GetObject*", "s3:DeleteObject*"} <= _actions(statements, blobs), name


def test_the_sweeper_runs_on_a_schedule(synthesized: Synthesized) -> None:
    sweeper = synthesized.logical_id(synthesized.stack.transactions.functions["sweep"].function)
    schedule = synthesized.resources("AWS::Scheduler::Schedule")[
        synthesized.logical_id(synthesized.stack.transactions.sweep_schedule)
    ]
    props = schedule["Properties"]
    assert props["ScheduleExpression"] == f"rate({SWEEP_INTERVAL.to_minutes():.0f} minute)"
    assert props["State"] == "ENABLED"
    assert props["Target"]["Arn"] == {"Fn::GetAtt": [sweeper, "Arn"]}


def test_staged_batches_and_async_answers_expire(synthesized: Synthesized) -> None:
    bucket = synthesized.template["Resources"][synthesized.logical_id(synthesized.stack.buckets.blobs)]
    rules = {r.get("Prefix"): r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["transactions/"]["ExpirationInDays"] <= 7
    assert rules["async/"]["ExpirationInDays"] <= 30


def test_no_blob_version_is_kept_forever(synthesized: Synthesized) -> None:
    """The blobs bucket is versioned: what a delete or overwrite replaced expires too, soon for the
    scratch prefixes (staged batches, async request bodies), after the recovery window elsewhere."""
    bucket = synthesized.template["Resources"][synthesized.logical_id(synthesized.stack.buckets.blobs)]
    assert bucket["Properties"]["VersioningConfiguration"]["Status"] == "Enabled"
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    everywhere = [r for r in rules if "Prefix" not in r and r["Status"] == "Enabled"]
    assert any(r.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays", 0) > 0 for r in everywhere)
    by_prefix = {r.get("Prefix"): r for r in rules}
    for prefix in ("transactions/", "async/"):
        assert by_prefix[prefix]["NoncurrentVersionExpiration"]["NoncurrentDays"] <= 1


def test_the_prepare_step_may_search_the_index(synthesized: Synthesized) -> None:
    """Prepare runs a ``Prefer: respond-async`` bundle: its conditional references and search
    entries are searches, which the domain refuses to a role it does not name."""
    stack = synthesized.stack
    prepare = stack.transactions.functions["prepare"]
    role = stack.get_logical_id(prepare.role.node.default_child)
    domain = synthesized.logical_id(stack.search.domain)
    search_path = f"/{stack.search.index}/_search"
    searched = {"Fn::Join": ["", [{"Fn::GetAtt": [domain, "Arn"]}, search_path]]}
    assert "es:ESHttpPost" in _actions(_policy_statements(synthesized, {"Ref": role}), searched)
    policy = synthesized.template["Resources"][domain]["Properties"]["AccessPolicies"]["Statement"]
    assert any(
        s["Principal"]["AWS"] == {"Fn::GetAtt": [role, "Arn"]} and search_path in json.dumps(s["Resource"])
        for s in policy
    )


def test_a_synchronous_transaction_ends_inside_its_callers_time(synthesized: Synthesized) -> None:
    """The Express execution times out before StartSyncExecution's read does, and that before the
    bundle Lambda and API Gateway's 29 s: the bundle service always learns how the execution ended
    and has time left to decide the outcome, so no client gets a 5xx for a transaction that commits."""
    stack = synthesized.stack
    express = _machines(synthesized)["EXPRESS"]
    machine_timeout = json.loads(express["DefinitionString"])["TimeoutSeconds"]
    bundle = synthesized.template["Resources"][synthesized.logical_id(stack.api_functions["bundle"].function)]
    lambda_timeout = bundle["Properties"]["Timeout"]
    assert machine_timeout + 3 <= SYNC_READ_TIMEOUT_SECONDS
    assert SYNC_READ_TIMEOUT_SECONDS + 3 <= lambda_timeout < 29
