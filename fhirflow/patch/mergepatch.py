"""JSON Merge Patch (RFC 7386), the third PATCH form clients send (``application/merge-patch+json``).

FHIR R4 names JSON Patch and FHIRPath Patch (http.html#patch); several clients (fhirpy's
``patch()`` among them) send a merge patch instead, and HAPI and Medplum accept it. The result
is processed like any patch: the caller checks identity and validates it as an update.
"""

from __future__ import annotations

from typing import Any

from fhirflow.errors import BadRequest

MAX_DEPTH = 64
"""Nesting a merge patch may have; deeper documents are refused (no resource is that deep)."""


def apply_merge_patch(resource: dict[str, Any], document: object) -> dict[str, Any]:
    """RFC 7386 §2: members of the patch replace the target's, ``null`` removes one, objects merge
    recursively, anything else (arrays included) replaces the whole value. ``resource`` is not
    modified. The patch must be an object: a patch that replaces the resource with a non-object
    cannot yield a resource."""
    if not isinstance(document, dict):
        raise BadRequest("A JSON Merge Patch for a resource must be a JSON object")
    merged = _merge(resource, document, 0)
    assert isinstance(merged, dict)
    return merged


def _merge(target: object, patch: object, depth: int) -> object:
    if depth > MAX_DEPTH:
        raise BadRequest(f"The merge patch nests deeper than {MAX_DEPTH} levels")
    if not isinstance(patch, dict):
        return patch
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = _merge(result.get(name), value, depth + 1)
    return result
