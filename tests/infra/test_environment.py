"""Settings → Lambda environment → Settings.from_env is the identity, for every field; the
deployer's context is checked against the Settings fields; unsafe settings are refused."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from fhirflow.settings import Settings
from fhirflow_infra.environment import (
    FROM_RUNTIME,
    check_deployable,
    env_name,
    lambda_environment,
    settings_from_context,
)

DEPLOYABLE = {
    "auth": "smart",
    "auth_issuer": "https://idp.example.org",
    "auth_jwks_uri": "https://idp.example.org/jwks",
}


def _changed(value: Any) -> Any:
    """A value of the same type as ``value``, different from it."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 7
    if isinstance(value, float):
        return value + 0.25
    if isinstance(value, Path):
        return value / "elsewhere"
    if isinstance(value, tuple):
        return (*value, "https://a.example", "https://b.example")
    return f"{value or 'x'}-changed"


def _from_env(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [n for n in os.environ if n.startswith("FHIRFLOW_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def test_every_setting_survives_the_round_trip_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings()
    changed = {
        f.name: _changed(getattr(defaults, f.name)) for f in dataclasses.fields(Settings) if f.name not in FROM_RUNTIME
    }
    settings = dataclasses.replace(defaults, **changed)
    environment = lambda_environment(settings)
    assert set(environment) == {env_name(name) for name in changed}
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert _from_env(environment, monkeypatch) == settings


def test_defaults_are_left_out_of_the_environment() -> None:
    assert lambda_environment(Settings()) == {}


def test_the_context_takes_settings_by_field_name() -> None:
    settings = settings_from_context('{"auth": "rbac", "auth_config": "{}", "history_max_count": 500}')
    assert (settings.auth, settings.auth_config, settings.history_max_count) == ("rbac", "{}", 500)
    assert settings_from_context(None) == Settings()


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"auht": "smart"}, "unknown fhirflow settings"),
        ({"dynamodb_table": "mine"}, "set by the stack"),
        ({"cursor_secret": "s3cret"}, "set by the stack"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_the_context_rejects_unknown_and_wired_settings(context: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_from_context(context)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"auth": "off"}, "cannot be deployed"),
        ({"auth_issuer": None}, "needs an issuer"),
        ({"auth_dev_issuer": True}, "embedded mode only"),
        ({"audit": "file"}, "not available in AWS"),
    ],
)
def test_unsafe_settings_are_refused(overrides: dict[str, Any], message: str) -> None:
    check_deployable(settings_from_context(DEPLOYABLE))
    with pytest.raises(ValueError, match=message):
        check_deployable(dataclasses.replace(settings_from_context(DEPLOYABLE), **overrides))
