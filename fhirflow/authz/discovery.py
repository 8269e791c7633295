"""How clients learn to authorize: ``GET [base]/.well-known/smart-configuration`` (SMART App Launch
2.x, conformance.html#metadata) and the CapabilityStatement's ``rest.security``
(http://hl7.org/fhir/R4/capabilitystatement-definitions.html#CapabilityStatement.rest.security)
with the SMART ``oauth-uris`` extension, kept for clients written against SMART v1.

Both are derived from what is configured (``smart`` in ``FHIRFLOW_AUTH_CONFIG``, or
``FHIRFLOW_AUTH_TOKEN_URL``/``FHIRFLOW_AUTH_AUTHORIZE_URL``), never from fixed lists, so a client
is never told of a grant, a launch or a scope the deployment cannot serve:

- an authorization endpoint brings ``authorization_code``, ``launch-standalone``,
  ``context-standalone-patient``, ``response_types_supported`` and PKCE (``S256`` only: SMART
  2.x forbids ``plain``), and the ``patient/``/``user/`` and launch scopes;
- a token endpoint brings ``client_credentials`` (SMART Backend Services), and with it
  ``private_key_jwt`` and ``client-confidential-asymmetric`` (the only client authentication
  Backend Services allows), and the ``system/`` scopes;
- ``permission-*`` are facts of this resource server in SMART mode (v1 and v2 syntax, patient
  and user scopes); RBAC mode enforces token groups instead, so it claims none of them.

Any of these can be set explicitly in ``smart`` (the IdP's truth wins); other keys of ``smart``
are published as given. A capability that needs an authorization endpoint while none is
configured is a configuration error at startup.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from fhirflow.errors import NotFound
from fhirflow.model import FhirResponse

if TYPE_CHECKING:
    from fhirflow.authz.config import AuthConfig, IssuerConfig
    from fhirflow.model import FhirRequest
    from fhirflow.settings import Settings

# What this resource server enforces in SMART mode, whatever the IdP: patient/ and user/ scopes, v1 and v2.
SERVER_CAPABILITIES = ("permission-patient", "permission-user", "permission-v1", "permission-v2")
LAUNCH_SCOPES = ("openid", "fhirUser", "launch", "launch/patient", "offline_access")
USER_SCOPES = ("patient/*.rs", "patient/*.cruds", "patient/*.read", "patient/*.*", "user/*.rs", "user/*.cruds")
USER_SCOPES_V1 = ("user/*.read", "user/*.*")
SYSTEM_SCOPES = ("system/*.rs", "system/*.cruds", "system/*.read", "system/*.*")
NEEDS_AUTHORIZE = frozenset(
    {
        "launch-standalone",
        "launch-ehr",
        "authorize-post",
        "context-standalone-patient",
        "context-standalone-encounter",
        "context-ehr-patient",
        "context-ehr-encounter",
        "context-banner",
        "context-style",
        "client-public",
    }
)
"""SMART capabilities that only make sense with an authorization endpoint (the launch flows)."""
_LISTS = (
    "capabilities",
    "grant_types_supported",
    "scopes_supported",
    "token_endpoint_auth_methods_supported",
    "response_types_supported",
    "code_challenge_methods_supported",
)
_OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
_URI_EXTENSIONS = {
    "authorization_endpoint": "authorize",
    "token_endpoint": "token",
    "introspection_endpoint": "introspect",
    "revocation_endpoint": "revoke",
    "management_endpoint": "manage",
    "registration_endpoint": "register",
}


def check_smart(smart: Mapping[str, Any]) -> None:
    """Raise ValueError for a ``smart`` section a client could not rely on (called at startup)."""
    for key, value in smart.items():
        if key in _LISTS and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ValueError(f"auth configuration: 'smart.{key}' must be a list of strings")
        if key.endswith(("_endpoint", "_uri")) and not (isinstance(value, str) and value):
            raise ValueError(f"auth configuration: 'smart.{key}' must be a URL")
    if "plain" in (smart.get("code_challenge_methods_supported") or []):
        raise ValueError("auth configuration: SMART App Launch 2.x forbids the PKCE method 'plain'")
    if not smart.get("authorization_endpoint"):
        launch = sorted(NEEDS_AUTHORIZE & set(smart.get("capabilities") or []))
        if launch:
            raise ValueError(f"auth configuration: capabilities {launch} need 'smart.authorization_endpoint'")


@lru_cache(maxsize=8)
def _config(settings: Settings) -> AuthConfig:
    from fhirflow.authz.config import auth_config

    return auth_config(settings)


def _issuer_for(config: AuthConfig, tenant: str | None) -> IssuerConfig:
    for issuer in config.issuers:
        if tenant is not None and issuer.tenant == tenant:
            return issuer
    unbound = [i for i in config.issuers if i.tenant is None]
    return (unbound or list(config.issuers))[0]


def smart_configuration(config: AuthConfig, *, tenant: str | None = None) -> dict[str, Any]:
    """The discovery document for ``tenant``'s issuer (conformance.html#metadata)."""
    smart = dict(config.smart)
    issuer = _issuer_for(config, tenant)
    authorize = smart.get("authorization_endpoint")
    token = smart.get("token_endpoint")
    doc: dict[str, Any] = {"issuer": issuer.issuer}
    if issuer.jwks_uri:
        doc["jwks_uri"] = issuer.jwks_uri
    if issuer.introspection_endpoint:
        doc["introspection_endpoint"] = issuer.introspection_endpoint
    grants = [*(["authorization_code"] if authorize else []), *(["client_credentials"] if token else [])]
    doc["grant_types_supported"] = grants
    if token:
        doc["token_endpoint_auth_methods_supported"] = ["private_key_jwt"]
    doc["scopes_supported"] = _scopes(config, authorize=bool(authorize), token=bool(token))
    if authorize:
        doc["response_types_supported"] = ["code"]
        doc["code_challenge_methods_supported"] = ["S256"]
    doc.update(smart)  # the IdP's own truth, where the deployment states it
    doc["capabilities"] = _capabilities(config, doc, explicit=smart.get("capabilities") or [])
    if config.dev_issuer:
        doc.setdefault(
            "description", "Development issuer: mint access tokens with `fhirflow token --scope ... --patient ...`"
        )
    return doc


