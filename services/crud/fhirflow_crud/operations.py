"""Instance and type operations on one resource: ``$validate`` and ``$meta``/``$meta-add``/``$meta-delete``.

``$validate`` (R4 OperationDefinition Resource-validate, resource-operation-validate.html) checks a
resource as a plain validation, or as the create, update or delete the ``mode`` names, and answers
200 with an OperationOutcome whether or not it is valid; a 4xx means the validation could not be
done. ``$meta`` (Resource-meta) returns a resource's meta as ``Parameters.parameter[return].valueMeta``;
``$meta-add``/``$meta-delete`` (Resource-meta-add, Resource-meta-delete) add or remove its profiles,
tags and security labels.

R4 says ``$meta-add`` and ``$meta-delete`` change the meta "directly", without a new version. This
server writes a new version instead (when something changed): the search index, the change events
and the subscriptions all follow versions, and a ``_tag``/``_security`` search or a security label
the access policy reads must see the change. README.md ("Operations") says so.
"""

from __future__ import annotations

from typing import Any

from fhirflow import bodies, jsonio
from fhirflow.errors import BadRequest, Gone, Issue, NotFound, OperationNotSupported, Outcome, ServiceUnavailable
from fhirflow.model import FhirRequest, FhirResponse
from fhirflow.ports import ResourceVersion, VersionConflict
from fhirflow.runtime import Dependencies
from fhirflow.validation import validate_resource
from fhirflow_crud import writes

MODES = ("create", "update", "delete")
"""R4 ResourceValidationMode codes this server checks; ``profile`` needs profile validation."""

_CODED = ("tag", "security")


# -- $validate ---------------------------------------------------------------------------------------


def validate(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    """``POST [type]/$validate`` and ``POST [type]/[id]/$validate``: the body is the resource itself, or
    a Parameters with ``resource``, ``mode`` and ``profile`` (the URL may carry ``mode`` too)."""
    rtype = writes.known_type(request)
    id_ = request.path_params.get("id")
    bodies.check_size(request, deps.settings.max_body_bytes)
    resource, mode, profile = _validate_input(request, rtype)
    if mode is not None and mode not in MODES:
        raise BadRequest(
            f"mode '{mode[:40]}' is not one this server validates for ({', '.join(MODES)})",
            issues=[Issue("not-supported" if mode == "profile" else "code-invalid", f"mode '{mode[:40]}'", ("mode",))],
        )
    if mode in ("update", "delete") and id_ is None:
        raise BadRequest(f"mode {mode} validates against a resource: use [type]/[id]/$validate", expression="mode")
    deps.policy.authorize(request, mode or "create", rtype)
    if profile is not None and profile != f"http://hl7.org/fhir/StructureDefinition/{rtype}":
        raise OperationNotSupported(
            f"This server validates against the base R4 {rtype} definition only, not profile '{profile[:200]}'",
            expression="profile",
        )
    head = None
    if id_ is not None:
        writes.check_id(id_)
        head = writes.within_reach(deps, request, deps.store.current(request.tenant, rtype, id_))
    if mode == "delete":
        if head is None or head.deleted:
            raise NotFound(f"{rtype}/{id_} is not known")
        deps.policy.check_write(request, rtype, head.id, None, head)
        return _validation_outcome([])
    if resource is None:
        raise BadRequest("$validate needs the resource to validate (the body or Parameters.resource)")
    issues = list(validate_resource(resource, expected_type=rtype))
    if mode == "update":
        assert id_ is not None
        if resource.get("id") != id_:
            issues.append(Issue("invalid", f"An update of {rtype}/{id_} must carry id '{id_}'", (f"{rtype}.id",)))
        if (head is None or head.deleted) and not deps.settings.update_create:
            raise NotFound(f"{rtype}/{id_} is not known, and this server does not allow update-as-create")
        if head is None and not writes.update_create_open(deps, request, rtype, id_):
            raise NotFound(f"{rtype}/{id_} is not known, and this access token may not create it with this id")
    if mode in ("create", "update") and not issues:
        target = id_ if mode == "update" and id_ is not None else "validate"
        deps.policy.check_write(request, rtype, target, resource, head if mode == "update" else None)
    return _validation_outcome(issues)


def _validate_input(request: FhirRequest, rtype: str) -> tuple[dict[str, Any] | None, str | None, str | None]:
    mode = request.param("mode")
    profile = request.param("profile")
    if not request.body.strip():
        return None, mode, profile
    if not bodies.is_json_body(request):
        raise BadRequest(f"$validate takes application/fhir+json, not '{request.content_type}'", expression="resource")
    body = jsonio.loads(request.body)
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object: the resource or a Parameters resource")
    if body.get("resourceType") != "Parameters" or rtype == "Parameters":
        return _of_type(body, rtype, "resourceType"), mode, profile
    resource = None
    for index, parameter in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{index}]"
        if not isinstance(parameter, dict):
            raise BadRequest(f"{where} must be an object", expression=where)
        name = parameter.get("name")
        if name == "resource":
            resource = _of_type(parameter.get("resource"), rtype, f"{where}.resource")
        elif name == "mode" and isinstance(parameter.get("valueCode"), str):
            mode = parameter["valueCode"]
        elif name == "profile" and isinstance(parameter.get("valueUri", parameter.get("valueCanonical")), str):
            profile = parameter.get("valueUri", parameter.get("valueCanonical"))
        else:
            raise BadRequest(
                f"{where}: $validate takes resource, mode (valueCode) and profile (valueUri)",
                expression=f"{where}.name",
            )
    return resource, mode, profile


