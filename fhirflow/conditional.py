"""The criteria of conditional interactions, and the uniqueness key they claim.

http://hl7.org/fhir/R4/http.html#ccreate (``If-None-Exist``), #cond-update, #3.1.0.7.1 (conditional
delete), #patch (conditional patch) and bundle.html / http.html#trules (``ifNoneExist`` and
conditional references such as ``Patient?identifier=http://x|123``) all name resources by a search.
The spec asks a server to refuse, not ignore, what it cannot evaluate there, and allows only
filtering parameters ("none of the parameters that control the return of resources are
relevant"), so parsing here is strict: an unknown parameter or modifier, a result parameter
(``_count``, ``_sort``, ``_include``...), an empty value, or no criteria at all is a 400.

Two conditional creates racing with the same criteria must not make two resources (DESIGN.md §3).
Each create claims a *uniqueness key*: the SHA-256 of the criteria in a normal form, written in the
same store transaction as the resource (SQLite: a ``uniques`` row; DynamoDB: an item
``{tenant}#{Type}#cond#{sha256}``). The normal form makes equivalent spellings one key:

- the tenant and the resource type come first (a key never crosses either);
- each criterion is written as its parameter name with modifier and chain (``subject:Patient.name``,
  ``_has:Observation:patient:code``) and its values, after the search parser's own normalisation
  (``subject:Patient=1`` → ``subject=Patient/1``, escapes resolved, the ``eq`` prefix dropped);
- string values use the index's normalised form (case and accents folded, as string search
  matches them) unless ``:exact``; dates are their prefix and the [low, high] range their precision
  implies (``2020-01-01T00:00:00Z`` and ``2020-01-01T00:00:00+00:00`` are one instant);
- the OR-ed values of one parameter are sorted and deduplicated, and so are the AND-ed criteria
  (``identifier=a|b&x=1`` and ``x=1&identifier=a|b`` are one key; repeating a criterion changes
  nothing).

Two spellings the normal form does not merge (``Patient/1`` against its absolute URL, ``1.0``
against ``1.00``, which are different ranges) just claim different keys: the key only has to be
the same where the searches are the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from fhirflow import jsonio
from fhirflow.errors import BadRequest, MultipleMatches
from fhirflow.model import FhirRequest
from fhirflow.ports import Claim, ResourceVersion
from fhirflow.query.ast import (
    CompositeQuery,
    Criterion,
    DateQuery,
    Filter,
    Query,
    QueryValue,
    StringQuery,
)
from fhirflow.query.parser import parse
from fhirflow.query.render import criterion_name, render_value
from fhirflow.query.results import RESULT_NAMES
from fhirflow.query.values import escape
from fhirflow.search_ports import PageRequest, SearchScope
from fhirflow.searchparams.registry import Registry, default_registry

if TYPE_CHECKING:
    from fhirflow.runtime import Dependencies
    from fhirflow.search_ports import SearchEngine

TRANSPORT_PARAMS = frozenset(("_format", "_pretty"))
"""Parameters about the HTTP exchange, not the criteria: left out of them."""
_NOT_CRITERIA = RESULT_NAMES | {"_type"}
_CONDITIONAL_REFERENCE = re.compile(r"(?P<type>[A-Z][A-Za-z]+)\?(?P<query>.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Criteria:
    """Parsed conditional criteria on one resource type."""

    resource_type: str
    query: Query
    """Filtering criteria only (no result parameters), as the search backends take them."""
    canonical: str
    """The normal form (see the module docstring), without tenant and type."""
    text: str
    """The criteria as the client wrote them (for messages)."""

    def key(self, tenant: str, reach: str = "") -> str:
        """The uniqueness key: SHA-256 (hex) of tenant, type and the normal form, and for a caller
        confined to part of the data, of ``reach`` (what it may search, see
        :func:`fhirflow.search_access.reach`): criteria are evaluated only over what the caller may
        read, so such a caller's creates are unique among what it can see, and a key held by a
        resource it may not see neither blocks it nor tells it that the resource exists."""
        material = "\n".join((tenant, self.resource_type, self.canonical, *((reach,) if reach else ())))
        return hashlib.sha256(material.encode("utf-8")).hexdigest()


def parse_criteria(
    resource_type: str,
    params: list[tuple[str, str]],
    *,
    text: str | None = None,
    where: str | None = None,
    label: str | None = None,
    registry: Registry | None = None,
) -> Criteria:
    """Strictly parsed criteria from URL-decoded ``(name, value)`` pairs. A 400 has ``where`` as its
    expression (else the parameter's name) and starts its message with ``label`` (else ``where``)."""
    label = label or where or "the search criteria"
    kept = [(name, value) for name, value in params if name not in TRANSPORT_PARAMS]
    written = text if text is not None else "&".join(f"{n}={v}" for n, v in kept)
    for name, value in kept:
        base = name.split(":", 1)[0]
        if base in _NOT_CRITERIA:
            raise BadRequest(
                f"{label}: '{name}' controls how results are returned; conditional criteria take only "
                "filtering parameters",
                expression=where or name,
            )
        if value == "":
            raise BadRequest(f"{label}: parameter '{name}' has no value", expression=where or name)
    if not kept:
        raise BadRequest(
            f"{label}: a conditional {resource_type} interaction needs search criteria "
            "(the server will not act on every resource of a type)",
            expression=where or resource_type,
        )
    try:
        query = parse(resource_type, kept, strict=True, registry=registry or default_registry())
    except BadRequest as error:
        raise BadRequest(f"{label}: {error.diagnostics}", expression=where or error.issues[0].expression) from error
    if not query.criteria:  # pragma: no cover - strict parsing raises on everything it would leave out
        raise BadRequest(f"{label}: no search criteria this server can evaluate", expression=where or resource_type)
    return Criteria(resource_type, query, canonical_form(query), written[:400])


def parse_query_string(resource_type: str, raw: str, *, where: str | None = None, label: str | None = None) -> Criteria:
    """Criteria written as a query string: ``identifier=http://x|1&active=true`` (``If-None-Exist``).

    ``Patient?identifier=...`` (the form many clients send in ``Bundle.entry.request.ifNoneExist``)
    is taken too, when the type before ``?`` is ``resource_type``."""
    text = raw.strip()
    if "?" in text:
        head, _, rest = text.partition("?")
        named = urlsplit(head).path.rstrip("/").rsplit("/", 1)[-1]
        if named != resource_type:
            raise BadRequest(
                f"{label or where or 'the criteria'}: '{text[:120]}' is about '{named[:64]}', not {resource_type}",
                expression=where or resource_type,
            )
        text = rest
    pairs = parse_qsl(text, keep_blank_values=True)
    return parse_criteria(resource_type, pairs, text=raw, where=where, label=label)


def conditional_reference(reference: str) -> tuple[str, str] | None:
    """``Patient?identifier=x|1`` → (``Patient``, ``identifier=x|1``); None for any other reference."""
    match = _CONDITIONAL_REFERENCE.fullmatch(reference)
    if match is None:
        return None
    return match["type"], match["query"]


# -- the normal form --------------------------------------------------------------------------------


def canonical_form(query: Query) -> str:
    """The AND-ed criteria, each ``name=values``, sorted and deduplicated (see the module docstring)."""
    return "&".join(sorted({_criterion(c) for c in query.criteria}))


def _criterion(criterion: Criterion) -> str:
    name = criterion_name(criterion)
    inner = criterion
    while not isinstance(inner, Filter):
        inner = inner.criterion
    exact = inner.modifier == "exact"
    values = sorted({_value(v, exact=exact) for v in inner.values})
    return f"{name}={','.join(values)}"


def _value(value: QueryValue, *, exact: bool) -> str:
    if isinstance(value, StringQuery) and not exact:
        return escape(value.normalized)
    if isinstance(value, DateQuery):
        return f"{value.prefix}[{value.low},{value.high}]"
    if isinstance(value, CompositeQuery):
        return "$".join(_value(c, exact=exact) for c in value.components)
    return render_value(value)


# -- resolving criteria (shared by the crud and bundle services' conditional interactions) -----------


@dataclass(frozen=True, slots=True)
class Resolution:
    """What conditional criteria found: the current versions of up to two matches, and the key."""

    criteria: Criteria
    key: str
    matches: tuple[ResourceVersion, ...]
    stale_owner: str | None = None
    """The key's owner, found deleted or no longer matching: a create replaces it."""

    @property
    def claim(self) -> Claim:
        return Claim(self.key, self.stale_owner)

    def single(self, *, action: str) -> ResourceVersion | None:
        """The one match, None for none, 412 for several (http.html: the criteria are not selective)."""
        if len(self.matches) > 1:
            raise MultipleMatches(
                f"The criteria '{self.criteria.text}' match more than one {self.criteria.resource_type}; "
                f"{action} needs criteria that select at most one",
                expression=self.criteria.resource_type,
            )
        return self.matches[0] if self.matches else None


def _engine(deps: Dependencies) -> SearchEngine:
    from fhirflow.runtime import search_engine

    return search_engine(deps.settings)


def resolve(deps: Dependencies, request: FhirRequest, criteria: Criteria, *, count: int = 2) -> Resolution:
    """Search for ``criteria`` as this principal (``search-type`` on the type), then consult the
    uniqueness key when the search finds nothing (see the module docstring). Up to ``count``
    matches: two tell one from several."""
    from fhirflow.search_access import access_rules, limit_chains, reach

    rtype = criteria.resource_type
    engine = _engine(deps)
    for criterion in criteria.query.criteria:
        reason = engine.unsupported(criterion)
        if reason is not None:
            name = criterion_name(criterion)
            raise BadRequest(f"Conditional criteria: {reason} (parameter '{name}')", expression=name)
    deps.policy.authorize(request, "search-type", rtype)
    scope = SearchScope(
        tenant=request.tenant,
        base_url=request.base_url,
        types=(rtype,),
        access=access_rules(deps.policy, request, (rtype,)),
    )
    key = criteria.key(request.tenant, reach(deps.policy, request, rtype))
    # Chains and _has in the criteria look only at what this principal may search (issue 14).
    criteria = dataclasses.replace(criteria, query=limit_chains(deps.policy, request, criteria.query))
    page = engine.page(scope, criteria.query, PageRequest(count=count))
    found: list[ResourceVersion] = []
    for hit in page.hits:
        head = deps.store.current(request.tenant, hit.type, hit.id)
        if head is not None and not head.deleted and head.body is not None:  # else: the index trails a delete
            found.append(head)
    if found:
        return Resolution(criteria, key, tuple(found))
    owner = deps.store.claim_owner(request.tenant, rtype, key)
    if owner is None:
        return Resolution(criteria, key, ())
    head = deps.store.current(request.tenant, rtype, owner)
    if head is None or head.deleted or head.body is None or not _still_matches(deps, scope, criteria, head):
        return Resolution(criteria, key, (), stale_owner=owner)
    admits = getattr(deps.policy, "admits_resource", None)
    if admits is not None and not admits(request, jsonio.loads(head.body), "s"):
        # Moved out of this principal's reach since it took the key: to this principal it is not
        # there (criteria are evaluated only over what it may read), so a create replaces the key.
        return Resolution(criteria, key, (), stale_owner=owner)
    return Resolution(criteria, key, (head,))


def _still_matches(deps: Dependencies, scope: SearchScope, criteria: Criteria, head: ResourceVersion) -> bool:
    """Whether the key's owner still matches, from its stored body (not the index, which may trail)."""
    from fhirflow.runtime import build_matcher

    assert head.body is not None
    resource = jsonio.loads(head.body)
    unconstrained = SearchScope(scope.tenant, scope.base_url, scope.types)
    verdict = build_matcher(deps.settings).matches(
        unconstrained, criteria.query, resource, last_updated=head.last_updated
    )
    if verdict is not None:
        return verdict
    # Chains and _has look at other resources: ask the index about this one resource.
    (only,) = parse(head.type, [("_id", head.id)], strict=True).criteria
    query = dataclasses.replace(criteria.query, criteria=(*criteria.query.criteria, only))
    return bool(_engine(deps).page(unconstrained, query, PageRequest(count=1)).hits)
