"""create, update, patch and delete (http://hl7.org/fhir/R4/http.html#create, #update, #patch, #delete).

Every write is a :class:`Change` guarded by the version the writer saw. Without ``If-Match``
a lost race is retried on the new head (the client asked for "last writer wins"); with
``If-Match`` it is a 412, so that exactly one of several concurrent versioned updates wins.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fhirflow import bodies, jsonio, versioning
from fhirflow.errors import (
    BadRequest,
    FhirError,
    InvalidResource,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from fhirflow.ids import new_resource_id
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.pathparams import is_dot_segment
from fhirflow.ports import Change, Claim, ClaimTaken, Method, ResourceVersion, VersionConflict
from fhirflow.runtime import Dependencies
from fhirflow.validation import is_resource_type, validate_resource
from fhirflow_crud import binary_urls

if TYPE_CHECKING:
    from fhirflow.conditional import Resolution

MAX_RETRIES = 20


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: ResourceVersion
    resource: dict[str, Any] | None
    created: bool


def known_type(request: FhirRequest) -> str:
    rtype = request.resource_type
    if not is_resource_type(rtype):
        raise NotFound(f"'{rtype[:64]}' is not a FHIR R4 resource type this server knows")
    return rtype


def authorized_type(deps: Dependencies, request: FhirRequest, interaction: str) -> str:
    """The request's resource type, once it is known to exist and the principal may use it for ``interaction``."""
    rtype = known_type(request)
    deps.policy.authorize(request, interaction, rtype)
    return rtype


def within_reach(deps: Dependencies, request: FhirRequest, head: ResourceVersion | None) -> ResourceVersion | None:
    """``head`` as the caller may know it: None when there is no resource, or when the caller may
    neither read it nor do to it what the request does (the policy's ``knows``); a write then answers
    exactly as for an id that does not exist. A deletion is judged by the version it deleted, so a
    caller may recreate what was its own, and learns nothing of what was someone else's."""
    if head is None:
        return None
    judged = head
    if head.deleted and head.version > 1:
        judged = deps.store.version(request.tenant, head.type, head.id, head.version - 1) or head
    return head if deps.policy.knows(request, judged) else None


def unknown_to_caller(deps: Dependencies, request: FhirRequest, head: ResourceVersion) -> FhirError:
    """What a read of ``head`` answers this caller, who may not know it: the policy's denial, word for
    word what a missing resource gets (404; 403 where the deployment prefers it for reads)."""
    try:
        deps.policy.check_read(request, head)
    except FhirError as denial:
        return denial
    return NotFound(f"{head.type}/{head.id} is not known")


def check_id(value: str) -> str:
    if not (0 < len(value) <= 64) or not all(c.isascii() and (c.isalnum() or c in "-.") for c in value):
        raise BadRequest(f"'{value[:80]}' is not a valid resource id ([A-Za-z0-9-.]{{1,64}})", expression="id")
    if is_dot_segment(value):
        # Valid by the id regex, but a URL cannot carry it: clients remove dot-segments (RFC 3986 §5.2.4).
        raise BadRequest(f"'{value}' cannot be a resource id: no URL could address it", expression="id")
    return value


def if_match(request: FhirRequest) -> int | None:
    raw = request.header("if-match")
    return None if raw is None else versioning.parse_etag(raw)


def validated(resource: dict[str, Any], rtype: str) -> dict[str, Any]:
    issues = validate_resource(resource, expected_type=rtype)
    if issues:
        raise InvalidResource(f"The {rtype} is not valid: {issues[0].diagnostics}", issues=issues)
    if rtype == "SearchParameter" and resource.get("status") == "active":
        # An active one is indexed from now on: refuse one the server could not index (DESIGN.md §4).
        from fhirflow.searchparams.custom import check_search_parameter

        check_search_parameter(resource)
    return resource


def resource_from_body(request: FhirRequest, deps: Dependencies, rtype: str) -> dict[str, Any]:
    """The request's resource. A Binary's content is taken as it is, whatever its media type, unless
    the body is itself a Binary resource in FHIR JSON (binary.html#rest)."""
    if rtype == "Binary" and not _is_binary_resource(request):
        bodies.check_size(request, deps.settings.max_body_bytes)
        binary_urls.check_inline_size(deps, len(request.body))
        binary: dict[str, Any] = {
            "resourceType": "Binary",
            "contentType": request.header("content-type") or "application/octet-stream",
        }
        context = request.header("x-security-context")
        if context:
            binary["securityContext"] = {"reference": context}
        if request.body:
            binary["data"] = base64.b64encode(request.body).decode("ascii")
        return binary
    resource = bodies.parse_resource(request, limit=deps.settings.max_body_bytes, expected_type=rtype)
    if rtype == "Binary":
        binary_urls.check_inline_size(deps, binary_urls.inline_size(resource))
    return resource


