"""The authorization configuration: issuers (per tenant), claim names, policy knobs, discovery.

It comes from :class:`~fhirflow.settings.Settings`: the common single-issuer case from flat
variables (``FHIRFLOW_AUTH_ISSUER``, ``_AUDIENCE``, ``_JWKS_URI``, ``_INTROSPECTION_URL``), the rest
from ``FHIRFLOW_AUTH_CONFIG`` (inline JSON, or the path of a JSON file), for example::

    {
      "issuers": [
        {"issuer": "https://idp.example.org/a", "audience": ["https://fhir.example.org"],
         "jwks_uri": "https://idp.example.org/a/jwks", "algorithms": ["RS256"], "tenant": "a"},
        {"issuer": "https://idp.example.org/b", "introspection_endpoint": "https://idp.example.org/b/introspect",
         "introspection_client_id": "fhir", "introspection_client_secret": "...", "tenant": "b"},
        {"issuer": "https://idp.example.org/shared", "jwks_uri": "...", "tenants": ["c", "d"]}
      ],
      "tenant_claim": "custom:tenantId",
      "denied_read_status": 404,
      "admin_user_types": ["Practitioner"],
      "smart": {"token_endpoint": "https://idp.example.org/a/token",
                "authorization_endpoint": "https://idp.example.org/a/authorize"}
    }

Errors are raised at build time (cold start), never per request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fhirflow.settings import Settings

# Asymmetric JWS algorithms only (RFC 7518 §3.1, RFC 8037): HS* with a public key is the classic confusion attack.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_ALGORITHMS = tuple(sorted(ASYMMETRIC_ALGORITHMS))
"""Every asymmetric JWS algorithm: IdPs sign access tokens with RS384, PS256, ES384... (SMART
Backend Services names RS384 and ES384); the key's type and curve must fit the algorithm
(:func:`fhirflow.authz.jwks.key_fits`), and an issuer may pin fewer with ``"algorithms"``."""
# RFC 9068 §2.1 ("at+jwt"), plus the plain "JWT" most IdPs (Cognito, Entra, Okta) still put in access tokens.
DEFAULT_TOKEN_TYPES = ("JWT", "at+jwt", "application/at+jwt")


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    issuer: str
    audience: tuple[str, ...] = ()
    """Accepted ``aud`` values; empty: not checked (Cognito access tokens carry ``client_id``, not ``aud``)."""
    jwks_uri: str | None = None
    static_jwks: Mapping[str, Any] | None = field(default=None, repr=False)
    """Keys given in the configuration itself (pinned keys; the development issuer)."""
    introspection_endpoint: str | None = None
    introspection_client_id: str | None = None
    introspection_client_secret: str | None = field(default=None, repr=False)
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    tenant: str | None = None
    """Tokens of this issuer are bound to this tenant; None: the tenant claim (see ``tenants``), else the default."""
    tenants: tuple[str, ...] = ()
    """For an issuer bound to no tenant: the tenants its tokens may name in the tenant claim (``*``:
    any). Empty, the default: a token of this issuer that claims a tenant is rejected, so an IdP
    shared by tenants cannot let one tenant's users name another's tenant unless configured to."""

    @property
    def verifies_locally(self) -> bool:
        return self.jwks_uri is not None or self.static_jwks is not None


@dataclass(frozen=True, slots=True)
class AuthConfig:
    mode: str
    """``smart`` (scopes and compartments) or ``rbac`` (groups)."""
    issuers: tuple[IssuerConfig, ...]
    scope_claim: str = "scope"
    patient_claim: str = "patient"
    fhir_user_claim: str = "fhirUser"
    tenant_claim: str | None = None
    groups_claim: str = "cognito:groups"
    clock_skew_seconds: int = 60
    denied_read_status: int = 404
    """What a read of a resource outside the token's compartment answers: 404 (hides existence) or 403."""
    admin_user_types: tuple[str, ...] = ()
    """``fhirUser`` types whose ``user/`` scopes are not limited to their own compartment (FWoA's
    adminAccessTypes). None by default: ``fhirUser=Practitioner/<anything>`` reading every
    resource is a deployment's explicit choice (``"admin_user_types": ["Practitioner"]``)."""
    token_types: tuple[str, ...] = DEFAULT_TOKEN_TYPES
    jwks_min_refresh_seconds: float = 30.0
    """At most one JWKS fetch per issuer in this interval, however many unknown ``kid``s arrive."""
    jwks_max_age_seconds: float = 3600.0
    introspection_cache_seconds: float = 300.0
    cache_size: int = 10_000
    rbac_rules: Mapping[str, Any] | None = field(default=None, repr=False)
    smart: Mapping[str, Any] = field(default_factory=dict, repr=False)
    dev_issuer: bool = False

    def issuer(self, name: str) -> IssuerConfig | None:
        for candidate in self.issuers:
            if candidate.issuer == name:
                return candidate
        return None

    def introspectors(self) -> tuple[IssuerConfig, ...]:
        return tuple(i for i in self.issuers if i.introspection_endpoint)


def _tuple(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.replace(",", " ").split() if v)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"auth configuration: '{name}' must be a string or a list of strings")


