"""Who owns a background job ($export, ``Prefer: respond-async`` bundles) and what a later request
must hold to see it.

A job runs long after the request that started it, and its results (export files, a
batch-response) hold what that request's token could read. So a job is bound to the principal
that started it, as issuer, subject **and** client (bulk data export.html, "the server SHOULD
ensure that the client requesting the status and files is the same client that started the
export"): another app of the same user, or another backend client without a ``sub``, is someone
else. A token that names neither a subject nor a client identifies nobody a job could be bound to,
so it cannot start one. For anyone but the owner a job does not exist (404, as for an id never
issued).

The owner is also re-checked for *reach* whenever results are fetched: a token of the same
principal that may no longer read what the job read (narrower scopes, another patient context)
gets 403, not the results.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fhirflow.authz import challenges

Owner = tuple[str | None, str | None, str | None]
"""(issuer, subject, client id)."""

OWNED_TYPES = frozenset({"Subscription"})
"""Resources in no compartment that belong to whoever created them (the same owner as a job's):
a ``patient/`` or ``user/`` scope on the type reaches the ones its principal owns and no others
(:mod:`fhirflow.authz.policy`); ``system/`` scopes and admin users reach all of them."""
OWNER_TAG = "https://fhirflow.dev/fhir/CodeSystem/owner"
"""The ``meta.tag`` system that marks an owned resource's owner; the code is :func:`owner_code`, a
digest, so the tag names no one. The server sets it on every write; a client's is replaced."""


def owner_of(principal: object) -> Owner | None:
    """The job owner for a request's principal (None: authorization is off, there is no one)."""
    if principal is None:
        return None
    return (_text(principal, "issuer"), _text(principal, "sub"), _text(principal, "client_id"))


def require_owner(principal: object) -> Owner | None:
    """:func:`owner_of` for a request that starts a job: 403 when the token names no one."""
    owner = owner_of(principal)
    if owner is not None and owner[1] is None and owner[2] is None:
        raise challenges.insufficient_scope(
            "The access token names neither a subject (sub) nor a client (client_id, azp or cid): "
            "a background job could not be kept for its owner alone"
        )
    return owner


def reach_of(principal: object) -> dict[str, Any] | None:
    """What the principal may read, as stored with a job: its scopes and launch context (claim
    values that decide access, never the token)."""
    if principal is None:
        return None
    scopes = getattr(principal, "scopes", None) or ()
    fhir_user = getattr(principal, "fhir_user", None)
    return {
        "scopes": sorted({str(getattr(s, "text", "")) for s in scopes}),
        "patient": _text(principal, "patient"),
        "fhirUser": list(fhir_user) if fhir_user else None,
        "tenant": _text(principal, "tenant"),
        "groups": sorted(getattr(principal, "groups", ()) or ()),
    }


def check_reach(principal: object, granted: dict[str, Any] | None) -> None:
    """403 unless ``principal`` may read at least what the job's starter could: every scope the
    job was granted, the same launch context and tenant, every RBAC group."""
    current = reach_of(principal)
    if granted is None or current is None:
        if granted != current:
            raise challenges.insufficient_scope("This access token may not read what the job holds")
        return
    holds = (
        set(granted.get("scopes") or ()) <= set(current["scopes"])
        and set(granted.get("groups") or ()) <= set(current["groups"])
        and all(granted.get(key) == current[key] for key in ("patient", "fhirUser", "tenant"))
    )
    if not holds:
        raise challenges.insufficient_scope("This access token may not read what the job holds")


def _text(principal: object, name: str) -> str | None:
    value = getattr(principal, name, None)
    return value if isinstance(value, str) and value else None


def owner_code(tenant: str, owner: Owner) -> str:
    """The owner tag's code: a digest of tenant, issuer, subject and client (none of them in clear)."""
    text = "\0".join((tenant, *(part or "" for part in owner)))
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def owner_tag(principal: object, tenant: str) -> dict[str, str] | None:
    """The tag that marks a resource as ``principal``'s; None when the token names no one (neither
    subject nor client): such a token can own nothing, and reaches no owned resource."""
    owner = owner_of(principal)
    if owner is None or (owner[1] is None and owner[2] is None):
        return None
    return {"system": OWNER_TAG, "code": owner_code(tenant, owner)}


def tag_of(resource: dict[str, Any] | None) -> dict[str, str] | None:
    """The owner tag a stored resource carries, if any."""
    meta = resource.get("meta") if isinstance(resource, dict) else None
    tags = meta.get("tag") if isinstance(meta, dict) else None
    for tag in tags if isinstance(tags, list) else ():
        if isinstance(tag, dict) and tag.get("system") == OWNER_TAG and isinstance(tag.get("code"), str):
            return {"system": OWNER_TAG, "code": tag["code"]}
    return None


def with_owner(resource: dict[str, Any], tag: dict[str, str] | None) -> dict[str, Any]:
    """``resource`` with ``tag`` as its only owner tag (a client's own owner tags removed)."""
    meta = dict(resource.get("meta") or {}) if isinstance(resource.get("meta"), dict) else {}
    tags = meta.get("tag")
    kept = (
        [t for t in tags if not (isinstance(t, dict) and t.get("system") == OWNER_TAG)]
        if isinstance(tags, list)
        else []
    )
    if tag is not None:
        kept.append(dict(tag))
    if kept:
        meta["tag"] = kept
    else:
        meta.pop("tag", None)
    out = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        out["meta"] = meta
    return out
