"""cfn-lint finds no errors; cdk-nag's HIPAA Security and AWS Solutions packs find nothing that is
not acknowledged with a reason; synth needs no AWS account."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.infra.conftest import Synthesized, cdk_context, make_layer_placeholder, without_aws_credentials

PACKS = ("HIPAA.Security-", "AwsSolutions-")


def test_cfn_lint_finds_no_errors(synthesized: Synthesized) -> None:
    from cfnlint.api import lint

    matches = lint(json.dumps(synthesized.template), regions=["us-east-1"])
    errors = [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches if m.rule.id.startswith("E")]
    assert errors == []


def test_cdk_nag_reports_nothing(synthesized: Synthesized) -> None:
    # The packs ran during the fixture's synth, which raises on any unacknowledged finding; the report
    # in the assembly must be empty too (warnings included).
    report = json.loads((synthesized.assembly_dir / "validation-report.json").read_text())
    assert [v for plugin in report["pluginReports"] for v in plugin["violations"]] == []


def test_every_acknowledgment_names_a_rule_and_says_why(synthesized: Synthesized) -> None:
    acknowledged = [
        rule
        for resource in synthesized.template["Resources"].values()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    ]
    assert acknowledged, "write_suppressions_to_cloud_formation records the acknowledgments in the template"
    for rule in acknowledged:
        assert rule["id"].startswith(PACKS), rule
        assert len(rule["reason"]) >= 60, rule


def test_synth_needs_no_lookups(synthesized: Synthesized) -> None:
    """Nothing asked the account for context (VPCs, AMIs, hosted zones): synth makes no AWS calls."""
    assert synthesized.missing_context == []


def test_an_unacknowledged_finding_fails_the_synth(tmp_path: Path) -> None:
    from aws_cdk import App, Stack
    from aws_cdk import aws_s3 as s3

    from fhirflow_infra.compliance import add_checks

    app = App(outdir=str(tmp_path / "cdk.out"))
    s3.Bucket(Stack(app, "Plain"), "Bucket")  # no KMS, no logging, no TLS policy, no versioning
    add_checks(app)
    with without_aws_credentials(), pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()


def test_a_stack_without_authorization_is_refused(tmp_path: Path) -> None:
    from aws_cdk import App

    from fhirflow.settings import Settings
    from fhirflow_infra.stack import FhirflowStack

    with pytest.raises(ValueError, match="auth"):
        FhirflowStack(
            App(),
            "Open",
            settings=Settings(),
            code_dir=tmp_path,
            layer_dir=make_layer_placeholder(tmp_path),
        )


def test_every_acknowledgment_answers_a_finding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An acknowledgment no rule needs is stale (its reason describes something that is not
    there): synthesize with the acknowledgments recorded but not made, and match each to a
    finding of its rule on its construct or below."""
    from aws_cdk import App, Validations

    from fhirflow_infra.application import build

    made: list[tuple[str, str]] = []
    original = Validations.of

    class Recorder:
        def __init__(self, scope: Any) -> None:
            self.scope = scope
            self.inner = original(scope)

        def acknowledge(self, *acknowledgments: Any) -> None:
            made.extend((self.scope.node.path, a.id) for a in acknowledgments)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    monkeypatch.setattr(Validations, "of", staticmethod(Recorder))
    outdir = tmp_path / "cdk.out"
    with without_aws_credentials():
        app = App(context=cdk_context(**{"fhirflow:alarmEmail": "ops@example.org"}), outdir=str(outdir))
        build(app, code_dir=tmp_path / "code", layer_dir=make_layer_placeholder(tmp_path))
        with pytest.raises(RuntimeError, match="ValidationFailed"):
            app.synth()
    report = json.loads((outdir / "validation-report.json").read_text())
    findings = {
        (violating["constructPath"], violation["ruleName"])
        for plugin in report["pluginReports"]
        for violation in plugin["violations"]
        for violating in violation["violatingConstructs"]
    }
    assert made, "the stack acknowledges findings"
    stale = [
        (path, rule)
        for path, rule in made
        if not any(rule == found and (where == path or where.startswith(f"{path}/")) for where, found in findings)
    ]
    assert stale == []