def _of_type(value: object, rtype: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("resourceType") != rtype:
        found = value.get("resourceType") if isinstance(value, dict) else None
        raise BadRequest(f"$validate on {rtype} needs a {rtype}, not '{str(found)[:64]}'", expression=where)
    return value


def _validation_outcome(issues: list[Issue]) -> FhirResponse:
    if not issues:
        issues = [Issue("informational", "No issues found", severity="information")]
    return FhirResponse(status=200, resource=Outcome(issues).to_json())


# -- $meta, $meta-add, $meta-delete -------------------------------------------------------------------


def meta(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    """``[type]/[id]/$meta`` and ``[type]/[id]/_history/[vid]/$meta``: the version's meta."""
    rtype = writes.authorized_type(deps, request, "read")
    stored = _readable(deps, request, rtype)
    return _meta_response(jsonio.loads(stored.body or b"{}"))


def meta_add(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    return _change_meta(deps, request, remove=False)


def meta_delete(deps: Dependencies, request: FhirRequest) -> FhirResponse:
    return _change_meta(deps, request, remove=True)


def _readable(deps: Dependencies, request: FhirRequest, rtype: str) -> ResourceVersion:
    id_ = request.resource_id
    vid = request.path_params.get("vid")
    if vid is None:
        stored = deps.store.current(request.tenant, rtype, id_)
    else:
        is_ours = vid.isascii() and vid.isdigit() and str(int(vid)) == vid
        stored = deps.store.version(request.tenant, rtype, id_, int(vid)) if is_ours else None
    if stored is None:
        raise NotFound(f"{rtype}/{id_} is not known")
    deps.policy.check_read(request, stored)
    if stored.deleted or stored.body is None:
        raise Gone(f"{rtype}/{id_} was deleted")
    return stored


def _change_meta(deps: Dependencies, request: FhirRequest, *, remove: bool) -> FhirResponse:
    operation = "$meta-delete" if remove else "$meta-add"
    rtype = writes.authorized_type(deps, request, "update")
    id_ = writes.check_id(request.resource_id)
    for _ in range(writes.MAX_RETRIES):
        head = writes.within_reach(deps, request, deps.store.current(request.tenant, rtype, id_))
        if head is None or head.deleted or head.body is None:
            writes.patch_missing(deps, request, rtype, id_)  # raises the 404/410 a patch would
            raise AssertionError("patch_missing always raises")
        # The target first: its meta is not read or changed for a caller who may not change it.
        deps.policy.check_write(request, rtype, id_, None, head)
        given = _meta_parameter(request, operation)
        current = jsonio.loads(head.body)
        changed = _with_meta(current, given, remove=remove)
        if changed == current.get("meta", {}):
            return _meta_response(current)
        resource = {**current, "meta": changed}
        writes.validated(resource, rtype)
        deps.policy.check_write(request, rtype, id_, resource, head)
        try:
            stored = writes.commit_version(
                deps, request, rtype, id_, resource, method="PATCH", expected=head.version, head=head
            )
        except VersionConflict:
            continue
        return _meta_response(jsonio.loads(stored.body or b"{}"))
    raise ServiceUnavailable(f"{rtype}/{id_} is being changed by many writers at once; retry")


def _meta_parameter(request: FhirRequest, operation: str) -> dict[str, Any]:
    """The one ``meta`` parameter (valueMeta) of the Parameters body (operations.html#request)."""
    if request.content_type not in bodies.PARAMETERS_TYPES:
        raise BadRequest(f"{operation} takes a Parameters resource as application/fhir+json", expression="Parameters")
    body = jsonio.loads(request.body) if request.body.strip() else None
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest(f"{operation} takes a Parameters resource with one 'meta' parameter", expression="Parameters")
    found = [
        (index, p)
        for index, p in enumerate(body.get("parameter") or [])
        if isinstance(p, dict) and p.get("name") == "meta"
    ]
    if len(found) != 1 or not isinstance(found[0][1].get("valueMeta"), dict):
        raise BadRequest(
            f"{operation} takes exactly one parameter 'meta' with a valueMeta", expression="Parameters.parameter"
        )
    index, parameter = found[0]
    given: dict[str, Any] = parameter["valueMeta"]
    where = f"Parameters.parameter[{index}].valueMeta"
    for name, value in given.items():
        if name not in ("profile", *_CODED) or not isinstance(value, list):
            raise BadRequest(
                f"{operation} changes profile, tag and security (lists) only, not '{name[:40]}'",
                expression=f"{where}.{name[:40]}",
            )
    for index_, profile in enumerate(given.get("profile", [])):
        if not isinstance(profile, str) or not profile:
            raise BadRequest("A profile is a canonical URL", expression=f"{where}.profile[{index_}]")
    for name in _CODED:
        for index_, coding in enumerate(given.get(name, [])):
            if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
                raise BadRequest(f"Each {name} needs a code", expression=f"{where}.{name}[{index_}]")
    return given


def _with_meta(resource: dict[str, Any], given: dict[str, Any], *, remove: bool) -> dict[str, Any]:
    """The meta with ``given``'s profiles, tags and security labels added (as sets: a tag or label is
    its system+code, a profile its URL) or removed (Resource-meta-add, Resource-meta-delete)."""
    meta_now = dict(resource.get("meta") or {})
    profiles = list(meta_now.get("profile") or [])
    for profile in given.get("profile", []):
        if remove and profile in profiles:
            profiles.remove(profile)
        elif not remove and profile not in profiles:
            profiles.append(profile)
    _set(meta_now, "profile", profiles)
    for name in _CODED:
        codings = list(meta_now.get(name) or [])
        for coding in given.get(name, []):
            key = (coding.get("system"), coding["code"])
            same = [c for c in codings if (c.get("system"), c.get("code")) == key]
            if remove:
                codings = [c for c in codings if c not in same]
            elif not same:
                codings.append(coding)
        _set(meta_now, name, codings)
    return meta_now


def _set(target: dict[str, Any], name: str, values: list[Any]) -> None:
    if values:
        target[name] = values
    else:
        target.pop(name, None)


def _meta_response(resource: dict[str, Any]) -> FhirResponse:
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "return", "valueMeta": resource.get("meta", {})}],
    }
    return FhirResponse(status=200, resource=parameters)
