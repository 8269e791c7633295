"""The Subscription write hook: the crud write path calls :func:`on_write` for every new version of
a Subscription a client writes (create, update, PATCH, conditional writes and bundle entries all
build their version in ``fhirflow_crud.writes.next_version``).

It checks the subscription (:mod:`fhirflow_subscriptions.spec`: channel, criteria, payload, end,
status; the endpoint against the SSRF policy), checks that the writer may read what it subscribes
to, and moves the secrets out of the resource: ``channel.header`` values and the Standard Webhooks
signing secret are stored in the state store under the new version (before the version commits:
a write that then fails leaves only an unread row) and the resource keeps ``*****`` in their place.
On update, a ``*****`` value keeps the previous secret of that header. The owner context (who wrote
this version) is stored with them, for the re-check at each notification, and the resource is
tagged with its owner (``fhirflow.authz.ownership``): patient- and user-scoped tokens reach only
their own subscriptions.

The signing secret is generated on create and shown once, in the create response
(:func:`reveal`); a client may supply its own in the extension, and supplying a new one later
rotates it: the old one keeps signing alongside for ``subscriptions_secret_overlap_seconds``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fhirflow import jsonio, versioning
from fhirflow.errors import BadRequest
from fhirflow.subscription_ports import Secrets
from fhirflow_subscriptions.spec import (
    CLIENT_STATUSES,
    REDACTED,
    SIGNING_SECRET,
    SubscriptionSpec,
    read_subscription,
)

if TYPE_CHECKING:
    from fhirflow.model import FhirRequest
    from fhirflow.ports import ResourceVersion
    from fhirflow.runtime import Dependencies
    from fhirflow.settings import Settings
    from fhirflow.subscription_ports import SubscriptionStateStore
    from fhirflow_subscriptions.ssrf import EndpointPolicy

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "transfer-encoding", "connection", "webhook-id", "webhook-timestamp"}
    | {"webhook-signature", "expect", "te", "upgrade"}
)
"""Headers the server sets itself; a channel.header may not replace them."""
_stores: dict[str, SubscriptionStateStore] = {}


def state_store(settings: Settings) -> SubscriptionStateStore:
    """The settings' state store (SQLite in the embedded mode), one per database per process.

    With the DynamoDB store: the DynamoDB table where ``FHIRFLOW_SUBSCRIPTIONS_TABLE`` is set (the
    deployed stack, whose matcher and deliverer Lambdas use it: fhirflow_subscriptions.aws); without
    it nothing would match and deliver, so a Subscription is refused with 501 rather than accepted
    and left to never fire."""
    if settings.store == "dynamodb" and settings.subscriptions_table:  # AWS (subs-aws)
        from fhirflow_subscriptions.aws import dynamodb_state

        return dynamodb_state(settings)
    if settings.store != "sqlite":
        from fhirflow.errors import NotImplementedFhir

        raise NotImplementedFhir(
            "Subscriptions are not available with the DynamoDB store yet; the embedded (SQLite) server has them"
        )
    from fhirflow.adapters.sqlite.subscriptions import SqliteSubscriptionState
    from fhirflow.runtime import sqlite_database

    key = str(settings.sqlite_path.resolve())
    found = _stores.get(key)
    if found is None:
        found = _stores[key] = SqliteSubscriptionState(sqlite_database(settings))
    return found


def endpoint_policy(settings: Settings, tenant: str) -> EndpointPolicy:
    from fhirflow_subscriptions.ssrf import EndpointPolicy

    return EndpointPolicy(
        allow_private=settings.subscriptions_allow_private,
        allow_http=settings.subscriptions_allow_http,
        allow_list=allow_list(settings, tenant),
    )


def allow_list(settings: Settings, tenant: str) -> tuple[str, ...]:
    raw = settings.subscriptions_allow_list
    if not raw:
        return ()
    try:
        table = json.loads(raw)
    except ValueError:
        table = {"*": raw.split()}  # a plain space-separated list applies to every tenant
    if not isinstance(table, dict):
        return ()
    patterns = table.get(tenant, table.get("*"))
    return tuple(p for p in patterns if isinstance(p, str)) if isinstance(patterns, list) else ()


def on_write(
    deps: Dependencies,
    request: FhirRequest,
    id_: str,
    version: int,
    resource: dict[str, Any],
    head: ResourceVersion | None,
) -> dict[str, Any]:
    """The resource to store for this client write of a Subscription (secrets redacted); 400 naming
    the element for anything refused."""
    from fhirflow.runtime import search_param_catalog
    from fhirflow_subscriptions.ssrf import check_endpoint

    resource = _server_owned(resource, head)
    kept = resource.get("status") in ("active", "error")  # unchanged (else _server_owned refused it)
    spec = read_subscription(
        {**resource, "status": "requested"} if kept else resource,
        tenant=request.tenant,
        now_ms=deps.clock.now_ms(),
        catalog=search_param_catalog(deps.settings),
        base_url=request.base_url,
    )
    # Subscribing is reading: the owner must be allowed to search what the criteria or topic name.
    deps.policy.authorize(request, "search-type", spec.resource_type)
    check_endpoint(spec.endpoint, endpoint_policy(deps.settings, request.tenant))
    store = state_store(deps.settings)
    previous = store.secrets(request.tenant, id_, head.version) if head is not None and not head.deleted else None
    channel = dict(resource["channel"])
    headers, shown = _headers(channel.get("header"), previous)
    if shown:
        channel["header"] = shown
    signing, extensions = _signing(channel.get("extension"), previous, deps)
    channel["extension"] = extensions
    store.put_secrets(request.tenant, id_, Secrets(version, headers, signing, owner_context(request)))
    store.note_write(request.tenant, id_, version, deps.clock.now_ms())
    return _owned({**resource, "channel": channel}, request, head)


def _owned(resource: dict[str, Any], request: FhirRequest, head: ResourceVersion | None) -> dict[str, Any]:
    """The subscription marked as its owner's (fhirflow.authz.ownership): the creator's, kept by
    every later version (only the owner, or an unrestricted token, can write one), whatever owner
    tag the client sent."""
    from fhirflow.authz.ownership import owner_tag, tag_of, with_owner

    current = jsonio.loads(head.body) if head is not None and not head.deleted and head.body else None
    return with_owner(resource, tag_of(current) or owner_tag(request.principal, request.tenant))


def _server_owned(resource: dict[str, Any], head: ResourceVersion | None) -> dict[str, Any]:
    """``status`` and ``error`` are the server's. A client writes ``requested`` or ``off`` (and the
    error goes: a new request starts afresh), or sends back the status it read (``active``/``error``,
    e.g. a read-modify-write or a PATCH of another element): then status and error stay as they are."""
    current = jsonio.loads(head.body) if head is not None and not head.deleted and head.body else None
    status = resource.get("status")
    if status in ("active", "error") and isinstance(current, dict) and current.get("status") == status:
        kept = {k: v for k, v in resource.items() if k != "error"}
        if current.get("error"):
            kept["error"] = current["error"]
        return kept
    if status in CLIENT_STATUSES:
        return {k: v for k, v in resource.items() if k != "error"}
    raise BadRequest(
        f"A client may set Subscription.status only to 'requested' or 'off' (or leave it as it is), not "
        f"'{status}': the server moves it to 'active' or 'error' (subscription.html#status)",
        expression="Subscription.status",
    )


def _headers(values: object, previous: Secrets | None) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    if not isinstance(values, list):
        return (), []
    before = {name.lower(): value for name, value in previous.headers} if previous else {}
    out: list[tuple[str, str]] = []
    shown: list[str] = []
    for index, raw in enumerate(values):
        expression = f"Subscription.channel.header[{index}]"
        name, sep, value = str(raw).partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not _HEADER_NAME.match(name) or any(c in value for c in "\r\n\0"):
            raise BadRequest("A channel.header must read 'Name: value'", expression=expression)
        if name.lower() in RESERVED_HEADERS:
            raise BadRequest(f"The server sets the '{name}' header itself", expression=expression)
        if value == REDACTED:
            if name.lower() not in before:
                raise BadRequest(
                    f"'{REDACTED}' keeps a header's previous value, but '{name}' had none", expression=expression
                )
            value = before[name.lower()]
        out.append((name, value))
        shown.append(f"{name}: {REDACTED}")
    return tuple(out), shown


def _signing(
    extensions: object, previous: Secrets | None, deps: Dependencies
) -> tuple[tuple[tuple[str, int | None], ...], list[Any]]:
    from fhirflow_subscriptions.signing import new_secret, validate_secret

    now = deps.clock.now_ms()
    others = (
        [e for e in extensions if not (isinstance(e, dict) and e.get("url") == SIGNING_SECRET)]
        if isinstance(extensions, list)
        else []
    )
    supplied = None
    if isinstance(extensions, list):
        for index, ext in enumerate(extensions):
            if isinstance(ext, dict) and ext.get("url") == SIGNING_SECRET:
                value = ext.get("valueString")
                if value != REDACTED:
                    expression = f"Subscription.channel.extension[{index}]"
                    if not isinstance(value, str):
                        raise BadRequest("The signing secret needs a valueString", expression=expression)
                    validate_secret(value, expression=expression)
                    supplied = value
    kept = [(s, until) for s, until in (previous.signing if previous else ()) if until is None or until > now]
    if supplied is None:
        signing = kept or [(new_secret(), None)]
    elif any(s == supplied and until is None for s, until in kept):
        signing = kept
    else:
        overlap = now + deps.settings.subscriptions_secret_overlap_seconds * 1000
        signing = [(supplied, None)] + [(s, min(until or overlap, overlap)) for s, until in kept if s != supplied]
    return tuple(signing), [*others, {"url": SIGNING_SECRET, "valueString": REDACTED}]


def owner_context(request: FhirRequest) -> dict[str, Any]:
    """Who wrote the subscription: enough to re-check, at each notification, what they may read."""
    from fhirflow.authz.principal import Principal

    principal = request.principal
    owner: dict[str, Any] = {"tenant": request.tenant, "base_url": request.base_url}
    if isinstance(principal, Principal):
        owner["principal"] = {
            "sub": principal.sub,
            "client_id": principal.client_id,
            "issuer": principal.issuer,
            "scopes": " ".join(scope.text for scope in principal.scopes),
            "patient": principal.patient,
            "fhir_user": principal.fhir_user_reference,
            "tenant": principal.tenant,
            "groups": list(principal.groups),
        }
    return owner


def reveal(deps: Dependencies, stored: ResourceVersion) -> ResourceVersion:
    """The stored version as the create response shows it: with the signing secret in clear, once."""
    secrets = state_store(deps.settings).secrets(stored.tenant, stored.id, stored.version)
    if secrets is None or stored.body is None:
        return stored
    current = [s for s, until in secrets.signing if until is None]
    resource = jsonio.loads(stored.body)
    channel = resource.get("channel", {})
    for ext in channel.get("extension", []):
        if ext.get("url") == SIGNING_SECRET and current:
            ext["valueString"] = current[0]
    return replace(stored, body=versioning.serialise(resource), resource=resource)


def spec_of(resource: dict[str, Any], tenant: str, *, catalog: Any = None, base_url: str = "") -> SubscriptionSpec:
    """The spec of a stored (already accepted) subscription, whatever its status; ``end`` is not
    re-checked here (the service turns a subscription off when ``end`` passes)."""
    probe = {k: v for k, v in resource.items() if k != "end"}
    probe["status"] = "requested"
    spec = read_subscription(probe, tenant=tenant, now_ms=int(time.time() * 1000), catalog=catalog, base_url=base_url)
    end = resource.get("end")
    if isinstance(end, str):
        from fhirflow.timefmt import datetime_range

        spec = replace(spec, end_ms=datetime_range(end, name="Subscription.end")[1])
    return spec
