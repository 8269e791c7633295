"""Every Lambda is built the same way (FhirFunction), runs the repo's handler, and may touch only
what its capability granted."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from tests.infra.conftest import Synthesized


def _functions(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    return synthesized.resources("AWS::Lambda::Function")


def _policy_of(synthesized: Synthesized, function: Any) -> list[dict[str, Any]]:
    role = synthesized.stack.get_logical_id(function.role.node.default_child)
    statements: list[dict[str, Any]] = []
    for policy in synthesized.resources("AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _grants_on(statements: list[dict[str, Any]], logical_id: str) -> set[str]:
    """The actions granted on a resource (its ARN, or anything under it)."""
    actions: set[str] = set()
    for statement in statements:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if logical_id in str(resources):
            granted = statement["Action"]
            actions.update([granted] if isinstance(granted, str) else granted)
    return actions


def test_one_function_per_routed_service_and_one_for_index_sync(synthesized: Synthesized) -> None:
    from fhirflow.routes import ROUTES
    from fhirflow_infra.packaging import service_packages
    from fhirflow_infra.transactions import step_handlers

    packages = service_packages()
    handlers = sorted(f["Properties"]["Handler"] for f in _functions(synthesized).values())
    deployed = {route.service for route in ROUTES} | {"index-sync"}
    # ... and one per task step of the bundle workflow, plus its sweeper (tests/infra/test_transactions.py).
    expected = [packages[service].handler for service in deployed] + list(step_handlers().values())
    expected.append("fhirflow_export.handler.worker_handler")  # the SQS export worker (tests/infra/test_export.py)
    # The subscriptions matcher, deliverer and ticker (tests/infra/test_subscriptions.py).
    expected += [f"fhirflow_subscriptions.aws.{e}" for e in ("match_handler", "deliver_handler", "tick_handler")]
    assert handlers == sorted(expected)


def test_every_function_is_arm64_python312_traced_with_json_logs(synthesized: Synthesized) -> None:
    from aws_cdk.assertions import Match

    synthesized.assertions.all_resources_properties(
        "AWS::Lambda::Function",
        {
            "Architectures": ["arm64"],
            "Runtime": "python3.12",
            "TracingConfig": {"Mode": "Active"},
            "LoggingConfig": Match.object_like({"LogFormat": "JSON", "ApplicationLogLevel": "INFO"}),
        },
    )
    log_groups = synthesized.resources("AWS::Logs::LogGroup")
    key = synthesized.logical_id(synthesized.stack.data_key)
    for name, function in _functions(synthesized).items():
        props = function["Properties"]
        assert props["Architectures"] == ["arm64"], name
        assert props["Runtime"] == "python3.12", name
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        assert props["LoggingConfig"]["LogFormat"] == "JSON", name
        log_group = log_groups[props["LoggingConfig"]["LogGroup"]["Ref"]]["Properties"]
        assert log_group["KmsKeyId"] == {"Fn::GetAtt": [key, "Arn"]}, name
        assert log_group["RetentionInDays"] >= 365, name
        assert props["KmsKeyArn"] == {"Fn::GetAtt": [key, "Arn"]}, name
        assert props["Layers"] == [{"Ref": synthesized.logical_id(synthesized.stack.layer)}], name
        assert props["Environment"]["Variables"]["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false", name


def test_the_code_asset_holds_each_handler_and_no_bytecode(synthesized: Synthesized) -> None:
    for function in _functions(synthesized).values():
        module, _, attribute = function["Properties"]["Handler"].rpartition(".")
        assert (synthesized.code_dir / (module.replace(".", "/") + ".py")).is_file()
        assert callable(getattr(importlib.import_module(module), attribute))
    assert (synthesized.code_dir / "fhirflow" / "routes.py").is_file()
    assert (synthesized.code_dir / "fhirflow_contracts" / "__init__.py").is_file()
    assert not list(synthesized.code_dir.rglob("__pycache__"))


def test_the_environment_wires_the_stacks_resources(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    for function in _functions(synthesized).values():
        env = function["Properties"]["Environment"]["Variables"]
        assert env["FHIRFLOW_STORE"] == "dynamodb"
        assert env["FHIRFLOW_DYNAMODB_TABLE"] == {"Ref": synthesized.logical_id(stack.tables.table)}
        assert env["FHIRFLOW_DYNAMODB_LEDGER_TABLE"] == {"Ref": synthesized.logical_id(stack.tables.ledger)}
        assert env["FHIRFLOW_BLOB_BUCKET"] == {"Ref": synthesized.logical_id(stack.buckets.blobs)}
        assert env["FHIRFLOW_EVENTS"] == "eventbridge"
        assert env["FHIRFLOW_EVENT_BUS"] == {"Ref": synthesized.logical_id(stack.change_events.bus)}
        assert env["FHIRFLOW_AUTH"] == "smart"
        assert env["FHIRFLOW_AUTH_ISSUER"] == "https://idp.example.org/realms/fhir"
        assert "FHIRFLOW_AUTH_DEV_ISSUER" not in env
        assert "AWS_REGION" not in env, "Lambda sets it"
        # The cursor key is a dynamic reference that CloudFormation resolves, never a literal.
        cursor = str(env["FHIRFLOW_CURSOR_SECRET"])
        assert "{{resolve:secretsmanager:" in cursor
        assert synthesized.logical_id(stack.cursor_key) in cursor


def _writes(statements: list[dict[str, Any]], logical_id: str) -> dict[str, set[str]]:
    """Write actions on a resource by the partition key prefixes they are limited to ("*": none)."""
    out: dict[str, set[str]] = {}
    for statement in statements:
        if logical_id not in str(statement["Resource"]):
            continue
        granted = statement["Action"]
        actions = [granted] if isinstance(granted, str) else granted
        condition = statement.get("Condition", {}).get("ForAllValues:StringLike", {})
        for prefix in condition.get("dynamodb:LeadingKeys", ["*"]):
            out.setdefault(prefix, set()).update(
                a
                for a in actions
                if a.startswith(("dynamodb:Put", "dynamodb:Update", "dynamodb:Delete", "dynamodb:Batch"))
                and a != "dynamodb:BatchGetItem"
            )
    return {prefix: actions for prefix, actions in out.items() if actions}


def test_search_only_reads_resources_and_writes_search_parameter_and_reindex_items(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    statements = _policy_of(synthesized, stack.api_functions["search"])
    on_table = _grants_on(statements, synthesized.logical_id(stack.tables.table))
    assert "dynamodb:Query" in on_table
    assert _writes(statements, synthesized.logical_id(stack.tables.table)) == {
        "sp#*": {"dynamodb:PutItem", "dynamodb:DeleteItem"},
        "rj#*": {"dynamodb:PutItem", "dynamodb:UpdateItem"},
    }
    on_blobs = _grants_on(statements, synthesized.logical_id(stack.buckets.blobs))
    assert on_blobs
    assert not [a for a in on_blobs if a.startswith(("s3:Put", "s3:Delete"))]


@pytest.mark.parametrize("service", ["crud", "bundle"])
def test_api_functions_reach_the_store_and_blobs_but_not_the_ledger_or_bus(
    synthesized: Synthesized, service: str
) -> None:
    stack = synthesized.stack
    statements = _policy_of(synthesized, stack.api_functions[service])
    assert {"dynamodb:PutItem", "dynamodb:Query"} <= _grants_on(statements, synthesized.logical_id(stack.tables.table))
    assert {"s3:PutObject"} <= _grants_on(statements, synthesized.logical_id(stack.buckets.blobs))
    assert not _grants_on(statements, synthesized.logical_id(stack.tables.ledger))
    assert not _grants_on(statements, synthesized.logical_id(stack.change_events.bus))
    assert not _grants_on(statements, synthesized.logical_id(stack.buckets.exports))


def test_index_sync_reads_the_stream_and_blobs_and_writes_only_ledger_bus_and_search_parameters(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    statements = _policy_of(synthesized, stack.index_sync.handler)
    on_table = _grants_on(statements, synthesized.logical_id(stack.tables.table))
    stream = {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator"}
    # and the runtime search parameter items it records SearchParameters in (docs/dynamodb.md)
    assert on_table == stream | {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem", "dynamodb:DeleteItem"}
    assert _writes(statements, synthesized.logical_id(stack.tables.table)) == {
        "sp#*": {"dynamodb:PutItem", "dynamodb:DeleteItem"}
    }
    on_blobs = _grants_on(statements, synthesized.logical_id(stack.buckets.blobs))
    assert on_blobs
    assert not [a for a in on_blobs if a.startswith(("s3:Put", "s3:Delete"))]
    on_ledger = _grants_on(statements, synthesized.logical_id(stack.tables.ledger))
    assert on_ledger == {"dynamodb:BatchGetItem", "dynamodb:BatchWriteItem"}
    assert _grants_on(statements, synthesized.logical_id(stack.change_events.bus)) == {"events:PutEvents"}


def test_lambda_roles_have_no_managed_policies(synthesized: Synthesized) -> None:
    """No AWSLambdaBasicExecutionRole: each role writes only its own log group."""
    lambda_roles = [
        role["Properties"]
        for role in synthesized.resources("AWS::IAM::Role").values()
        if "lambda.amazonaws.com" in str(role["Properties"]["AssumeRolePolicyDocument"])
    ]
    assert len(lambda_roles) == len(_functions(synthesized))
    assert all(not role.get("ManagedPolicyArns") for role in lambda_roles)
