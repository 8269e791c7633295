"""The Cognito option (``-c fhirflow:cognito=true``): a user pool with FWoA's groups and an app
client, and every function's authorization switched to RBAC on that pool's tokens. Synthesized
with cdk-nag's packs like the default stack (an unacknowledged finding fails the synth)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import Synthesized, cdk_context, make_layer_placeholder, without_aws_credentials


@pytest.fixture(scope="module")
def with_cognito(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from aws_cdk import App

    from fhirflow_infra.application import build

    root: Path = tmp_path_factory.mktemp("cognito")
    with without_aws_credentials():
        app = App(context=cdk_context(**{"fhirflow:cognito": "true"}), outdir=str(root / "cdk.out"))
        stack = build(app, code_dir=root / "code", layer_dir=make_layer_placeholder(root))
        app.synth()  # cdk-nag runs here
    template: dict[str, Any] = json.loads((root / "cdk.out" / f"{stack.artifact_id}.template.json").read_text())
    return template


def _of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def test_the_default_stack_has_no_user_pool(synthesized: Synthesized) -> None:
    assert not synthesized.resources("AWS::Cognito::UserPool")


def test_a_user_pool_for_staff_only_with_a_second_factor(with_cognito: dict[str, Any]) -> None:
    [pool] = _of_type(with_cognito, "AWS::Cognito::UserPool").values()
    props = pool["Properties"]
    assert props["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    assert props["MfaConfiguration"] == "ON"
    assert props["EnabledMfas"] == ["SOFTWARE_TOKEN_MFA"]
    policy = props["Policies"]["PasswordPolicy"]
    assert policy["MinimumLength"] >= 12
    assert all(policy[k] for k in ("RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols"))
    assert pool["DeletionPolicy"] == "Retain"
    assert props["DeletionProtection"] == "ACTIVE"


def test_fwoas_groups_and_a_public_srp_client(with_cognito: dict[str, Any]) -> None:
    groups = {g["Properties"]["GroupName"] for g in _of_type(with_cognito, "AWS::Cognito::UserPoolGroup").values()}
    assert groups == {"practitioner", "non-practitioner", "auditor"}
    [client] = _of_type(with_cognito, "AWS::Cognito::UserPoolClient").values()
    props = client["Properties"]
    assert not props.get("GenerateSecret")
    assert set(props["ExplicitAuthFlows"]) == {"ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"}
    assert props["PreventUserExistenceErrors"] == "ENABLED"
    assert {"UserPoolId", "UserPoolClientId"} <= set(with_cognito["Outputs"])


def test_every_function_trusts_the_pool_and_authorizes_by_its_groups(with_cognito: dict[str, Any]) -> None:
    [pool_id] = _of_type(with_cognito, "AWS::Cognito::UserPool")
    functions = _of_type(with_cognito, "AWS::Lambda::Function")
    assert functions
    for name, function in functions.items():
        env = function["Properties"]["Environment"]["Variables"]
        assert env["FHIRFLOW_AUTH"] == "rbac", name
        issuer = json.dumps(env["FHIRFLOW_AUTH_ISSUER"])
        assert f'"{pool_id}", "ProviderURL"' in issuer, name
        assert json.dumps(env["FHIRFLOW_AUTH_JWKS_URI"]).endswith('"/.well-known/jwks.json"]]}'), name
        assert "FHIRFLOW_AUTH_AUDIENCE" not in env, name  # Cognito access tokens carry client_id, not aud
        assert "FHIRFLOW_AUTH_CONFIG" not in env, name  # FWoA's default group rules


def test_cfn_lint_finds_no_errors_with_the_pool(with_cognito: dict[str, Any]) -> None:
    from cfnlint.api import lint

    matches = lint(json.dumps(with_cognito), regions=["us-east-1"])
    errors = [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches if m.rule.id.startswith("E")]
    assert errors == []
