"""Settings → the authenticator, the access policy and the audit sink (called by
:func:`fhirflow.runtime.build_dependencies`, once per process, without network I/O)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fhirflow.authz.audit import AuditSink
    from fhirflow.authz.authenticator import BearerAuthenticator
    from fhirflow.ports import AccessPolicy, Clock, ResourceStore
    from fhirflow.settings import Settings

AUTH_MODES = ("off", "smart", "rbac")
AUDIT_MODES = ("off", "log", "file", "auditevent")


def build_auth(settings: Settings, store: ResourceStore | None = None) -> tuple[BearerAuthenticator, AccessPolicy]:
    """For ``settings.auth`` ``smart`` or ``rbac``; raises ValueError for a bad configuration."""
    from fhirflow.authz.authenticator import BearerAuthenticator
    from fhirflow.authz.config import auth_config
    from fhirflow.authz.fetch import check_url

    if settings.auth not in AUTH_MODES or settings.auth == "off":
        raise ValueError(f"FHIRFLOW_AUTH must be one of {', '.join(AUTH_MODES[1:])} to build an authenticator")
    config = auth_config(settings)
    for issuer in config.issuers:
        for url in (issuer.jwks_uri, issuer.introspection_endpoint):
            if url:
                check_url(url)
    policy: AccessPolicy
    if config.mode == "rbac":
        from fhirflow.authz.rbac import GroupPolicy

        policy = GroupPolicy(config.rbac_rules)
    else:
        from fhirflow.authz.policy import SmartPolicy

        policy = SmartPolicy(config, store)
    return BearerAuthenticator(config), policy


def build_audit(settings: Settings, store: ResourceStore, clock: Clock) -> AuditSink | None:
    from fhirflow.authz import audit

    if settings.audit == "off":
        return None
    if settings.audit == "log":
        return audit.LoggingAuditSink()
    if settings.audit == "file":
        return audit.JsonLinesAuditSink(settings.data_dir / "audit.jsonl")
    if settings.audit == "auditevent":
        return audit.AuditEventSink(store, clock)
    raise ValueError(f"FHIRFLOW_AUDIT must be one of {', '.join(AUDIT_MODES)}, not '{settings.audit}'")
