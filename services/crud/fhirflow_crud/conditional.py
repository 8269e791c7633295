"""Conditional create, update, delete and patch (http://hl7.org/fhir/R4/http.html#ccreate,
#cond-update, #3.1.0.7.1 conditional delete, #patch conditional patch).

Each finds its resource by a search (the search service's engine, filtered by the access policy
like any search) and then runs as the ordinary interaction on what it found:

==========  ==========================  ==========================  =====================
matches     create (``If-None-Exist``)  update (``PUT [type]?``)    delete / patch
==========  ==========================  ==========================  =====================
none        create (201)                create (201), server id or  delete: nothing (204);
                                        the body's id               patch: 404
one         200 with it, nothing        update it (the body's id,   delete / patch it
            written                     if any, must agree: 400)
several     412                         412                         412 (single delete)
==========  ==========================  ==========================  =====================

**Race-freedom.** Every create a conditional interaction makes *claims* the criteria's
uniqueness key (:mod:`fhirflow.conditional`) in the store transaction that creates the resource,
so of two concurrent creates with the same criteria one commits and the other gets
``ClaimTaken``; it then looks again and answers with the winner, as if its search had found it.
The search alone cannot do this: two searches may both find nothing, and on DynamoDB the index
trails the table.

**Stale keys.** A key's owner may later be deleted, or changed so that it no longer matches. A
key is therefore never trusted blindly: when the search finds nothing and the key has an owner,
the owner is read from the store (strongly consistent) and checked against the criteria
(:class:`~fhirflow.search_ports.ResourceMatcher`, which needs no index). Still there and still
matching: it is the match (the index had not caught up). Gone or no longer matching: the new
create takes the key over with a compare-and-set on the old owner's id (``Claim.replaces``), so
that of several writers replacing one stale owner only one wins and the others find it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fhirflow import bodies, jsonio
from fhirflow.conditional import Criteria, Resolution, parse_criteria, parse_query_string, resolve
from fhirflow.errors import BadRequest, NotFound, PreconditionFailed, ServiceUnavailable
from fhirflow.ids import new_resource_id
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.ports import ClaimTaken, ResourceVersion, VersionConflict
from fhirflow.runtime import Dependencies
from fhirflow_crud import writes

MAX_ATTEMPTS = 8
"""Looks again after a lost claim: each lost race means another writer's create committed, which
the next look finds, so more than one or two rounds only happen to a key under constant churn."""


# -- finding the resource ----------------------------------------------------------------------------


def url_criteria(request: FhirRequest) -> Criteria:
    """``PUT|DELETE|PATCH [type]?criteria``: the URL's parameters."""
    return parse_criteria(request.resource_type, list(request.query))


def header_criteria(request: FhirRequest) -> Criteria:
    """A conditional create's criteria: ``If-None-Exist``, or the URL's query (``POST [type]?criteria``,
    read the same way; :func:`fhirflow_crud.writes.url_search_criteria`); both at once is a 400."""
    in_url = writes.url_search_criteria(request)
    raw = request.header("if-none-exist")
    if in_url and raw is not None:
        raise BadRequest(
            "A create takes its conditions either in If-None-Exist or in the URL's query, not both",
            expression="If-None-Exist",
        )
    if in_url:
        return parse_criteria(request.resource_type, in_url)
    return parse_query_string(request.resource_type, raw or "", where="If-None-Exist")


# -- the interactions --------------------------------------------------------------------------------


def create(
    deps: Dependencies, request: FhirRequest, *, new_id: str | None = None, resolution: Resolution | None = None
) -> FhirResponse:
    """``POST [type]`` with ``If-None-Exist``. ``resolution``: what a transaction found up front."""
    rtype = writes.authorized_type(deps, request, "create")
    resource = writes.resource_from_body(request, deps, rtype)
    resource = {k: v for k, v in resource.items() if k != "id"}  # the server assigns the id (http.html#create)
    writes.validated(resource, rtype)
    criteria = resolution.criteria if resolution is not None else header_criteria(request)
    for _ in range(MAX_ATTEMPTS):
        found = resolution or resolve(deps, request, criteria)
        resolution = None
        existing = found.single(action="a conditional create")
        if existing is not None:
            return _existing(request, existing)
        id_ = new_id or new_resource_id()
        try:
            result = writes.write(
                deps, request, rtype, id_, resource, method="POST", must_not_exist=True, claim=found.claim
            )
        except ClaimTaken:
            continue  # another create with these criteria won: the next look finds it
        return writes.written_response(request, writes.revealed(deps, result), status=201)
    raise _busy(criteria)