def issuer_from_json(data: Mapping[str, Any]) -> IssuerConfig:
    name = data.get("issuer")
    if not isinstance(name, str) or not name:
        raise ValueError("auth configuration: every issuer needs an 'issuer'")
    algorithms = _tuple(data.get("algorithms"), "algorithms") or DEFAULT_ALGORITHMS
    weak = set(algorithms) - ASYMMETRIC_ALGORITHMS
    if weak:
        raise ValueError(f"auth configuration: issuer {name}: only asymmetric algorithms, not {sorted(weak)}")
    config = IssuerConfig(
        issuer=name,
        audience=_tuple(data.get("audience"), "audience"),
        jwks_uri=data.get("jwks_uri") or None,
        static_jwks=data.get("jwks") or None,
        introspection_endpoint=data.get("introspection_endpoint") or None,
        introspection_client_id=data.get("introspection_client_id") or None,
        introspection_client_secret=data.get("introspection_client_secret") or None,
        algorithms=algorithms,
        tenant=data.get("tenant") or None,
        tenants=_tuple(data.get("tenants"), "tenants"),
    )
    if not config.verifies_locally and not config.introspection_endpoint:
        raise ValueError(f"auth configuration: issuer {name} needs 'jwks_uri' (or 'jwks') or 'introspection_endpoint'")
    return config


def _load_json(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    if raw.lstrip().startswith(("{", "[")):
        text = raw
    else:
        try:
            text = Path(raw).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"FHIRFLOW_AUTH_CONFIG: cannot read {raw!r}: {exc.strerror}") from exc
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("FHIRFLOW_AUTH_CONFIG must be a JSON object")
    return data


_SCALARS = {
    "scope_claim": str,
    "patient_claim": str,
    "fhir_user_claim": str,
    "groups_claim": str,
    "clock_skew_seconds": int,
    "denied_read_status": int,
    "jwks_min_refresh_seconds": float,
    "jwks_max_age_seconds": float,
    "introspection_cache_seconds": float,
    "cache_size": int,
}


def auth_config(settings: Settings, *, dev_jwks: Mapping[str, Any] | None = None) -> AuthConfig:
    """The configuration for ``settings.auth`` (``smart`` or ``rbac``). With ``settings.auth_dev_issuer``
    the development issuer is trusted too (``dev_jwks``: its public keys, read from the data dir by default)."""
    from fhirflow.authz import devissuer

    data = _load_json(settings.auth_config)
    issuers = [issuer_from_json(i) for i in data.get("issuers") or []]
    if settings.auth_issuer:
        issuers.append(
            issuer_from_json(
                {
                    "issuer": settings.auth_issuer,
                    "audience": settings.auth_audience,
                    "jwks_uri": settings.auth_jwks_uri,
                    "introspection_endpoint": settings.auth_introspection_url,
                }
            )
        )
    tenant_claim = data.get("tenant_claim")
    if settings.auth_dev_issuer:
        devissuer.ensure_embedded(settings)
        if dev_jwks is None:
            dev_jwks = devissuer.DevIssuer(settings.data_dir).public_jwks()
        issuers.append(
            IssuerConfig(
                issuer=devissuer.DEV_ISSUER,
                audience=(devissuer.DEV_AUDIENCE,),
                static_jwks=dev_jwks,
                algorithms=(devissuer.DEV_ALGORITHM,),
                tenants=("*",),  # `fhirflow token --tenant`: the development issuer's own choice
            )
        )
        tenant_claim = tenant_claim or devissuer.DEV_TENANT_CLAIM
    if not issuers:
        raise ValueError(
            f"FHIRFLOW_AUTH={settings.auth} needs an issuer: FHIRFLOW_AUTH_ISSUER with FHIRFLOW_AUTH_JWKS_URI or "
            "FHIRFLOW_AUTH_INTROSPECTION_URL, or 'issuers' in FHIRFLOW_AUTH_CONFIG"
        )
    names = [i.issuer for i in issuers]
    if len(set(names)) != len(names):
        raise ValueError("auth configuration: an issuer is configured twice")
    options: dict[str, Any] = {}
    for key, kind in _SCALARS.items():
        if key in data:
            options[key] = kind(data[key])
    denied = options.get("denied_read_status", 404)
    if denied not in (403, 404):
        raise ValueError("auth configuration: 'denied_read_status' must be 403 or 404")
    if "admin_user_types" in data:
        options["admin_user_types"] = _tuple(data["admin_user_types"], "admin_user_types")
    if "token_types" in data:
        options["token_types"] = _tuple(data["token_types"], "token_types")
    smart = data.get("smart") or {}
    if not isinstance(smart, dict):
        raise ValueError("auth configuration: 'smart' must be an object")
    flat = {"token_endpoint": settings.auth_token_url, "authorization_endpoint": settings.auth_authorize_url}
    smart = {**{k: v for k, v in flat.items() if v}, **smart}
    from fhirflow.authz.discovery import check_smart

    check_smart(smart)
    return AuthConfig(
        mode=settings.auth,
        issuers=tuple(issuers),
        tenant_claim=tenant_claim or None,
        rbac_rules=data.get("rbac_rules"),
        smart=smart,
        dev_issuer=settings.auth_dev_issuer,
        **options,
    )
