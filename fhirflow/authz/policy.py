"""The SMART access policy: scopes, launch context, compartments and granular filters (DESIGN.md §5).

A principal may do an interaction on a resource when one of its scopes grants the interaction's
permission letter (scopes.INTERACTION_PERMISSIONS) on the resource's type and *admits* the resource:

- ``system/`` scopes admit every resource (backend services: the client's own policy is upstream);
- ``patient/`` scopes admit the resources in the compartment of the ``patient`` launch context
  (the official Patient CompartmentDefinition, via :func:`fhirflow.searchparams.compartments_of`);
  without a ``patient`` claim they admit nothing;
- ``user/`` scopes admit the resources in the compartment of ``fhirUser`` (a Patient, Practitioner
  or RelatedPerson compartment), or every resource when ``fhirUser`` is one of the configured
  admin types (FWoA's ``adminAccessTypes``; none by default); without ``fhirUser`` nothing;
- a granular scope (``?param=value``) admits only resources that also match its parameters.

Reads of a resource the token may not see answer like a missing resource (404, configurable to
403), never with the data. Writes must be admitted both before (the current version) and after
(the new one): a resource cannot be moved out of, or into, a compartment the token does not hold.

Search pushes the constraint into its query: :meth:`SmartPolicy.search_constraint` returns the
:class:`AccessConstraint` (compartment memberships and granular parameters) that searches
compile (``fhirflow.search_access``) into the backend query, so ``total`` and paging are
exact; ``_include``/``_revinclude``d resources go through :meth:`SmartPolicy.admits_resource`.
Export is to use the same constraint per type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fhirflow import jsonio
from fhirflow.authz import challenges
from fhirflow.authz.config import AuthConfig
from fhirflow.authz.ownership import OWNED_TYPES, owner_tag, tag_of, with_owner
from fhirflow.authz.principal import Principal
from fhirflow.authz.scopes import INTERACTION_PERMISSIONS
from fhirflow.errors import FhirError, Forbidden, NotFound
from fhirflow.model import DEFAULT_TENANT, FhirRequest
from fhirflow.ports import ResourceStore, ResourceVersion

FREE_INTERACTIONS = frozenset({"capabilities", "smart-configuration", "transaction", "batch"})
"""No scope of their own: discovery is public, and bundle entries are authorized one by one
(scopes-and-launch-context.html#batches-and-transactions)."""
WRITE_PERMISSIONS = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}
ADMIN_INTERACTIONS = frozenset({"reindex"})
"""Administrative operations: they act on the server's data as a whole, so only an unrestricted
backend (``system/``) scope grants them; patient and user scopes never do."""


@dataclass(frozen=True, slots=True)
class Admission:
    """One way a principal's scopes admit resources of a type: a compartment (None: any) and
    granular search parameters the resource must also match."""

    compartment: tuple[str, str] | None
    filters: tuple[tuple[str, str], ...] = ()

    @property
    def unrestricted(self) -> bool:
        return self.compartment is None and not self.filters


@dataclass(frozen=True, slots=True)
class AccessConstraint:
    """What a search adds to its query so that it returns only admitted resources.

    A resource qualifies when it matches at least one of ``alternatives`` (its compartment
    membership and granular parameters) and, when ``patients`` is set, is in no Patient
    compartment or in the compartment of one of those patients (the relationship hook).
    """

    alternatives: tuple[Admission, ...]
    patients: frozenset[str] | None = None

    def compartments(self) -> frozenset[tuple[str, str]]:
        return frozenset(a.compartment for a in self.alternatives if a.compartment is not None)


def principal_of(request: FhirRequest) -> Principal:
    """The request's principal; a policy that finds none fails closed (401)."""
    principal = request.principal
    if not isinstance(principal, Principal):
        raise challenges.missing_token()
    return principal


def check_tenant(request: FhirRequest, principal: Principal) -> None:
    if (principal.tenant or DEFAULT_TENANT) != request.tenant:
        raise challenges.wrong_tenant()


def resource_of(version: ResourceVersion) -> dict[str, Any] | None:
    if version.body is None or version.deleted:
        return None
    parsed = jsonio.loads(version.body)
    return parsed if isinstance(parsed, dict) else None