def update(
    deps: Dependencies, request: FhirRequest, *, new_id: str | None = None, resolution: Resolution | None = None
) -> FhirResponse:
    """``PUT [type]?criteria``. ``new_id``: the id a transaction minted for a create."""
    rtype = writes.authorized_type(deps, request, "update")
    resource = writes.resource_from_body(request, deps, rtype)
    body_id = resource.get("id")
    if body_id is not None and not isinstance(body_id, str):
        raise BadRequest("The resource id must be a string", expression=f"{rtype}.id")
    criteria = resolution.criteria if resolution is not None else url_criteria(request)
    for _ in range(MAX_ATTEMPTS):
        found = resolution or resolve(deps, request, criteria)
        resolution = None
        target = found.single(action="a conditional update")
        if target is not None:
            if body_id is not None and body_id != target.id:
                raise BadRequest(
                    f"The resource id '{body_id}' is not the id of the {rtype} the criteria match ('{target.id}')",
                    expression=f"{rtype}.id",
                )
            # A JSON body gets the id of the match; a Binary's raw content takes it from the URL.
            body = jsonio.dumps({**resource, "id": target.id}) if bodies.is_json_body(request) else None
            return writes.update(deps, for_instance(request, target.id, body=body))
        # No match: create (http.html#cond-update), with the body's id (update as create) or ours.
        id_ = writes.check_id(body_id) if body_id is not None else new_id or new_resource_id()
        created = writes.validated({**resource, "id": id_}, rtype)
        try:
            if body_id is not None:  # update as create (http.html#upsert), where the settings allow it
                result = writes.write(deps, request, rtype, id_, created, method="PUT", claim=found.claim)
            else:  # a create with a server id, whatever the update-as-create setting
                result = writes.write(
                    deps, request, rtype, id_, created, method="POST", must_not_exist=True, claim=found.claim
                )
        except ClaimTaken:
            continue
        return writes.written_response(request, writes.revealed(deps, result))
    raise _busy(criteria)


def delete(deps: Dependencies, request: FhirRequest, *, resolution: Resolution | None = None) -> FhirResponse:
    """``DELETE [type]?criteria``: deletes the one match (``conditionalDelete: single``), or with
    ``conditional_delete_max`` above 1 every match up to that many (``multiple``); more is a 412."""
    writes.authorized_type(deps, request, "delete")
    limit = deps.settings.conditional_delete_max
    if limit > 1 and resolution is None:  # a bundle entry resolves up front, one match at most
        return _delete_matches(deps, request, url_criteria(request), limit)
    found = resolution or resolve(deps, request, url_criteria(request))
    target = found.single(action="a conditional delete (this server deletes one resource at a time)")
    if target is None:
        return FhirResponse(status=204)  # as a delete of a resource that is not there
    return writes.delete(deps, for_instance(request, target.id))


_DELETE_BATCH = 25
"""Deletions per commit (one DynamoDB TransactWriteItems holds them with their heads)."""


def _delete_matches(deps: Dependencies, request: FhirRequest, criteria: Criteria, limit: int) -> FhirResponse:
    """Delete every match, in commits of up to 25: none is deleted when there are more than
    ``limit``. A match that changed meanwhile (VersionConflict) makes it look again; what was
    deleted by then stays deleted, and no longer matches."""
    for _ in range(writes.MAX_RETRIES):
        matches = resolve(deps, request, criteria, count=limit + 1).matches
        if len(matches) > limit:
            raise PreconditionFailed(
                f"The criteria '{criteria.text}' match more than {limit} {criteria.resource_type} resources; "
                f"this server deletes at most {limit} at once",
                expression=criteria.resource_type,
            )
        try:
            for start in range(0, len(matches), _DELETE_BATCH):
                changes = []
                for head in matches[start : start + _DELETE_BATCH]:
                    deps.policy.check_write(request, head.type, head.id, None, head)
                    changes.append(writes.deletion(deps, request, head))
                deps.store.commit(changes)
        except VersionConflict:
            continue
        return FhirResponse(status=204)
    raise _busy(criteria)


def patch(deps: Dependencies, request: FhirRequest, *, resolution: Resolution | None = None) -> FhirResponse:
    """``PATCH [type]?criteria``: patches the one match; none is a 404."""
    rtype = writes.authorized_type(deps, request, "patch")
    criteria = resolution.criteria if resolution is not None else url_criteria(request)
    found = resolution or resolve(deps, request, criteria)
    target = found.single(action="a conditional patch")
    if target is None:
        raise NotFound(f"No {rtype} matches the criteria '{criteria.text}'; there is nothing to patch")
    return writes.patch(deps, for_instance(request, target.id))


# -- helpers ----------------------------------------------------------------------------------------


def for_instance(request: FhirRequest, id_: str, *, body: bytes | None = None) -> FhirRequest:
    """The request as if it had named the matched resource: ``[type]/[id]``, without the criteria."""
    params = {**request.path_params, "id": id_}
    changes: dict[str, Any] = {"path_params": params, "query": [], "route": request.route.rstrip("/") + "/{id}"}
    if body is not None:
        changes["body"] = body
        if "parsed_body" in {f.name for f in dataclasses.fields(request)}:
            changes["parsed_body"] = None  # a bundle entry's parsed resource is not this body any more
    return dataclasses.replace(request, **changes)


def _existing(request: FhirRequest, existing: ResourceVersion) -> FhirResponse:
    """http.html#ccreate, one match: "the server ignores the post and returns 200 OK"."""
    return writes.written_response(request, writes.WriteResult(existing, None, created=False), status=200)


def _busy(criteria: Criteria) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"Resources matching '{criteria.text}' are being created and deleted by many writers at once; retry",
        headers={"Retry-After": "1"},
    )
