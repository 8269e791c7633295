"""Fine-grained access through an external relationship service (OpenFGA / Zanzibar style), optional.

A deployment that keeps "who may see which patient" outside the token (care teams, consents,
delegations) plugs a :class:`RelationshipService` in; :class:`RelationshipPolicy` wraps the
SMART (or RBAC) policy and, for user and system tokens (a patient-context token is already
confined to one patient), additionally requires for every resource in a Patient compartment
that the caller may ``can_view`` (reads, listings) or ``can_edit`` (writes) one of its patients.
Resources in no Patient compartment (Organization, Medication...) are left to the inner policy.

Subjects are ``user:<fhirUser reference>`` when the token has ``fhirUser``, else
``client:<client_id>``; objects are ``Patient/<id>``. Searches get the patient list from
:meth:`RelationshipService.list_objects` as :attr:`AccessConstraint.patients`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from fhirflow.authz import challenges
from fhirflow.authz.policy import AccessConstraint, principal_of, resource_of
from fhirflow.authz.principal import Principal
from fhirflow.errors import FhirError, NotFound
from fhirflow.model import FhirRequest
from fhirflow.ports import AccessPolicy, ResourceVersion

VIEW = "can_view"
EDIT = "can_edit"


class RelationshipService(Protocol):
    """An OpenFGA-like relationship store: ``check`` ("can user:X can_view Patient/1?") and
    ``list_objects`` ("which Patients can user:X can_view?")."""

    def check(self, subject: str, relation: str, obj: str) -> bool: ...

    def list_objects(self, subject: str, relation: str, object_type: str) -> list[str]: ...


class InMemoryRelationshipService:
    """Tuples in memory, for tests and the embedded mode. ``can_edit`` implies ``can_view``."""

    def __init__(self, tuples: Iterable[tuple[str, str, str]] = ()) -> None:
        self._tuples: set[tuple[str, str, str]] = set(tuples)
        self._lock = threading.Lock()

    def write(self, subject: str, relation: str, obj: str) -> None:
        with self._lock:
            self._tuples.add((subject, relation, obj))

    def delete(self, subject: str, relation: str, obj: str) -> None:
        with self._lock:
            self._tuples.discard((subject, relation, obj))

    def check(self, subject: str, relation: str, obj: str) -> bool:
        relations = {relation, EDIT} if relation == VIEW else {relation}
        return any((subject, r, obj) in self._tuples for r in relations)

    def list_objects(self, subject: str, relation: str, object_type: str) -> list[str]:
        prefix = object_type + "/"
        return sorted(
            {o for s, r, o in self._tuples if s == subject and o.startswith(prefix) and self.check(s, relation, o)}
        )


def subject_of(principal: Principal) -> str | None:
    if principal.fhir_user is not None:
        return f"user:{principal.fhir_user_reference}"
    if principal.client_id:
        return f"client:{principal.client_id}"
    return None


class RelationshipPolicy:
    """An AccessPolicy that asks ``service`` after ``inner`` has allowed a request."""

    def __init__(self, inner: AccessPolicy, service: RelationshipService, *, denied_read_status: int = 404) -> None:
        self.inner = inner
        self.service = service
        self.denied_read_status = denied_read_status

    def _subject(self, request: FhirRequest) -> str | None:
        """None when the relationship check does not apply (a patient-context token)."""
        principal = principal_of(request)
        if principal.patient is not None:
            return None
        subject = subject_of(principal)
        if subject is None:
            raise challenges.insufficient_scope("The access token names no user or client to check access for")
        return subject

    def _allowed(self, subject: str, relation: str, resource: dict[str, Any], base_url: str) -> bool:
        from fhirflow.searchparams.compartments import compartments_of

        patients = [i for t, i in compartments_of(resource, base_url=base_url or None) if t == "Patient"]
        return not patients or any(self.service.check(subject, relation, f"Patient/{p}") for p in patients)

    def _denied(self, resource_type: str, id_: str) -> FhirError:
        if self.denied_read_status == 403:
            return challenges.insufficient_scope(f"Access to {resource_type}/{id_} is not granted")
        return NotFound(f"{resource_type}/{id_} is not known")

    def authorize(self, request: FhirRequest, interaction: str, resource_type: str | None) -> None:
        self.inner.authorize(request, interaction, resource_type)

    def check_read(self, request: FhirRequest, version: ResourceVersion) -> None:
        self.inner.check_read(request, version)
        subject = self._subject(request)
        resource = resource_of(version)
        if subject is None or resource is None:
            return
        if not self._allowed(subject, VIEW, resource, request.base_url):
            raise self._denied(version.type, version.id)

    def visible(self, request: FhirRequest, version: ResourceVersion) -> bool:
        return self.inner.visible(request, version) and self._related(request, version, (VIEW,))

    def knows(self, request: FhirRequest, version: ResourceVersion) -> bool:
        relations = (VIEW,) if request.method in ("GET", "HEAD") else (VIEW, EDIT)
        return self.inner.knows(request, version) and self._related(request, version, relations)

    def knows_holder(self, request: FhirRequest, resource_type: str, id_: str) -> bool:
        """The inner policy's answer, for a patient-context token; anyone the relationship service
        confines to some patients may have resources hidden from it."""
        return self.inner.knows_holder(request, resource_type, id_) and self._subject(request) is None

    def _related(self, request: FhirRequest, version: ResourceVersion, relations: tuple[str, ...]) -> bool:
        """Whether the request's subject holds one of ``relations`` to the version (no subject: yes)."""
        subject = self._subject(request)
        if subject is None:
            return True
        resource = resource_of(version)
        if resource is None:
            return False  # a deletion cannot be placed in a patient's compartment
        return any(self._allowed(subject, relation, resource, request.base_url) for relation in relations)

    def check_write(
        self,
        request: FhirRequest,
        resource_type: str,
        id_: str,
        new: dict[str, Any] | None,
        current: ResourceVersion | None,
    ) -> None:
        self.inner.check_write(request, resource_type, id_, new, current)
        subject = self._subject(request)
        if subject is None:
            return
        before = resource_of(current) if current is not None else None
        if before is not None and not self._allowed(subject, EDIT, before, request.base_url):
            raise self._denied(resource_type, id_)
        after = {**new, "id": id_} if new is not None else None
        if after is not None and not self._allowed(subject, EDIT, after, request.base_url):
            raise challenges.insufficient_scope("Writing this resource is not granted for its patient")

    def admits_resource(self, request: FhirRequest, resource: Mapping[str, Any], permission: str = "r") -> bool:
        """For resources a search adds by ``_include``/``_revinclude``: the inner policy's check (when
        it has one), then the relationship to the resource's patients, as for a read."""
        inner = getattr(self.inner, "admits_resource", None)
        if inner is not None and not inner(request, resource, permission):
            return False
        subject = self._subject(request)
        return subject is None or self._allowed(subject, VIEW, dict(resource), request.base_url)

    def search_constraint(
        self, request: FhirRequest, resource_type: str | None, permission: str = "s"
    ) -> AccessConstraint | None:
        hook = getattr(self.inner, "search_constraint", None)
        inner: AccessConstraint | None = hook(request, resource_type, permission) if hook else None
        subject = self._subject(request)
        if subject is None:
            return inner
        patients = frozenset(o.split("/", 1)[1] for o in self.service.list_objects(subject, VIEW, "Patient"))
        from fhirflow.authz.policy import Admission

        alternatives = inner.alternatives if inner is not None else (Admission(None),)
        return AccessConstraint(alternatives, patients)