class SmartPolicy:
    """The :class:`fhirflow.ports.AccessPolicy` for SMART on FHIR scopes."""

    def __init__(self, config: AuthConfig, store: ResourceStore | None = None) -> None:
        self.denied_read_status = config.denied_read_status
        self.admin_user_types = frozenset(config.admin_user_types)
        self.store = store
        """Lets instance history answer 404 for a resource outside the token's reach, not an empty page."""

    # -- the port -------------------------------------------------------------------------------

    def authorize(self, request: FhirRequest, interaction: str, resource_type: str | None) -> None:
        principal = principal_of(request)
        check_tenant(request, principal)
        if interaction in FREE_INTERACTIONS:
            return
        if interaction in ADMIN_INTERACTIONS:
            self._check_admin(principal, resource_type)
            return
        permission = INTERACTION_PERMISSIONS.get(interaction)
        if permission is None:
            raise challenges.insufficient_scope(f"No SMART scope grants the '{interaction}' interaction")
        admissions = self.admissions(principal, permission, resource_type)
        if not admissions:
            raise challenges.insufficient_scope()
        if interaction == "history-instance" and resource_type and not any(a.unrestricted for a in admissions):
            self._check_instance(request, principal, resource_type, request.resource_id)

    @staticmethod
    def _check_admin(principal: Principal, resource_type: str | None) -> None:
        """Server administration (``$reindex``): a backend service's ``system/`` scope that may
        update the type, or every type (``*``) when the action is not about one type."""
        for scope in principal.scopes.grants("u", resource_type):
            if scope.context == "system" and scope.resource_type in ("*", resource_type) and not scope.filters:
                return
        wanted = f"system/{resource_type or '*'}.u"
        raise challenges.insufficient_scope(f"This administrative action needs a scope like {wanted} (or .write)")

    def _check_instance(self, request: FhirRequest, principal: Principal, resource_type: str, id_: str) -> None:
        """Instance history of a resource the token may not read: 404 like a missing one, not an empty page."""
        if self.store is None:
            return  # history still lists only admitted versions (visible()), just without this 404
        head = self.store.current(request.tenant, resource_type, id_)
        if head is None:
            return  # the use case answers 404
        latest = head
        if head.deleted and head.version > 1:
            latest = self.store.version(request.tenant, resource_type, id_, head.version - 1) or head
        resource = resource_of(latest)
        if resource is None or not self.admits(principal, "r", resource_type, resource, request.base_url):
            raise self.denied(resource_type, id_)

    def check_read(self, request: FhirRequest, version: ResourceVersion) -> None:
        resource = resource_of(version)
        if resource is None:
            # A deletion has no body to place in a compartment: only an unrestricted scope may learn
            # that it existed (410); anyone else gets what an unknown id gets.
            if not any(a.unrestricted for a in self.admissions(principal_of(request), "r", version.type)):
                raise self.denied(version.type, version.id)
            return
        if not self.admits(principal_of(request), "r", version.type, resource, request.base_url):
            raise self.denied(version.type, version.id)

    def visible(self, request: FhirRequest, version: ResourceVersion) -> bool:
        principal = principal_of(request)
        permission = "r" if request.resource_id else "s"
        resource = resource_of(version)
        if resource is None:
            # A deletion has no body to place in a compartment: only unrestricted scopes list it.
            return any(a.unrestricted for a in self.admissions(principal, permission, version.type))
        return self.admits(principal, permission, version.type, resource, request.base_url)

    def knows(self, request: FhirRequest, version: ResourceVersion) -> bool:
        """May read it, or may do to it what the request does (a write-only token knows what it may
        write). A deletion has no body to place in a compartment: only unrestricted scopes know it."""
        principal = principal_of(request)
        permissions = ["r"]
        if request.method in WRITE_PERMISSIONS:
            permissions.append(WRITE_PERMISSIONS[request.method])
        resource = resource_of(version)
        if resource is None:
            return any(a.unrestricted for p in permissions for a in self.admissions(principal, p, version.type))
        return any(self.admits(principal, p, version.type, resource, request.base_url) for p in permissions)

    def knows_holder(self, request: FhirRequest, resource_type: str, id_: str) -> bool:
        """A scope to read the type or to do to it what the request does (see ``knows``) that admits
        any resource: unrestricted (system, or a user of an admin type), or the compartment that
        ``resource_type/id_`` itself is (``Patient/p1`` to the token of patient p1) without filters."""
        principal = principal_of(request)
        permissions = ["r"]
        if request.method in WRITE_PERMISSIONS:
            permissions.append(WRITE_PERMISSIONS[request.method])
        return any(
            not a.filters and a.compartment in (None, (resource_type, id_))
            for p in permissions
            for a in self.admissions(principal, p, resource_type)
        )

    def check_write(
        self,
        request: FhirRequest,
        resource_type: str,
        id_: str,
        new: dict[str, Any] | None,
        current: ResourceVersion | None,
    ) -> None:
        principal = principal_of(request)
        permission = WRITE_PERMISSIONS.get(request.method)
        if permission is None:
            raise challenges.insufficient_scope()
        before = resource_of(current) if current is not None else None
        if before is not None and not self.admits(principal, permission, resource_type, before, request.base_url):
            raise self.denied(resource_type, id_)
        if new is not None:
            after = new if new.get("id") == id_ else {**new, "id": id_}
            if resource_type in OWNED_TYPES:  # stored with its owner's tag (the write hook): the writer's
                after = with_owner(after, tag_of(before) or owner_tag(principal, request.tenant))
            if not self.admits(principal, permission, resource_type, after, request.base_url):
                raise challenges.insufficient_scope(
                    f"The access token does not allow writing this {resource_type}: it would be outside "
                    "the compartment or the resources its scopes admit"
                )

    # -- hooks for search, _include and export --------------------------------------------------

    def search_constraint(
        self, request: FhirRequest, resource_type: str | None, permission: str = "s"
    ) -> AccessConstraint | None:
        """What a search (or export) of ``resource_type`` must add to its query; None: nothing.

        Raises 403 when no scope grants ``permission`` on the type at all.
        """
        principal = principal_of(request)
        check_tenant(request, principal)
        # Across all types (None) only wildcard scopes count: a constraint has no type of its own, so
        # "patient/Observation.rs" must not admit the patient's Conditions to a system search.
        admissions = self.admissions(principal, permission, resource_type, wildcard_only=resource_type is None)
        if not admissions:
            raise challenges.insufficient_scope(
                "The access token does not allow this search"
                + ("; name the resource types with _type" if resource_type is None else "")
            )
        if any(a.unrestricted for a in admissions):
            return None
        return AccessConstraint(tuple(dict.fromkeys(admissions)))

    def admits_resource(self, request: FhirRequest, resource: Mapping[str, Any], permission: str = "r") -> bool:
        """For resources a search adds by ``_include``/``_revinclude``: may this one be returned?"""
        rtype = resource.get("resourceType")
        if not isinstance(rtype, str):
            return False
        return self.admits(principal_of(request), permission, rtype, dict(resource), request.base_url)

    # -- the rules ------------------------------------------------------------------------------

    def admissions(
        self, principal: Principal, permission: str, resource_type: str | None, *, wildcard_only: bool = False
    ) -> list[Admission]:
        out: list[Admission] = []
        for scope in principal.scopes.grants(permission, resource_type):
            if wildcard_only and scope.resource_type != "*":
                continue
            compartment: tuple[str, str] | None
            if scope.context == "system":
                compartment = None
            elif scope.context == "patient":
                if principal.patient is None:
                    continue
                compartment = ("Patient", principal.patient)
            else:
                if principal.fhir_user is None:
                    continue
                compartment = None if principal.fhir_user[0] in self.admin_user_types else principal.fhir_user
            if compartment is not None and resource_type in OWNED_TYPES:
                # In no compartment: a restricted scope reaches the principal's own ones (ownership.py).
                tag = owner_tag(principal, principal.tenant or DEFAULT_TENANT)
                if tag is None:
                    continue
                out.append(Admission(None, (*scope.filters, ("_tag", f"{tag['system']}|{tag['code']}"))))
                continue
            out.append(Admission(compartment, scope.filters))
        return out

    def admits(
        self, principal: Principal, permission: str, resource_type: str, resource: dict[str, Any], base_url: str
    ) -> bool:
        compartments: set[tuple[str, str]] | None = None
        for admission in self.admissions(principal, permission, resource_type):
            if admission.filters:
                from fhirflow.authz.filters import matches

                if not matches(resource, admission.filters):
                    continue
            if admission.compartment is None:
                return True
            if compartments is None:
                from fhirflow.searchparams.compartments import compartments_of

                compartments = set(compartments_of(resource, base_url=base_url or None))
            if admission.compartment in compartments:
                return True
        return False

    def denied(self, resource_type: str, id_: str) -> FhirError:
        if self.denied_read_status == 403:
            return Forbidden(f"The access token does not allow access to {resource_type}/{id_}")
        return NotFound(f"{resource_type}/{id_} is not known")  # word for word what a missing resource says
