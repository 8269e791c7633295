"""Standard Webhooks signing, verified with the ``standardwebhooks`` package (an implementation we
did not write): the consumer's view of every notification fhirflow sends."""

from __future__ import annotations

import base64

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from fhirflow.errors import BadRequest
from fhirflow_subscriptions.signing import new_secret, secret_key, sign, signature_headers, validate_secret

BODY = b'{"resourceType":"Bundle","type":"history"}'


def now() -> int:
    import time

    return int(time.time())


def test_new_secrets_are_whsec_with_32_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    assert first != second


def test_a_signature_verifies_with_the_reference_implementation() -> None:
    secret = new_secret()
    headers = signature_headers("msg_1", now(), BODY, [secret])
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    Webhook(secret).verify(BODY, headers)  # raises if wrong


def test_an_empty_body_is_signed_too() -> None:
    secret = new_secret()
    assert Webhook(secret).verify(b"", signature_headers("msg_empty", now(), b"", [secret]), json_parse=False) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("body", b'{"tampered":true}'), ("webhook-id", "msg_2"), ("webhook-timestamp", None)],
)
def test_changing_the_body_the_id_or_the_timestamp_breaks_the_signature(field: str, value: object) -> None:
    secret = new_secret()
    stamp = now()
    headers = signature_headers("msg_1", stamp, BODY, [secret])
    body = BODY
    if field == "body":
        body = value  # type: ignore[assignment]
    elif field == "webhook-id":
        headers[field] = str(value)
    else:
        headers[field] = str(stamp - 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_rotation_sends_one_signature_per_secret_and_either_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    headers = signature_headers("msg_rot", now(), BODY, [old, new])
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)


def test_a_stale_timestamp_is_refused_by_the_consumer() -> None:
    """The timestamp is that of the attempt, so a replay of a captured request fails."""
    secret = new_secret()
    headers = signature_headers("msg_old", now() - 3600, BODY, [secret])
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, headers)


def test_the_signature_is_hmac_sha256_of_id_timestamp_body() -> None:
    import hashlib
    import hmac

    secret = "whsec_" + base64.b64encode(b"k" * 24).decode()
    expected = base64.b64encode(hmac.new(b"k" * 24, b"id.1700000000." + BODY, hashlib.sha256).digest()).decode()
    assert sign("id", 1_700_000_000, BODY, secret) == "v1," + expected


def test_without_a_secret_no_signature_header_is_sent() -> None:
    assert "webhook-signature" not in signature_headers("msg", now(), BODY, [])


@pytest.mark.parametrize(
    "secret",
    [
        "nope",
        "whsec_",
        "whsec_not base64!",
        "whsec_" + base64.b64encode(b"short").decode(),
        "whsec_" + base64.b64encode(b"x" * 65).decode(),
    ],
)
def test_malformed_secrets_are_refused_without_echoing_them(secret: str) -> None:
    with pytest.raises(ValueError):
        secret_key(secret)
    with pytest.raises(BadRequest) as caught:
        validate_secret(secret, expression="Subscription.channel.extension")
    assert caught.value.issues[0].expression == ("Subscription.channel.extension",)
    if len(secret) > len("whsec_"):
        assert secret not in caught.value.diagnostics