def _is_binary_resource(request: FhirRequest) -> bool:
    if not bodies.is_json_body(request) or not request.body.lstrip().startswith(b"{"):
        return False
    try:
        parsed = jsonio.loads(request.body)
    except BadRequest:
        return False
    return isinstance(parsed, dict) and parsed.get("resourceType") == "Binary"


def next_version(
    deps: Dependencies,
    request: FhirRequest,
    rtype: str,
    id_: str,
    resource: dict[str, Any] | None,
    *,
    method: Method,
    head: ResourceVersion | None,
) -> ResourceVersion:
    """The version after ``head`` (None: the resource does not exist), stamped; ``resource`` None
    is a deletion. Its lastUpdated never goes backwards within one resource."""
    version = head.version + 1 if head else 1
    last_updated = deps.clock.now_ms()
    if head and last_updated <= head.last_updated:
        last_updated = head.last_updated + 1
    body = stamped = None
    if rtype == "Subscription" and resource is not None:
        # Checked, its secrets moved to the subscriptions state store (fhirflow_subscriptions.hook).
        from fhirflow_subscriptions.hook import on_write

        resource = on_write(deps, request, id_, version, resource, head)
    if resource is not None:
        stamped = versioning.stamp(resource, id_=id_, version=version, last_updated=last_updated)
        body = versioning.serialise(stamped)
    created = resource is not None and (head is None or head.deleted)
    return ResourceVersion(
        request.tenant, rtype, id_, version, last_updated, resource is None, method, body, created, resource=stamped
    )


def deletion(deps: Dependencies, request: FhirRequest, head: ResourceVersion) -> Change:
    """The change that deletes ``head``'s resource (its next version, a tombstone), expecting
    ``head`` to be current."""
    new = next_version(deps, request, head.type, head.id, None, method="DELETE", head=head)
    return Change(new, head.version, request.request_id)


def commit_version(
    deps: Dependencies,
    request: FhirRequest,
    rtype: str,
    id_: str,
    resource: dict[str, Any] | None,
    *,
    method: Method,
    expected: int | None,
    head: ResourceVersion | None,
    claim: Claim | None = None,
) -> ResourceVersion:
    """Write one new version after ``head`` (None: the resource does not exist); VersionConflict if it
    moved. ``claim``: the uniqueness key of a conditional create, taken in the same commit (ClaimTaken)."""
    new = next_version(deps, request, rtype, id_, resource, method=method, head=head)
    deps.store.commit([Change(new, expected, request.request_id, claim)])
    return new


def write(
    deps: Dependencies,
    request: FhirRequest,
    rtype: str,
    id_: str,
    resource: dict[str, Any] | None,
    *,
    method: Method,
    must_not_exist: bool = False,
    claim: Claim | None = None,
) -> WriteResult:
    """Optimistic write with If-Match semantics and retries for unguarded writes. A ``claim`` that
    does not hold is not retried here: ClaimTaken goes to the conditional use case, which looks again."""
    wanted = if_match(request)
    if resource is not None:
        # The new version first: whether the caller may write it depends on the body alone, so
        # this answer is the same whatever is (or is not) stored under the id.
        deps.policy.check_write(request, rtype, id_, resource, None)
    for _ in range(MAX_RETRIES):
        stored = None if must_not_exist else deps.store.current(request.tenant, rtype, id_)
        # A resource the caller may not know is answered as none: If-Match, DELETE and
        # update-as-create say nothing of its existence or version (issue 14, defect 6).
        head = within_reach(deps, request, stored)
        if wanted is not None and (head is None or head.version != wanted):
            current = "none" if head is None else versioning.etag(head.version)
            raise PreconditionFailed(
                f"If-Match {versioning.etag(wanted)} does not match the current version ({current})"
            )
        if resource is None and (head is None or head.deleted):
            return WriteResult(head, None, created=False) if head else _nothing_to_delete(request, rtype, id_)
        if head is None and method == "PUT":
            check_update_create(deps, request, rtype, id_)
        if head is None and stored is not None:
            # Update as create of an id that a hidden resource holds, by a token that may choose ids
            # (update_create_limited): it cannot be created, and the caller gets what a read gets.
            raise unknown_to_caller(deps, request, stored)
        deps.policy.check_write(request, rtype, id_, resource, head)
        if method == "PUT" and resource is not None and unchanged(deps, head, resource):
            assert head is not None
            return WriteResult(head, None, created=False)
        try:
            expected = head.version if head else None
            stored = commit_version(
                deps, request, rtype, id_, resource, method=method, expected=expected, head=head, claim=claim
            )
        except ClaimTaken:
            raise
        except VersionConflict as conflict:
            if wanted is not None:
                raise PreconditionFailed(
                    f"If-Match {versioning.etag(wanted)}: the resource changed (now version {conflict.current_version})"
                ) from conflict
            continue
        return WriteResult(stored, resource, created=head is None or head.deleted)
    raise ServiceUnavailable(
        f"{rtype}/{id_} is being changed by many writers at once; retry", headers={"Retry-After": "1"}
    )


