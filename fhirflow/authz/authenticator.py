"""Bearer token → :class:`Principal`, and the request's tenant bound to the token (DESIGN.md §5).

Per request the work is a SHA-256 of the token and a dictionary lookup: a token is validated
(signature or introspection) once, and its principal, scopes parsed, is cached by the token's
hash until it expires (bounded in size). Rejected tokens are remembered briefly too, so a client
retrying a bad token does not cost a JWKS refresh or an introspection call each time.

Tenancy: a token is bound to a tenant by its issuer's configuration or by the tenant claim (they
must agree when both are present; an issuer bound to no tenant may claim only the tenants its
configuration lists in ``tenants``), else to the default tenant. On a ``/tenant/{tenant}/...``
route the path's tenant must be the token's; on other routes the request takes the token's tenant.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from fhirflow.authz import challenges
from fhirflow.authz.config import AuthConfig, IssuerConfig
from fhirflow.authz.fetch import FetchError, get_json, post_form
from fhirflow.authz.introspection import Introspector, PostForm
from fhirflow.authz.principal import Principal, parse_fhir_user, parse_patient
from fhirflow.authz.scopes import parse_scopes
from fhirflow.authz.tokens import JwtVerifier, TokenRejected, peek
from fhirflow.errors import FhirError
from fhirflow.model import DEFAULT_TENANT, FhirRequest
from fhirflow.pathparams import is_tenant
from fhirflow.routes import ROUTE_TABLE, TENANT_PREFIX, RouteTable

logger = logging.getLogger("fhirflow.authz")

PUBLIC_INTERACTIONS = frozenset({"capabilities", "smart-configuration"})
"""Served without a token: clients discover how to authorize from these (SMART conformance)."""
NEGATIVE_CACHE_SECONDS = 10.0


class _Cache:
    """A bounded map of token hash → (value, valid until); the oldest entry goes first when full."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, tuple[Any, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes, now: float) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[1] <= now:
            with self._lock:
                self._entries.pop(key, None)
            return None
        return entry[0]

    def put(self, key: bytes, value: Any, until: float) -> None:
        with self._lock:
            self._entries[key] = (value, until)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class BearerAuthenticator:
    """The :class:`fhirflow.ports.Authenticator` for SMART and RBAC deployments."""

    def __init__(
        self,
        config: AuthConfig,
        *,
        fetch: Callable[[str], dict[str, Any]] = get_json,
        post: PostForm = post_form,
        clock: Callable[[], float] = time.time,
        routes: RouteTable = ROUTE_TABLE,
    ) -> None:
        self.config = config
        self._clock = clock
        self.verifier = JwtVerifier(config, fetch=fetch, clock=clock)
        self.introspectors: dict[str, Introspector] = {
            issuer.issuer: Introspector(issuer, skew=config.clock_skew_seconds, post=post, clock=clock)
            for issuer in config.introspectors()
        }
        self.public_routes = frozenset(r.pattern for r in routes.routes if r.interaction in PUBLIC_INTERACTIONS)
        self._principals = _Cache(config.cache_size)
        self._rejected = _Cache(config.cache_size)

    # -- the port -------------------------------------------------------------------------------

    def authenticate(self, request: FhirRequest) -> Principal | None:
        header = request.headers.get("authorization")
        if request.route in self.public_routes:
            return None  # a token, valid or not, changes nothing on a public route
        try:
            if not header:
                raise challenges.missing_token()
            scheme, _, token = header.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token or " " in token:
                raise challenges.invalid_request()
            principal = self.principal_for(token, path_tenant=self._path_tenant(request))
            bind_tenant(request, principal)
        except FhirError as refused:
            # Why, for the server log and the audit record only: the client gets the generic answer.
            request.auth_failure = _failure_reason(refused, has_header=bool(header))
            if request.auth_failure not in ("no-token", "tenant-mismatch"):
                logger.warning(
                    "access token rejected: %s (request %s)",
                    request.auth_failure,
                    request.request_id,
                    extra={"reason": request.auth_failure, "request_id": request.request_id},
                )
            raise
        return principal

    # -- tokens ---------------------------------------------------------------------------------

    def principal_for(self, token: str, *, path_tenant: str | None = None) -> Principal:
        """The principal of a token, from the cache or by validating it (raises 401/503 errors)."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        now = self._clock()
        cached = self._principals.get(digest, now)
        if cached is not None:
            principal: Principal = cached
            return principal
        reason = self._rejected.get(digest, now)
        if reason is not None:
            raise challenges.invalid_token() from TokenRejected(reason)
        try:
            claims, issuer, valid_until = self._validate(token, path_tenant)
            principal = self._build(claims, issuer)
        except TokenRejected as rejected:
            self._rejected.put(digest, rejected.reason, now + NEGATIVE_CACHE_SECONDS)
            raise challenges.invalid_token() from rejected
        except FetchError as unreachable:
            logger.warning("identity provider unreachable", extra={"error": str(unreachable)})
            raise challenges.identity_provider_unavailable() from unreachable
        self._principals.put(digest, principal, valid_until)
        return principal

    def _validate(self, token: str, path_tenant: str | None) -> tuple[dict[str, Any], IssuerConfig, float]:
        peeked = peek(token)
        if peeked is not None:
            header, unverified = peeked
            name = unverified.get("iss")
            issuer = self.config.issuer(name) if isinstance(name, str) else None
            if issuer is not None and issuer.verifies_locally:
                claims, exp = self.verifier.verify(token, issuer, header)
                return claims, issuer, exp + self.config.clock_skew_seconds
            if issuer is not None:
                return self._introspect(token, self.introspectors[issuer.issuer])
        introspector = self._introspector_for(path_tenant)
        if introspector is None:
            raise TokenRejected("unknown-issuer" if peeked is not None else "malformed")
        return self._introspect(token, introspector)

    def _introspect(self, token: str, introspector: Introspector) -> tuple[dict[str, Any], IssuerConfig, float]:
        claims, exp = introspector.introspect(token)
        until = min(exp + self.config.clock_skew_seconds, self._clock() + self.config.introspection_cache_seconds)
        return claims, introspector.issuer, until

    def _introspector_for(self, path_tenant: str | None) -> Introspector | None:
        """For an opaque token: the introspector of the path's tenant, else the one not bound to a tenant."""
        fallback = None
        for introspector in self.introspectors.values():
            bound = introspector.issuer.tenant
            if path_tenant is not None and bound == path_tenant:
                return introspector
            if bound is None and fallback is None:
                fallback = introspector
        return fallback

    def _build(self, claims: Mapping[str, Any], issuer: IssuerConfig) -> Principal:
        config = self.config
        tenant = issuer.tenant
        claimed = claims.get(config.tenant_claim) if config.tenant_claim else None
        if claimed is not None:
            if not isinstance(claimed, str) or not is_tenant(claimed):
                raise TokenRejected("tenant-claim-malformed")
            if tenant is not None and claimed != tenant:
                raise TokenRejected("tenant-claim-disagrees")
            if tenant is None and claimed not in issuer.tenants and "*" not in issuer.tenants:
                raise TokenRejected("tenant-claim-not-allowed")  # an unbound issuer names only tenants it was given
            tenant = claimed
        groups = claims.get(config.groups_claim)
        client_id = next((claims[c] for c in ("client_id", "azp", "cid") if isinstance(claims.get(c), str)), None)
        sub = claims.get("sub")
        return Principal(
            sub=sub if isinstance(sub, str) else None,
            client_id=client_id,
            issuer=issuer.issuer,
            scopes=parse_scopes(claims.get(config.scope_claim)),
            expires_at=float(claims["exp"]),
            patient=parse_patient(claims.get(config.patient_claim)),
            fhir_user=parse_fhir_user(claims.get(config.fhir_user_claim)),
            tenant=tenant,
            groups=tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
            claim_names=frozenset(claims),
        )

    @staticmethod
    def _path_tenant(request: FhirRequest) -> str | None:
        return request.tenant if request.route.startswith(TENANT_PREFIX) else None


