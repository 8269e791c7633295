"""``fhirflow.cursor``: paging cursors a client can replay but not forge or alter."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhirflow.cursor import CursorSigner
from fhirflow.errors import BadRequest

STATE = {"scope": "default/Patient/", "after": "12345"}


@pytest.fixture
def signer() -> CursorSigner:
    return CursorSigner(b"k" * 32)


def test_round_trip(signer: CursorSigner) -> None:
    token = signer.encode(STATE)

    assert signer.decode(token) == STATE
    assert all(c.isalnum() or c in "-_." for c in token)  # safe in a URL without escaping


def _replace(token: str, index: int) -> str:
    char = token[index]
    return token[:index] + ("A" if char != "A" else "B") + token[index + 1 :]


def test_every_single_character_change_is_refused(signer: CursorSigner) -> None:
    token = signer.encode(STATE)
    refusals: list[tuple[str, ...]] = []

    for index in range(len(token)):
        tampered = _replace(token, index)
        try:
            decoded = signer.decode(tampered)
        except BadRequest as refused:
            refusals.append(refused.issues[0].expression)
            continue
        # Base64 padding bits can change without changing the bytes; then it is the same cursor.
        assert decoded == STATE, f"position {index} altered the state undetected"
    assert len(refusals) >= len(token) - 2
    assert set(refusals) == {("_cursor",)}


def test_a_re_signed_payload_needs_the_key(signer: CursorSigner) -> None:
    forged_payload = base64.urlsafe_b64encode(json.dumps({**STATE, "after": "1"}).encode()).rstrip(b"=")
    wrong_mac = hmac.new(b"guess", forged_payload, hashlib.sha256).digest()[:16]
    forged = forged_payload.decode() + "." + base64.urlsafe_b64encode(wrong_mac).rstrip(b"=").decode()

    with pytest.raises(BadRequest):
        signer.decode(forged)


def test_a_cursor_from_another_key_is_refused(signer: CursorSigner) -> None:
    other = CursorSigner(b"o" * 32).encode(STATE)

    with pytest.raises(BadRequest):
        signer.decode(other)


def test_a_signed_non_object_is_refused(signer: CursorSigner) -> None:
    payload = base64.urlsafe_b64encode(b"[1, 2]").rstrip(b"=")
    mac = hmac.new(b"k" * 32, payload, hashlib.sha256).digest()[:16]
    token = payload.decode() + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    with pytest.raises(BadRequest):
        signer.decode(token)


@pytest.mark.parametrize("token", ["", ".", "abc", "a.b.c", "é.é", "\x00", "====.====", "e30"])
def test_garbage_is_a_bad_request(signer: CursorSigner, token: str) -> None:
    with pytest.raises(BadRequest) as caught:
        signer.decode(token, name="_page")
    assert caught.value.status == 400
    assert caught.value.issues[0].expression == ("_page",)


@given(st.text(max_size=200))
def test_any_text_is_refused_as_a_bad_request(token: str) -> None:
    with pytest.raises(BadRequest):
        CursorSigner(b"k" * 32).decode(token)


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "cursor.key"

    first = CursorSigner.from_secret_or_file(None, key_file)
    token = first.encode(STATE)
    second = CursorSigner.from_secret_or_file(None, key_file)

    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) >= 32
    assert second.decode(token) == STATE


def test_a_configured_secret_wins_over_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "cursor.key"
    from_secret = CursorSigner.from_secret_or_file("configured", key_file)

    assert not key_file.exists()
    assert CursorSigner(b"configured").decode(from_secret.encode(STATE)) == STATE
