"""The paging-cursor key in AWS comes from Secrets Manager (moto here), not from the Lambda
environment: fetched once, on the first cursor, and kept for the life of the process."""

from __future__ import annotations

from typing import Any

import boto3

from fhirflow.runtime import build_cursors
from fhirflow.settings import Settings
from tests.support.aws import moto  # noqa: F401 - the fixture

REGION = "us-east-1"


def test_cursors_are_signed_with_the_secret_fetched_once(moto: Any, tmp_path: Any) -> None:  # noqa: F811
    manager = boto3.client("secretsmanager", region_name=REGION)
    arn = manager.create_secret(Name="cursor", SecretString="k" * 64)["ARN"]
    settings = Settings(cursor_secret_arn=arn, aws_region=REGION, data_dir=tmp_path)
    calls: list[str] = []
    events = boto3._get_default_session().events  # what the adapter's clients are made from
    event = "before-call.secrets-manager.GetSecretValue"
    events.register(event, count := lambda **_: calls.append("get"))
    try:
        check(settings, calls)
    finally:
        events.unregister(event, count)


def check(settings: Settings, calls: list[str]) -> None:
    signer = build_cursors(settings)
    assert calls == [], "nothing is fetched before the first cursor"
    tokens = [signer.encode({"page": n}) for n in range(5)]
    assert [signer.decode(t)["page"] for t in tokens] == list(range(5))
    assert calls == ["get"]
    assert not (settings.data_dir / "cursor.key").exists()  # no key of its own in Lambda's /tmp

    # Another container reading the same secret accepts the cursors: the key is the secret's.
    other = build_cursors(settings)
    assert other.decode(tokens[0]) == {"page": 0}
    assert calls == ["get", "get"]
