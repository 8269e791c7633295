"""An issuer's signing keys (RFC 7517 JWKS): fetched once, cached, refreshed on an unknown ``kid``.

Key rotation works without a restart: a token signed with a new key carries a ``kid`` the cache
has not seen, which triggers one refresh. Refreshes are rate-bounded (at most one per
``min_refresh`` seconds per issuer), so a stream of tokens with made-up ``kid``s costs the IdP
nothing. Only public signature keys of asymmetric types are kept: a symmetric (``oct``) key in a
JWKS is ignored, which closes the HS256-with-the-public-key door a second time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fhirflow.authz.fetch import FetchError, get_json

if TYPE_CHECKING:
    from joserfc.jwk import Key

logger = logging.getLogger("fhirflow.authz")

# The public members of each key type (RFC 7518 §6, RFC 8037 §2); private members are dropped.
_PUBLIC_MEMBERS = {"RSA": ("n", "e"), "EC": ("crv", "x", "y"), "OKP": ("crv", "x")}
_ALG_KEY = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}
MIN_RSA_BITS = 2048


def key_fits(jwk: Mapping[str, Any], alg: str) -> bool:
    """Whether a JWK may verify a signature made with ``alg`` (type, curve, declared alg and use)."""
    wanted = _ALG_KEY.get(alg)
    if wanted is None or jwk.get("kty") != wanted[0]:
        return False
    if wanted[1] is not None and jwk.get("crv") != wanted[1]:
        return False
    if jwk.get("alg") not in (None, alg):
        return False
    return jwk.get("use") in (None, "sig")


def public_jwk(jwk: Mapping[str, Any]) -> dict[str, Any] | None:
    """The public part of a usable signature key, or None for a key we must not use."""
    kty = jwk.get("kty")
    members = _PUBLIC_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None or jwk.get("use") not in (None, "sig"):
        return None
    if not all(isinstance(jwk.get(m), str) for m in members):
        return None
    out: dict[str, Any] = {"kty": kty, **{m: jwk[m] for m in members}}
    for extra in ("kid", "alg", "use"):
        if isinstance(jwk.get(extra), str):
            out[extra] = jwk[extra]
    if kty == "RSA" and _rsa_bits(out["n"]) < MIN_RSA_BITS:
        return None
    return out


def _rsa_bits(n: str) -> int:
    import base64

    try:
        raw = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except ValueError:
        return 0
    return int.from_bytes(raw, "big").bit_length()


class JwksCache:
    """The keys of one issuer. ``fetch`` is injectable so unit tests need no sockets."""

    def __init__(
        self,
        *,
        jwks_uri: str | None = None,
        static_jwks: Mapping[str, Any] | None = None,
        min_refresh: float = 30.0,
        max_age: float = 3600.0,
        fetch: Callable[[str], dict[str, Any]] = get_json,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if jwks_uri is None and static_jwks is None:
            raise ValueError("a JwksCache needs a jwks_uri or a static key set")
        self.jwks_uri = jwks_uri
        self.min_refresh = min_refresh
        self.max_age = max_age
        self._fetch = fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: list[tuple[dict[str, Any], Key]] = []
        self._fetched_at: float | None = None
        self.fetches = 0
        if static_jwks is not None:
            self._keys = self._import(static_jwks)
            self._fetched_at = float("inf")  # never stale, never refreshed

    def key_for(self, kid: str | None, alg: str) -> Key | None:
        """The key for a token's ``kid`` and ``alg``, refreshing once (rate-bounded) when it is unknown.

        Without a ``kid`` the issuer must publish exactly one fitting key. Raises FetchError only
        when no keys have ever been fetched and the IdP cannot be reached.
        """
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at > self.max_age:
            self._refresh(now, force=self._fetched_at is None)
        found = self._find(kid, alg)
        if found is None and self._refresh(now, force=False):
            found = self._find(kid, alg)
        return found

    def _find(self, kid: str | None, alg: str) -> Key | None:
        fitting = [(jwk, key) for jwk, key in self._keys if key_fits(jwk, alg)]
        if kid is None:
            return fitting[0][1] if len(fitting) == 1 else None
        for jwk, key in fitting:
            if jwk.get("kid") == kid:
                return key
        return None

    def _refresh(self, now: float, *, force: bool) -> bool:
        """Fetch the JWKS unless one was fetched less than ``min_refresh`` ago; True when it was fetched."""
        if self.jwks_uri is None:
            return False
        with self._lock:
            last = self._fetched_at
            if not force and last is not None and now - last < self.min_refresh:
                return False
            self._fetched_at = now
            try:
                data = self._fetch(self.jwks_uri)
                self.fetches += 1
            except FetchError:
                if not self._keys:
                    self._fetched_at = last  # nothing to fall back on: let the next request try again
                    raise
                logger.warning("JWKS refresh failed; keeping the cached keys", extra={"jwks_uri": self.jwks_uri})
                return False
            self._keys = self._import(data)
            return True

    @staticmethod
    def _import(data: Mapping[str, Any]) -> list[tuple[dict[str, Any], Key]]:
        from joserfc.errors import JoseError
        from joserfc.jwk import import_key

        raw_keys = data.get("keys")
        keys: list[tuple[dict[str, Any], Key]] = []
        if not isinstance(raw_keys, list):
            return keys
        for raw in raw_keys:
            jwk = public_jwk(raw) if isinstance(raw, dict) else None
            if jwk is None:
                continue
            try:
                keys.append((jwk, import_key(jwk)))
            except (JoseError, ValueError, TypeError):
                logger.warning("ignoring an unusable key in a JWKS", extra={"kid": jwk.get("kid")})
        return keys
