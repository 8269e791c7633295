"""The two PATCH formats of FHIR R4 (http.html#patch): JSON Patch and FHIRPath Patch; and JSON
Merge Patch (RFC 7386), which common clients send.

Both functions take the current resource and the patch document exactly as parsed from
the request body, return a new resource (the input is never modified), and raise only
:class:`fhirflow.errors.FhirError` subclasses: :class:`~fhirflow.errors.BadRequest` when
the patch document is malformed, :class:`~fhirflow.errors.UnprocessableEntity` when it
cannot be applied to this resource. Checking that the result is still a valid resource of
the same type and id is the caller's job.
"""

from fhirflow.patch.fhirpathpatch import apply_fhirpath_patch
from fhirflow.patch.jsonpatch import apply_json_patch
from fhirflow.patch.mergepatch import apply_merge_patch

__all__ = ["apply_fhirpath_patch", "apply_json_patch", "apply_merge_patch"]
