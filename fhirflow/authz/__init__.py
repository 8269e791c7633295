"""Authorization: SMART on FHIR token validation, scope and compartment enforcement, RBAC,
tenancy, discovery and audit (DESIGN.md §5).

Importing the package is cheap on purpose (it runs on every cold start): the modules that need
``joserfc``/``cryptography`` or the search-parameter registry import them on first use.

- :mod:`~fhirflow.authz.scopes` — the SMART v1/v2 scope grammar, parsed once per token;
- :mod:`~fhirflow.authz.principal` — who is calling (:class:`~fhirflow.authz.principal.Principal`);
- :mod:`~fhirflow.authz.tokens`, :mod:`~fhirflow.authz.jwks`, :mod:`~fhirflow.authz.introspection` —
  JWT verification against a cached JWKS, or RFC 7662 introspection for opaque tokens;
- :mod:`~fhirflow.authz.authenticator` — bearer token → principal, with the tenant binding;
- :mod:`~fhirflow.authz.policy` — the SMART access policy (scopes, compartments and granular filters);
- :mod:`~fhirflow.authz.rbac` — the group-based alternative (FWoA's Cognito groups);
- :mod:`~fhirflow.authz.relationships` — the optional fine-grained (OpenFGA-style) hook;
- :mod:`~fhirflow.authz.devissuer` — the embedded mode's development issuer;
- :mod:`~fhirflow.authz.discovery` — ``/.well-known/smart-configuration`` and ``rest.security``;
- :mod:`~fhirflow.authz.audit` — one structured audit record per request;
- :mod:`~fhirflow.authz.build` — settings → authenticator, policy and audit sink.
"""
