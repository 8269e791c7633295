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
    expected.append("fhirflow_search.reindex_handler.lambda_handler")  # the SQS $reindex worker (test_reindex.py)
    # The subscriptions matcher, deliverer and ticker (tests/infra/test_subscriptions.py).
    expected += [f"fhirflow_subscriptions.aws.{e}" for e in ("match_handler", "deliver_handler", "tick_handler")]
    expected.append("fhirflow_index_sync.provision.on_event")  # the index at deploy (test_index_provision.py)
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


def test_each_function_has_its_own_service_name_in_logs_metrics_and_traces(synthesized: Synthesized) -> None:
    names = {
        props["Properties"]["Handler"]: props["Properties"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
        for props in _functions(synthesized).values()
    }
    assert len(set(names.values())) == len(names), names
    assert names["fhirflow_crud.handler.lambda_handler"] == "crud"
    assert names["fhirflow_bundle.transaction.handlers.prepare"] == "bundle-prepare"
    assert names["fhirflow_subscriptions.aws.match_handler"] == "subscriptions-match"
    assert names["fhirflow_export.handler.worker_handler"] == "export-worker"


def test_the_code_asset_holds_each_handler(synthesized: Synthesized) -> None:
    for function in _functions(synthesized).values():
        module, _, attribute = function["Properties"]["Handler"].rpartition(".")
        assert (synthesized.code_dir / (module.replace(".", "/") + ".py")).is_file()
        assert callable(getattr(importlib.import_module(module), attribute))
    assert (synthesized.code_dir / "fhirflow" / "routes.py").is_file()
    assert (synthesized.code_dir / "fhirflow_contracts" / "__init__.py").is_file()


def test_the_code_asset_ships_python_3_12_bytecode_that_needs_no_source_check(synthesized: Synthesized) -> None:
    """Lambda's /var/task is read-only: bytecode not shipped is compiled again on every cold start.
    It must be 3.12's (the runtime's magic number) and unchecked-hash (PEP 552), as the asset's
    zip does not keep the modification times a timestamp-checked .pyc compares."""
    import subprocess

    from fhirflow_infra.packaging import BYTECODE_TAG, python312

    magic = bytes.fromhex(
        subprocess.run(
            [python312(), "-c", "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    sources = list(synthesized.code_dir.rglob("*.py"))
    assert len(sources) > 100
    for source in sources:
        compiled = source.parent / "__pycache__" / f"{source.stem}.{BYTECODE_TAG}.pyc"
        header = compiled.read_bytes()[:8]
        assert header[:4] == magic, compiled
        assert int.from_bytes(header[4:8], "little") == 0b01, compiled  # hash-based, source not checked


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
        # The cursor key stays in Secrets Manager: the environment names the secret, never its value.
        assert "FHIRFLOW_CURSOR_SECRET" not in env
        assert env["FHIRFLOW_CURSOR_SECRET_ARN"] == {"Ref": synthesized.logical_id(stack.cursor_key)}
        assert "resolve:secretsmanager" not in str(env)


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
        "rj#*": {"dynamodb:PutItem"},  # a kick-off creates a job; the reindex worker advances it
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


def _dlq_reason(resource: dict[str, Any]) -> str:
    rules = resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    [reason] = [rule["reason"] for rule in rules if rule["id"] == "HIPAA.Security-LambdaDLQ"]
    return str(reason)


def test_each_function_says_truly_why_it_needs_no_dead_letter_queue(synthesized: Synthesized) -> None:
    """HIPAA.Security-LambdaDLQ is acknowledged per function with how that function is invoked,
    and a function that is invoked asynchronously (the sweeper, by EventBridge Scheduler) is
    configured for it: no Lambda retries, stale events dropped."""
    functions = synthesized.resources("AWS::Lambda::Function")
    scheduled = {
        s["Properties"]["Target"]["Arn"]["Fn::GetAtt"][0]
        for s in synthesized.resources("AWS::Scheduler::Schedule").values()
    }
    mapped = {
        m["Properties"]["FunctionName"]["Ref"]: m["Properties"]
        for m in synthesized.resources("AWS::Lambda::EventSourceMapping").values()
    }
    async_configs = {
        c["Properties"]["FunctionName"]["Ref"]: c["Properties"]
        for c in synthesized.resources("AWS::Lambda::EventInvokeConfig").values()
    }
    stack = synthesized.stack
    api = {synthesized.logical_id(f.function) for f in stack.api_functions.values()}
    steps = {synthesized.logical_id(f.function) for n, f in stack.transactions.functions.items() if n != "sweep"}
    assert scheduled, "the sweeper runs on a schedule"
    for logical_id, function in functions.items():
        reason = _dlq_reason(function)
        if logical_id in scheduled:
            assert "asynchronously by EventBridge Scheduler" in reason, logical_id
            assert async_configs[logical_id]["MaximumRetryAttempts"] == 0
        elif logical_id in mapped:
            source = "DynamoDB stream" if "StartingPosition" in mapped[logical_id] else "SQS"
            assert f"{source} event source mapping" in reason, logical_id
        elif logical_id in api:
            assert "API Gateway" in reason, logical_id
        elif logical_id in steps:
            assert "state machine" in reason, logical_id
        assert "no Lambda asynchronously" not in reason, logical_id


def test_every_function_may_read_the_cursor_key_and_its_environment_holds_no_secret(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    secret = {"Ref": synthesized.logical_id(stack.cursor_key)}
    functions = _functions(synthesized)
    # Every function but the deploy-time index handler, which serves no request (no cursor to sign).
    assert len(stack.functions()) + 1 == len(functions)
    for function in stack.functions():
        statements = _policy_of(synthesized, function)
        reads = [s for s in statements if secret == s["Resource"] or secret in list(s["Resource"])]
        assert any("secretsmanager:GetSecretValue" in s["Action"] for s in reads), function.node.path
        env = functions[synthesized.logical_id(function.function)]["Properties"]["Environment"]["Variables"]
        assert "FHIRFLOW_CURSOR_SECRET" not in env
        assert env["FHIRFLOW_CURSOR_SECRET_ARN"] == secret


def test_every_function_knows_lambdas_real_payload_limits(synthesized: Synthesized) -> None:
    """Bodies arrive base64-encoded, so the largest that reaches a Lambda is three quarters of its
    6 MB payload (less the event around it); answers may not exceed 6 MB. The services answer 413
    OperationOutcomes at those limits rather than letting Lambda and API Gateway fail (502)."""
    from fhirflow_infra.function import LAMBDA_PAYLOAD_BYTES, MAX_REQUEST_BODY_BYTES

    assert LAMBDA_PAYLOAD_BYTES == 6 * 1024 * 1024
    assert MAX_REQUEST_BODY_BYTES * 4 / 3 < LAMBDA_PAYLOAD_BYTES - 128 * 1024
    for logical_id, function in _functions(synthesized).items():
        env = function["Properties"]["Environment"]["Variables"]
        assert int(env["FHIRFLOW_MAX_BODY_BYTES"]) == MAX_REQUEST_BODY_BYTES, logical_id
        assert int(env["FHIRFLOW_MAX_RESPONSE_BYTES"]) == LAMBDA_PAYLOAD_BYTES, logical_id
