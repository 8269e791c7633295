"""Opaque access tokens checked by OAuth 2.0 Token Introspection (RFC 7662), the HealthLake pattern.

``POST {introspection_endpoint}`` with ``token=...&token_type_hint=access_token``, authenticated
with HTTP Basic client credentials when configured (RFC 7662 §2.1). The answer must say
``"active": true`` and, as SMART requires (token-introspection.html), carry ``scope``,
``client_id`` and ``exp``; ``iss`` and ``aud``, when present, must match the configured issuer.
Answers are cached by the authenticator (by token hash, until ``exp`` and at most
``introspection_cache_seconds``), so the endpoint sees each token about once.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote_plus

from fhirflow.authz.config import IssuerConfig
from fhirflow.authz.fetch import post_form
from fhirflow.authz.tokens import TokenRejected, check_audience, check_time_claims

PostForm = Callable[..., dict[str, Any]]


class Introspector:
    def __init__(
        self,
        issuer: IssuerConfig,
        *,
        skew: float = 60.0,
        post: PostForm = post_form,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not issuer.introspection_endpoint:
            raise ValueError(f"issuer {issuer.issuer} has no introspection endpoint")
        self.issuer = issuer
        self.endpoint: str = issuer.introspection_endpoint
        self.skew = skew
        self._post = post
        self._clock = clock
        self._headers: dict[str, str] = {}
        if issuer.introspection_client_id:
            # RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding.
            secret = issuer.introspection_client_secret or ""
            pair = f"{quote_plus(issuer.introspection_client_id, safe='')}:{quote_plus(secret, safe='')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        self.calls = 0

    def introspect(self, token: str) -> tuple[dict[str, Any], float]:
        """The active token's claims and ``exp``. Raises TokenRejected, or FetchError when unreachable."""
        self.calls += 1
        answer = self._post(self.endpoint, {"token": token, "token_type_hint": "access_token"}, headers=self._headers)
        return self.check(answer)

    def check(self, answer: Mapping[str, Any]) -> tuple[dict[str, Any], float]:
        if answer.get("active") is not True:
            raise TokenRejected("inactive")
        claims = dict(answer)
        issuer = claims.get("iss")
        if issuer is not None and issuer != self.issuer.issuer:
            raise TokenRejected("wrong-issuer")
        claims["iss"] = self.issuer.issuer
        exp = check_time_claims(claims, now=self._clock(), skew=self.skew)
        if "aud" in claims:
            check_audience(claims, self.issuer)
        return claims, exp
