"""The 401/403 answers of a bearer-token resource server (RFC 6750 §3), with generic diagnostics.

Nothing about *why* a token failed reaches the client (which check, which key, which claim):
that is for our logs. The ``WWW-Authenticate`` challenge carries only the RFC 6750 error code.
"""

from __future__ import annotations

from fhirflow.errors import Forbidden, ServiceUnavailable, Unauthorized

REALM = "fhirflow"


def missing_token() -> Unauthorized:
    # RFC 6750 §3.1: no error code when the request carried no credentials at all.
    return Unauthorized(
        "This server requires an OAuth 2.0 bearer access token", headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'}
    )


def invalid_request() -> Unauthorized:
    return Unauthorized(
        "The Authorization header must be 'Bearer <access token>'",
        headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_request"'},
    )


def invalid_token() -> Unauthorized:
    return Unauthorized(
        "The access token is not valid",
        headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token"'},
    )


def insufficient_scope(diagnostics: str = "The access token does not allow this interaction") -> Forbidden:
    return Forbidden(diagnostics, headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope"'})


def wrong_tenant() -> Forbidden:
    return Forbidden(
        "The access token is not valid for this tenant",
        headers={"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope"'},
    )


def identity_provider_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The access token cannot be checked right now; retry shortly", headers={"Retry-After": "5"}
    )
