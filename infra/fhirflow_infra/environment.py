"""The Lambdas' environment, from the same :class:`fhirflow.settings.Settings` the Lambdas read.

The stack fills in the wiring (table, bucket and bus names, which adapters to use); the deployer
chooses the rest (authorization, limits) through the ``fhirflow`` CDK context, by the names of
the Settings fields. Each field ``x`` is read from ``FHIRFLOW_X`` by ``Settings.from_env``, so a
field added there can be set here without touching infra (tests/infra checks the round trip).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from fhirflow.cors import parse_origins
from fhirflow.settings import Settings

WIRED_BY_STACK = frozenset(
    {
        "store",
        "data_dir",
        "dynamodb_table",
        "dynamodb_ledger_table",
        "dynamodb_endpoint",
        "blob_bucket",
        "events",
        "event_bus",
        "search_index",
        "opensearch_url",
        "opensearch_auth",
        "opensearch_service",
        "index_on_write",
        "cursor_secret",
        "cursor_secret_arn",
        "max_response_bytes",
        "aws_region",
        "transaction_state_machine",
        "transaction_async_state_machine",
        "export_queue_url",
        "export_bucket",
    }
)
"""Settings the stack sets from the resources it creates; the deployer cannot override them."""

FROM_RUNTIME = frozenset({"aws_region"})
"""Settings Lambda provides itself (``AWS_REGION``); never put in the environment."""

AUTH_MODES_FOR_AWS = ("smart", "rbac")
AUDIT_MODES_FOR_AWS = ("off", "log", "auditevent")
"""``file`` writes under the data directory, which in Lambda is a throwaway ``/tmp``."""

LAMBDA_DATA_DIR = Path("/tmp/fhirflow")  # noqa: S108 - Lambda's only writable path; holds nothing durable
"""Per-container scratch space; it holds nothing durable (the search index is OpenSearch, see stack.py)."""


def env_name(field_name: str) -> str:
    return f"FHIRFLOW_{field_name.upper()}"


def settings_from_context(values: Mapping[str, Any] | str | None) -> Settings:
    """The deployer's settings (``cdk.json`` context ``fhirflow.settings``, or ``-c`` with JSON)."""
    if values is None:
        return Settings()
    if isinstance(values, str):
        values = json.loads(values)
        if not isinstance(values, dict):
            raise ValueError("the fhirflow settings context must be a JSON object")
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown fhirflow settings {unknown}; the names are the fields of fhirflow.settings.Settings")
    wired = sorted(set(values) & WIRED_BY_STACK)
    if wired:
        raise ValueError(f"fhirflow settings {wired} are set by the stack from the resources it creates")
    values = dict(values)
    if "cors_origins" in values:  # a list in JSON, or the environment variable's comma-separated form
        origins = values["cors_origins"]
        values["cors_origins"] = parse_origins(origins) if isinstance(origins, str) else tuple(origins)
    return replace(Settings(), **values)


def check_deployable(settings: Settings) -> None:
    """Refuse, at synth time, settings the Lambdas would reject on every cold start or that are unsafe in AWS."""
    if settings.auth not in AUTH_MODES_FOR_AWS:
        raise ValueError(
            f"auth '{settings.auth}' cannot be deployed: the API is public, so set auth to one of "
            f"{', '.join(AUTH_MODES_FOR_AWS)} with an issuer (README: Deploying to AWS)"
        )
    if not (settings.auth_issuer or settings.auth_config):
        raise ValueError(
            "auth needs an issuer: set auth_issuer (with auth_jwks_uri or auth_introspection_url) or auth_config"
        )
    if settings.auth_dev_issuer:
        raise ValueError("auth_dev_issuer is for the embedded mode only; it is refused in AWS")
    if settings.audit not in AUDIT_MODES_FOR_AWS:
        raise ValueError(
            f"audit '{settings.audit}' is not available in AWS; use one of {', '.join(AUDIT_MODES_FOR_AWS)}"
        )


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def lambda_environment(settings: Settings) -> dict[str, str]:
    """``FHIRFLOW_*`` variables for every setting that differs from its default."""
    defaults = Settings()
    environment: dict[str, str] = {}
    for field in fields(Settings):
        if field.name in FROM_RUNTIME:
            continue
        value = getattr(settings, field.name)
        if value is None or value == getattr(defaults, field.name):
            continue
        environment[env_name(field.name)] = _encode(value)
    return environment