def _scopes(config: AuthConfig, *, authorize: bool, token: bool) -> list[str]:
    if config.mode != "smart":
        return ["openid", "fhirUser"] if authorize else []
    scopes: list[str] = []
    if authorize:
        scopes += [*LAUNCH_SCOPES, *USER_SCOPES, *USER_SCOPES_V1]
    elif config.dev_issuer:  # `fhirflow token` mints patient/ and user/ tokens too, without a launch
        scopes += [*USER_SCOPES, *USER_SCOPES_V1]
    if token or not authorize:  # tokens minted elsewhere (the development issuer) are backend tokens too
        scopes += SYSTEM_SCOPES
    return scopes


def _capabilities(config: AuthConfig, doc: Mapping[str, Any], *, explicit: list[str]) -> list[str]:
    found = set(explicit)
    if config.mode == "smart":
        found |= set(SERVER_CAPABILITIES)
    if doc.get("authorization_endpoint"):
        found |= {"launch-standalone", "context-standalone-patient"}
    if doc.get("token_endpoint") and "private_key_jwt" in (doc.get("token_endpoint_auth_methods_supported") or []):
        found.add("client-confidential-asymmetric")
    if "client_secret_basic" in (doc.get("token_endpoint_auth_methods_supported") or []):
        found.add("client-confidential-symmetric")
    return sorted(found)


def smart_configuration_response(settings: Settings, request: FhirRequest) -> FhirResponse:
    """The discovery document, always ``application/json`` (conformance.html: regardless of Accept)."""
    if settings.auth == "off":
        raise NotFound("Authorization is off on this server; there is no SMART configuration to discover")
    from fhirflow.routes import TENANT_PREFIX

    tenant = request.tenant if request.route.startswith(TENANT_PREFIX) else None
    document = smart_configuration(_config(settings), tenant=tenant)
    return FhirResponse(status=200, binary=orjson.dumps(document), content_type="application/json")


def capability_security(settings: Settings, *, tenant: str | None = None) -> dict[str, Any] | None:
    """``CapabilityStatement.rest.security`` for the configured mode, or None when authorization is off:
    the same endpoints as the discovery document (one source), as the ``oauth-uris`` extension."""
    if settings.auth == "off":
        return None
    config = _config(settings)
    document = smart_configuration(config, tenant=tenant)
    uris = [
        {"url": name, "valueUri": document[key]}
        for key, name in _URI_EXTENSIONS.items()
        if isinstance(document.get(key), str)
    ]
    code = "SMART-on-FHIR" if config.mode == "smart" else "OAuth"
    security: dict[str, Any] = {
        "service": [
            {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": code}],
                "text": "OAuth 2.0 bearer tokens, SMART App Launch scopes"
                if config.mode == "smart"
                else "OAuth 2.0 bearer tokens, group-based access",
            }
        ],
        "description": "See [base]/.well-known/smart-configuration for the authorization endpoints and capabilities.",
    }
    if uris:
        security["extension"] = [{"url": _OAUTH_URIS, "extension": uris}]
    return security
