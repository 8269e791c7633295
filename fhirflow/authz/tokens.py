"""JWT access tokens (RFC 7519, RFC 9068) verified against the issuer's JWKS.

Order of checks: shape (three base64url parts, JSON header and claims), header (``alg`` pinned
to the issuer's configured asymmetric algorithms, ``typ`` if present one of the access-token
types, no ``crit`` we do not understand), issuer (the token's ``iss`` selects a configured issuer;
nothing else is trusted before the signature is checked), key (by ``kid`` from the cached JWKS),
signature (joserfc), then claims: ``iss``, ``aud``, ``exp``, ``nbf``, ``iat`` with a small clock skew.

Every failure is a :class:`TokenRejected` with a short reason for the logs; clients only ever
see a generic 401 (see :mod:`fhirflow.authz.authenticator`).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from fhirflow.authz.config import AuthConfig, IssuerConfig
from fhirflow.authz.fetch import get_json
from fhirflow.authz.jwks import JwksCache

MAX_TOKEN_BYTES = 16 * 1024


class TokenRejected(Exception):
    """The token is not acceptable; ``reason`` is for logs and metrics, never for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64json(segment: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        return orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise TokenRejected("malformed") from exc


def peek(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The *unverified* header and claims of a compact JWS, or None when it is not one (an opaque token)."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        return None
    try:
        header = _b64json(parts[0])
        claims = _b64json(parts[1])
    except TokenRejected:
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict) or "alg" not in header:
        return None
    return header, claims


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected(f"{name}-not-numeric")
    return float(value)


def check_time_claims(claims: Mapping[str, Any], *, now: float, skew: float) -> float:
    """``exp`` (required), ``nbf`` and ``iat`` with ``skew`` seconds of tolerance; returns ``exp``."""
    exp = _number(claims, "exp")
    if exp is None:
        raise TokenRejected("exp-missing")
    if now > exp + skew:
        raise TokenRejected("expired")
    nbf = _number(claims, "nbf")
    if nbf is not None and now + skew < nbf:
        raise TokenRejected("not-yet-valid")
    iat = _number(claims, "iat")
    if iat is not None and now + skew < iat:
        raise TokenRejected("issued-in-the-future")
    return exp


def check_audience(claims: Mapping[str, Any], issuer: IssuerConfig) -> None:
    if not issuer.audience:
        return
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(v, str) and v in issuer.audience for v in values):
        raise TokenRejected("wrong-audience")


def _check_type(header: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    typ = header.get("typ")
    if typ is None:
        return
    if not isinstance(typ, str):
        raise TokenRejected("wrong-typ")
    # RFC 7515 §4.1.9: "application/" may be omitted; media types compare case-insensitively.
    normal = typ.lower().removeprefix("application/")
    if normal not in {t.lower().removeprefix("application/") for t in allowed}:
        raise TokenRejected("wrong-typ")


class JwtVerifier:
    """Verifies JWT access tokens of the configured issuers, one :class:`JwksCache` per issuer."""

    def __init__(
        self,
        config: AuthConfig,
        *,
        fetch: Callable[[str], dict[str, Any]] = get_json,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._clock = clock
        self.caches: dict[str, JwksCache] = {
            issuer.issuer: JwksCache(
                jwks_uri=issuer.jwks_uri,
                static_jwks=issuer.static_jwks,
                min_refresh=config.jwks_min_refresh_seconds,
                max_age=config.jwks_max_age_seconds,
                fetch=fetch,
                clock=monotonic,
            )
            for issuer in config.issuers
            if issuer.verifies_locally
        }
        self._registries: dict[str, Any] = {}

    def verify(self, token: str, issuer: IssuerConfig, header: Mapping[str, Any]) -> tuple[dict[str, Any], float]:
        """The verified claims and ``exp`` of ``token`` (whose unverified ``iss`` named ``issuer``).

        Raises TokenRejected, or FetchError when the issuer's keys have never been reachable.
        """
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected("too-large")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in issuer.algorithms:
            raise TokenRejected("algorithm-not-allowed")  # "none", HS256 and anything not configured
        _check_type(header, self.config.token_types)
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("malformed")
        key = self.caches[issuer.issuer].key_for(kid, alg)
        if key is None:
            raise TokenRejected("unknown-key")
        claims = self._verified_claims(token, key, alg)
        if claims.get("iss") != issuer.issuer:
            raise TokenRejected("wrong-issuer")
        exp = check_time_claims(claims, now=self._clock(), skew=self.config.clock_skew_seconds)
        check_audience(claims, issuer)
        return claims, exp

    def _verified_claims(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        from joserfc import jws
        from joserfc.errors import BadSignatureError, JoseError

        registry = self._registries.get(alg)
        if registry is None:
            registry = self._registries[alg] = jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
        try:
            signed = jws.deserialize_compact(token, key, algorithms=[alg], registry=registry)
        except JoseError as exc:
            raise TokenRejected("bad-signature" if isinstance(exc, BadSignatureError) else "invalid-jws") from exc
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            raise TokenRejected("malformed") from exc
        try:
            claims = orjson.loads(signed.payload)
        except ValueError as exc:
            raise TokenRejected("malformed") from exc
        if not isinstance(claims, dict):
            raise TokenRejected("malformed")
        return claims
