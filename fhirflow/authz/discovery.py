"""How clients learn to authorize: ``GET [base]/.well-known/smart-configuration`` (SMART App Launch
conformance.html#using-well-known) and the CapabilityStatement's ``rest.security``
(http://hl7.org/fhir/R4/capabilitystatement-definitions.html#CapabilityStatement.rest.security)
with the SMART ``oauth-uris`` extension, kept for clients written against SMART v1.

Both are built from the configuration (the IdP's endpoints live in ``smart`` of
``FHIRFLOW_AUTH_CONFIG``); the permission capabilities are facts of this server.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from fhirflow.errors import NotFound
from fhirflow.model import FhirResponse

if TYPE_CHECKING:
    from fhirflow.authz.config import AuthConfig, IssuerConfig
    from fhirflow.model import FhirRequest
    from fhirflow.settings import Settings

# What this resource server enforces, whatever the IdP: patient/ and user/ scopes, v1 and v2 syntax.
SERVER_CAPABILITIES = ("permission-patient", "permission-user", "permission-v1", "permission-v2")
DEFAULT_SCOPES = (
    "openid",
    "fhirUser",
    "launch",
    "launch/patient",
    "offline_access",
    "patient/*.cruds",
    "user/*.cruds",
    "system/*.cruds",
    "patient/*.*",
    "user/*.*",
    "system/*.*",
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
    smart = dict(config.smart)
    issuer = _issuer_for(config, tenant)
    doc: dict[str, Any] = {"issuer": issuer.issuer}
    if issuer.jwks_uri:
        doc["jwks_uri"] = issuer.jwks_uri
    if issuer.introspection_endpoint:
        doc["introspection_endpoint"] = issuer.introspection_endpoint
    doc["grant_types_supported"] = ["authorization_code", "client_credentials"]
    doc["scopes_supported"] = list(DEFAULT_SCOPES)
    doc["response_types_supported"] = ["code"]
    doc["code_challenge_methods_supported"] = ["S256"]
    doc.update({k: v for k, v in smart.items() if k != "capabilities"})
    extra = smart.get("capabilities") or []
    doc["capabilities"] = sorted(set(SERVER_CAPABILITIES) | {c for c in extra if isinstance(c, str)})
    if config.dev_issuer:
        doc.setdefault(
            "description", "Development issuer: mint access tokens with `fhirflow token --scope ... --patient ...`"
        )
    return doc


def smart_configuration_response(settings: Settings, request: FhirRequest) -> FhirResponse:
    """The discovery document, always ``application/json`` (conformance.html: regardless of Accept)."""
    if settings.auth == "off":
        raise NotFound("Authorization is off on this server; there is no SMART configuration to discover")
    from fhirflow.routes import TENANT_PREFIX

    tenant = request.tenant if request.route.startswith(TENANT_PREFIX) else None
    document = smart_configuration(_config(settings), tenant=tenant)
    return FhirResponse(status=200, binary=orjson.dumps(document), content_type="application/json")


def capability_security(settings: Settings, *, tenant: str | None = None) -> dict[str, Any] | None:
    """``CapabilityStatement.rest.security`` for the configured mode, or None when authorization is off."""
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
