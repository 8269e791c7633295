"""The CDK app: context → settings → the staged code → the stack, checked by cdk-nag.

Context (``cdk.json`` or ``cdk deploy -c key=value``):

- ``fhirflow:settings`` — :class:`fhirflow.settings.Settings` fields as a JSON object; at least
  ``auth`` and its issuer (the stack refuses to deploy an API without authorization);
- ``fhirflow:stackName`` (default ``fhirflow``), ``fhirflow:alarmEmail``,
  ``fhirflow:reservedConcurrency`` (per function), ``fhirflow:layerDir`` (default ``infra/build/layer``);
- ``fhirflow:throttle`` — ``{"rateLimit": 100, "burstLimit": 200}``, the stage's default throttling;
- ``fhirflow:apiKeys`` — ``true``: every route needs an API key, under a usage plan with that throttle per key;
- ``fhirflow:streamConcurrency`` — index-sync's reserved concurrency (default 10; ``0``: none);
- ``fhirflow:metricsNamespace`` — the CloudWatch namespace of the functions' EMF metrics (default ``fhirflow``);
- ``fhirflow:tracing`` — ``false``: no X-Ray SDK in the functions (no subsegments per AWS and
  OpenSearch call, a faster first invocation); Lambda's active tracing stays on;
- ``fhirflow:auditRetentionDays`` — how long the audit archive keeps records (default 2190, six
  years); ``0``: no audit archive.
- ``fhirflow:cognito`` — ``true``: a Cognito user pool with FWoA's groups is the issuer, and ``auth`` is ``rbac``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from aws_cdk import App, Duration, Environment

from fhirflow_infra.api import Throttle
from fhirflow_infra.compliance import add_checks
from fhirflow_infra.environment import settings_from_context
from fhirflow_infra.function import METRICS_NAMESPACE
from fhirflow_infra.packaging import DEFAULT_CODE_DIR, DEFAULT_LAYER_DIR, stage_code
from fhirflow_infra.stack import AUDIT_RETENTION, STREAM_CONCURRENCY, FhirflowStack


def _environment() -> Environment | None:
    """The CLI's account and region when it has them; otherwise an environment-agnostic stack."""
    account, region = os.environ.get("CDK_DEFAULT_ACCOUNT"), os.environ.get("CDK_DEFAULT_REGION")
    return Environment(account=account, region=region) if account and region else None


def _flag(value: object) -> bool:
    """A boolean context value: JSON true in cdk.json, the string "true" from ``-c``."""
    return value is True or str(value).lower() == "true"


def _throttle(value: object) -> Throttle:
    """``fhirflow:throttle``: ``{"rateLimit": requests per second, "burstLimit": requests}``."""
    if value in (None, ""):
        return Throttle()
    parsed = json.loads(value) if isinstance(value, str) else value
    if not isinstance(parsed, dict) or set(parsed) - {"rateLimit", "burstLimit"}:
        raise ValueError('fhirflow:throttle must be {"rateLimit": <per second>, "burstLimit": <requests>}')
    default = Throttle()
    return Throttle(
        rate_limit=float(parsed.get("rateLimit", default.rate_limit)),
        burst_limit=int(parsed.get("burstLimit", default.burst_limit)),
    )


def _days(value: object, default: Duration) -> Duration | None:
    """A number of days from the context; ``0``: none."""
    if value in (None, ""):
        return default
    days = int(str(value))
    if days < 0:
        raise ValueError(f"a number of days must not be negative, not {days}")
    return Duration.days(days) if days else None


def build(app: App, *, code_dir: Path = DEFAULT_CODE_DIR, layer_dir: Path | None = None) -> FhirflowStack:
    context = app.node.try_get_context
    reserved = context("fhirflow:reservedConcurrency")
    stream = context("fhirflow:streamConcurrency")
    stack = FhirflowStack(
        app,
        str(context("fhirflow:stackName") or "fhirflow"),
        description="fhirflow: FHIR R4 server (API Gateway, Lambda, DynamoDB, OpenSearch, S3, EventBridge)",
        env=_environment(),
        settings=settings_from_context(context("fhirflow:settings")),
        code_dir=stage_code(code_dir),
        layer_dir=Path(context("fhirflow:layerDir") or layer_dir or DEFAULT_LAYER_DIR),
        alarm_email=context("fhirflow:alarmEmail") or None,
        reserved_concurrency=int(reserved) if reserved not in (None, "") else None,
        stream_concurrency=int(stream) if stream not in (None, "") else STREAM_CONCURRENCY,
        throttle=_throttle(context("fhirflow:throttle")),
        api_keys=_flag(context("fhirflow:apiKeys")),
        metrics_namespace=str(context("fhirflow:metricsNamespace") or METRICS_NAMESPACE),
        tracing=context("fhirflow:tracing") in (None, "") or _flag(context("fhirflow:tracing")),
        audit_retention=_days(context("fhirflow:auditRetentionDays"), AUDIT_RETENTION),
        cognito=_flag(context("fhirflow:cognito")),
    )
    add_checks(app)
    return stack