def update_create_open(deps: Dependencies, request: FhirRequest, rtype: str, id_: str) -> bool:
    """Whether this caller's PUT may create ``rtype/id_``, an id it chose (http.html#upsert)."""
    if not deps.settings.update_create:
        return False
    return deps.settings.update_create_limited or deps.policy.knows_holder(request, rtype, id_)


def check_update_create(deps: Dependencies, request: FhirRequest, rtype: str, id_: str) -> None:
    """405 for an update-as-create this caller may not make (R4 http.html#update: "the resource did
    not exist prior to the update, and the server does not allow client defined ids"). A token
    confined to part of the type gets it for every id it cannot see, used or not: had unused ids
    been created, the ids it is refused would be exactly those of resources hidden from it."""
    if update_create_open(deps, request, rtype, id_):
        return
    if not deps.settings.update_create:
        raise MethodNotAllowed(f"{rtype}/{id_} does not exist and this server does not allow update-as-create")
    raise MethodNotAllowed(
        f"{rtype}/{id_} is not known, and this access token may not create a {rtype} with an id of its "
        "choosing (update-as-create); create it with POST, and the server assigns the id"
    )


def unchanged(deps: Dependencies, head: ResourceVersion | None, resource: dict[str, Any]) -> bool:
    """Whether writing ``resource`` over ``head`` would change nothing, and the settings say such a
    write keeps the current version (``skip_unchanged_updates``, as HAPI does)."""
    if not deps.settings.skip_unchanged_updates or head is None or head.deleted or head.body is None:
        return False
    if deps.settings.binary_direct and resource.get("resourceType") == "Binary" and "data" not in resource:
        return False  # a new upload (its URL names the new version): never over an older version's bytes
    return versioning.same_content(resource, jsonio.loads(head.body))


def _nothing_to_delete(request: FhirRequest, rtype: str, id_: str) -> WriteResult:
    marker = ResourceVersion(request.tenant, rtype, id_, 0, 0, deleted=True, method="DELETE", body=None)
    return WriteResult(marker, None, created=False)


def written_response(request: FhirRequest, result: WriteResult, *, status: int | None = None) -> FhirResponse:
    stored = result.stored
    headers = versioning.version_headers(stored)
    headers["Location"] = f"{request.base_url}/{stored.type}/{stored.id}/_history/{stored.version}"
    return FhirResponse(
        status=status or (201 if result.created else 200),
        raw_json=stored.body,
        parsed=stored.resource,
        headers=headers,
        honours_prefer_return=True,
    )


def create(
    deps: Dependencies, request: FhirRequest, *, new_id: str | None = None, resolution: Resolution | None = None
) -> FhirResponse:
    """``new_id`` lets a transaction choose the id up front, so references to the entry can be rewritten.
    With ``If-None-Exist`` (or a bundle's pre-resolved ``resolution``) it is a conditional create."""
    if resolution is not None or "if-none-exist" in request.headers or url_search_criteria(request):
        from fhirflow_crud import conditional

        return conditional.create(deps, request, new_id=new_id, resolution=resolution)
    rtype = authorized_type(deps, request, "create")
    resource = resource_from_body(request, deps, rtype)
    # The server assigns the id and ignores one in the body (http.html#create).
    resource = {k: v for k, v in resource.items() if k != "id"}
    validated(resource, rtype)
    result = write(deps, request, rtype, new_id or new_resource_id(), resource, method="POST", must_not_exist=True)
    return written_response(request, revealed(deps, result), status=201)


def url_search_criteria(request: FhirRequest) -> list[tuple[str, str]]:
    """The search parameters of ``POST [type]?criteria`` (``_format``/``_pretty`` aside). R4 gives
    them no meaning on a create; fhirpy's ``get_or_create`` sends them expecting a conditional
    create, so this server reads them as ``If-None-Exist`` rather than create a duplicate."""
    return [(name, value) for name, value in request.query if name not in bodies.CONTROL_PARAMETERS]


