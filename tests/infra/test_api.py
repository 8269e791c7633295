"""The REST API is the route table: one method per route, integrated with its service's Lambda."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fhirflow.routes import ROUTES, Route
from tests.infra.conftest import Synthesized


def _path(route: Route) -> str:
    return "/" + "/".join(route.segments)


def _resource_paths(synthesized: Synthesized) -> dict[str, str]:
    """Logical id of each API Gateway resource → its full path, rebuilt from ParentId/PathPart."""
    resources = synthesized.resources("AWS::ApiGateway::Resource")
    paths: dict[str, str] = {}

    def path_of(logical_id: str) -> str:
        if logical_id not in paths:
            props = resources[logical_id]["Properties"]
            parent = props["ParentId"]
            prefix = path_of(parent["Ref"]) if "Ref" in parent else ""  # GetAtt RootResourceId: the root
            paths[logical_id] = f"{prefix.rstrip('/')}/{props['PathPart']}"
        return paths[logical_id]

    for logical_id in resources:
        path_of(logical_id)
    return paths


def _function_of(integration_uri: Any) -> str:
    """The function logical id inside an AWS_PROXY integration URI (a Fn::Join with a GetAtt)."""
    for part in integration_uri["Fn::Join"][1]:
        if isinstance(part, dict) and "Fn::GetAtt" in part:
            return str(part["Fn::GetAtt"][0])
    raise AssertionError(f"no function in {integration_uri}")


def _methods(synthesized: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    paths = _resource_paths(synthesized)
    methods: dict[tuple[str, str], dict[str, Any]] = {}
    for props in (m["Properties"] for m in synthesized.resources("AWS::ApiGateway::Method").values()):
        resource = props["ResourceId"]
        path = paths[resource["Ref"]] if "Ref" in resource else "/"
        methods[(props["HttpMethod"], path)] = props
    return methods


def test_the_api_has_exactly_one_method_per_route(synthesized: Synthesized) -> None:
    expected = {(route.method, _path(route)) for route in ROUTES}
    assert set(_methods(synthesized)) == expected
    assert len(expected) == len(ROUTES)


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.pattern}")
def test_each_route_invokes_the_lambda_of_its_service(synthesized: Synthesized, route: Route) -> None:
    method = _methods(synthesized)[(route.method, _path(route))]
    integration = method["Integration"]
    assert integration["Type"] == "AWS_PROXY"
    assert integration["IntegrationHttpMethod"] == "POST"
    service_function = synthesized.stack.api_functions[route.service].function
    assert _function_of(integration["Uri"]) == synthesized.logical_id(service_function)
    # Authorization is the service's (SMART), so the gateway lets the request through to it.
    assert method["AuthorizationType"] == "NONE"


def test_the_resource_tree_is_explicit_with_the_tables_path_parameters(synthesized: Synthesized) -> None:
    paths = set(_resource_paths(synthesized).values())
    assert not [p for p in paths if "+" in p], "no greedy {proxy+} resources"
    expected_parameters = {s for route in ROUTES for s in route.segments if s.startswith("{")}
    parameters = {part for p in paths for part in p.split("/") if part.startswith("{")}
    assert parameters == expected_parameters


def test_each_method_invokes_its_own_function_and_only_this_api_may_invoke_them(synthesized: Synthesized) -> None:
    permissions = [p["Properties"] for p in synthesized.resources("AWS::Lambda::Permission").values()]
    api_permissions = [p for p in permissions if p["Principal"] == "apigateway.amazonaws.com"]
    functions = {service: synthesized.logical_id(f.function) for service, f in synthesized.stack.api_functions.items()}
    # One permission per function (not per method: the stack must stay under CloudFormation's 500
    # resources), for this API's stage only, never for test-invoke.
    assert sorted(json.dumps(p["FunctionName"]) for p in api_permissions) == sorted(
        json.dumps({"Fn::GetAtt": [f, "Arn"]}) for f in functions.values()
    )
    (api_id,) = synthesized.resources("AWS::ApiGateway::RestApi")
    for permission in api_permissions:
        source = json.dumps(permission["SourceArn"])
        assert api_id in source
        assert "test-invoke-stage" not in source
    methods = {
        (m["Properties"]["HttpMethod"], m["Properties"]["ResourceId"].get("Ref")): m["Properties"]
        for m in synthesized.resources("AWS::ApiGateway::Method").values()
    }
    paths = _resource_paths(synthesized)
    by_path = {(method, paths.get(resource, "/")): props for (method, resource), props in methods.items()}
    for route in ROUTES:
        integration = by_path[(route.method, route.pattern)]["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        targets = [f for f in functions.values() if f'"{f}"' in json.dumps(integration["Uri"])]
        assert targets == [functions[route.service]], f"{route.method} {route.pattern}"


def test_stage_traces_and_logs_without_bodies(synthesized: Synthesized) -> None:
    _, stage = synthesized.only("AWS::ApiGateway::Stage")
    props = stage["Properties"]
    assert props["TracingEnabled"] is True
    assert props["MethodSettings"][0]["DataTraceEnabled"] is False
    assert props["MethodSettings"][0]["LoggingLevel"] in ("ERROR", "INFO")
    fields = json.loads(props["AccessLogSetting"]["Format"])
    assert "requestId" in fields
    assert not [v for v in fields.values() if "querystring" in v.lower() or "body" in v.lower()]


def test_the_api_compresses_from_the_local_gateways_minimum_size(synthesized: Synthesized) -> None:
    """API Gateway gzips answers for clients that accept it, from the size the local gateway uses."""
    from fhirflow.compression import MIN_COMPRESSED_BYTES

    _, api = synthesized.only("AWS::ApiGateway::RestApi")
    assert api["Properties"]["MinimumCompressionSize"] == MIN_COMPRESSED_BYTES == 1024


def test_unknown_paths_get_an_operation_outcome_404(synthesized: Synthesized) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in synthesized.resources("AWS::ApiGateway::GatewayResponse").values()
    }
    missing = responses["MISSING_AUTHENTICATION_TOKEN"]
    assert missing["StatusCode"] == "404"
    assert missing["ResponseParameters"]["gatewayresponse.header.Content-Type"] == "'application/fhir+json'"
    for response in responses.values():
        rendered = response["ResponseTemplates"]["application/json"].replace(
            "$context.error.messageString", json.dumps("Missing Authentication Token")
        )
        outcome = json.loads(rendered)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["diagnostics"] == "Missing Authentication Token"


def test_a_route_to_a_service_without_a_lambda_fails_the_synth() -> None:
    from aws_cdk import App, Stack
    from aws_cdk import aws_kms as kms

    from fhirflow_infra.api import FhirApi

    stack = Stack(App(), "Routes")
    with pytest.raises(ValueError, match="search"):
        FhirApi(
            stack,
            "Api",
            functions={},
            key=kms.Key(stack, "Key"),
            routes=(Route("GET", "/{type}", "search", "search-type"),),
        )