def _failure_reason(error: FhirError, *, has_header: bool) -> str:
    """A short, value-free reason for a refused request (the TokenRejected reasons of
    :mod:`fhirflow.authz.tokens` and :mod:`fhirflow.authz.introspection`)."""
    cause = error.__cause__
    if isinstance(cause, TokenRejected):
        return cause.reason
    if isinstance(cause, FetchError):
        return "identity-provider-unreachable"
    if error.status == 403:
        return "tenant-mismatch"
    return "malformed-authorization-header" if has_header else "no-token"


class StoredPrincipalAuthenticator:
    """The :class:`fhirflow.ports.Authenticator` of work done later on a request's behalf (an async
    bundle's Prepare step): the principal validated when the request came, stored without its
    token; it binds the tenant as the bearer check did, and expires when the token would have."""

    def __init__(self, principal: Principal | None, *, clock: Callable[[], float] = time.time) -> None:
        self.principal = principal
        self._clock = clock

    def authenticate(self, request: FhirRequest) -> Principal:
        principal = self.principal
        if principal is None:
            raise challenges.missing_token()
        if principal.expires_at <= self._clock():
            raise challenges.invalid_token()
        bind_tenant(request, principal)
        return principal


def bind_tenant(request: FhirRequest, principal: Principal) -> None:
    """The request's tenant is the token's: checked against the path, or taken from the token."""
    bound = principal.tenant or DEFAULT_TENANT
    if request.route.startswith(TENANT_PREFIX):
        if request.tenant != bound:
            raise challenges.wrong_tenant()
    else:
        request.tenant = bound