def update(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    rtype = authorized_type(deps, request, "update")
    id_ = check_id(request.resource_id)
    resource = resource_from_body(request, deps, rtype)
    if rtype == "Binary" and "id" not in resource and not _is_binary_resource(request):
        resource["id"] = id_
    body_id = resource.get("id")
    if body_id is None:
        raise BadRequest("The resource has no id; an update must carry the id from the URL", expression=f"{rtype}.id")
    if body_id != id_:
        raise BadRequest(
            f"The resource id '{body_id}' does not match the id in the URL ('{id_}')", expression=f"{rtype}.id"
        )
    validated(resource, rtype)
    return written_response(request, revealed(deps, write(deps, request, rtype, id_, resource, method="PUT")))


def revealed(deps: Dependencies, result: WriteResult) -> WriteResult:
    """A Subscription's signing secret is shown once, in the response that created it."""
    if result.stored.type != "Subscription" or not result.created or result.stored.body is None:
        return result
    from fhirflow_subscriptions.hook import reveal

    stored = reveal(deps, result.stored)
    return WriteResult(stored, stored.resource, created=True)


def patch(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    from fhirflow.patch import apply_fhirpath_patch, apply_json_patch, apply_merge_patch

    rtype = authorized_type(deps, request, "patch")
    id_ = check_id(request.resource_id)
    bodies.check_size(request, deps.settings.max_body_bytes)
    apply: Callable[[dict[str, Any], object], dict[str, Any]]
    if request.content_type == bodies.JSON_PATCH:
        apply = apply_json_patch
    elif request.content_type == bodies.MERGE_PATCH:
        apply = apply_merge_patch
    elif request.content_type in ("application/fhir+json", "application/json"):
        apply = apply_fhirpath_patch
    else:
        raise UnsupportedMediaType(
            f"PATCH takes application/json-patch+json, application/merge-patch+json or a FHIRPath Patch "
            f"Parameters resource in application/fhir+json, not '{request.content_type or 'no Content-Type'}'"
        )
    document = jsonio.loads(request.body) if request.body.strip() else None
    if document is None:
        raise BadRequest("PATCH needs a patch document in the body")
    if request.content_type == "application/json" and not _is_parameters(document):
        # Plain JSON that is not a FHIRPath Patch is a partial resource: fhirpy's patch() and others
        # send one with this type meaning a merge patch (RFC 7386), as Aidbox reads it.
        apply = apply_merge_patch
    for _ in range(MAX_RETRIES):
        head = within_reach(deps, request, deps.store.current(request.tenant, rtype, id_))
        if head is None or head.deleted or head.body is None:
            return patch_missing(deps, request, rtype, id_)
        # The target first (its compartment, the scopes): a patch must not be applied, tested or
        # validated against a resource the caller may not change, or its answers tell the values.
        deps.policy.check_write(request, rtype, id_, None, head)
        current = jsonio.loads(head.body)
        patched = apply(current, document)
        _check_patched_identity(patched, rtype, id_)
        validated(patched, rtype)
        deps.policy.check_write(request, rtype, id_, patched, head)
        wanted = if_match(request)
        if wanted is not None and wanted != head.version:
            raise PreconditionFailed(
                f"If-Match {versioning.etag(wanted)} does not match the current version "
                f"({versioning.etag(head.version)})"
            )
        if unchanged(deps, head, patched):
            return written_response(request, WriteResult(head, None, created=False))
        try:
            stored = commit_version(
                deps, request, rtype, id_, patched, method="PATCH", expected=head.version, head=head
            )
        except VersionConflict as conflict:
            if wanted is not None:
                raise PreconditionFailed("The resource changed while it was being patched") from conflict
            continue
        return written_response(request, WriteResult(stored, patched, created=False))
    raise ServiceUnavailable(
        f"{rtype}/{id_} is being changed by many writers at once; retry", headers={"Retry-After": "1"}
    )


def _is_parameters(document: object) -> bool:
    return isinstance(document, dict) and document.get("resourceType") == "Parameters"


def patch_missing(deps: Dependencies, request: FhirRequest, rtype: str, id_: str) -> FhirResponse:
    """404 for an id that is not there or outside the caller's reach, 410 for a deletion it may know."""
    from fhirflow.errors import Gone

    head = deps.store.current(request.tenant, rtype, id_)
    if head is not None and within_reach(deps, request, head) is None:
        raise unknown_to_caller(deps, request, head)
    if head is not None and head.deleted:
        raise Gone(f"{rtype}/{id_} was deleted", headers=versioning.version_headers(head))
    raise NotFound(f"{rtype}/{id_} is not known")


def _check_patched_identity(patched: dict[str, Any], rtype: str, id_: str) -> None:
    if patched.get("resourceType") != rtype:
        raise InvalidResource("A patch may not change resourceType", expression="resourceType")
    if patched.get("id") != id_:
        raise InvalidResource("A patch may not change or remove the resource id", expression=f"{rtype}.id")


def delete(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    """Delete is idempotent: deleting a deleted or unknown resource succeeds and writes nothing."""
    rtype = authorized_type(deps, request, "delete")
    id_ = check_id(request.resource_id)
    result = write(deps, request, rtype, id_, None, method="DELETE")
    headers = versioning.version_headers(result.stored) if result.stored.version else {}
    return FhirResponse(status=204, headers=headers)
