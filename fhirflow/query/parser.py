"""FHIR search query → :class:`~fhirflow.query.ast.Query` (search.html, R4).

``parse(resource_type, params, strict=...)`` takes ``(name, value)`` pairs, URL-decoded with
FHIR escapes intact. Unknown parameters, unknown modifiers and unsupported features follow the
``Prefer: handling`` preference: ``strict`` raises :class:`BadRequest` naming the parameter,
lenient leaves them out and records a warning :class:`Issue` in ``query.ignored``. Malformed
values (a bad date, an unknown prefix, a chain through a non-reference parameter, an ambiguous
chain) are a 400 either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

from fhirflow.errors import BadRequest, Issue
from fhirflow.query.ast import Chain, Criterion, Filter, Has, Modifier, Query, QueryValue
from fhirflow.query.results import ResultParams
from fhirflow.query.values import parse_value, split_escaped
from fhirflow.searchparams.registry import Registry, SearchParam, default_registry

# search.html#modifiers, per parameter type (reference also takes a resource type)
MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset(("missing", "exact", "contains")),
    "token": frozenset(("missing", "text", "not", "above", "below", "in", "not-in", "of-type")),
    "reference": frozenset(("missing", "identifier")),
    "uri": frozenset(("missing", "above", "below")),
    "date": frozenset(("missing",)),
    "number": frozenset(("missing",)),
    "quantity": frozenset(("missing",)),
    "composite": frozenset(("missing",)),
    "special": frozenset(("missing",)),
}
IGNORED = frozenset(("_format", "_pretty"))
MAX_VALUES = 1000
"""Most values one search may hold, over all its parameters (``a,b,c`` is three). The spec sets
no limit, but every value is a condition the backend evaluates: ten thousand ORed names took
SQLite tens of seconds. A search over the limit is a 400 ``too-costly`` naming the parameter
that crossed it, before any work."""
UNSUPPORTED = {"_query": "named queries (_query) are not supported", "_filter": "_filter is not supported"}


class Skip(Exception):
    """An unknown parameter or modifier, or an unsupported feature: 400 when strict, else ignored."""


class Parser:
    def __init__(self, resource_type: str | None, *, strict: bool, registry: Registry) -> None:
        if resource_type is not None and not registry.is_resource_type(resource_type):
            raise BadRequest(f"Unknown resource type '{resource_type}'")
        self.resource_type = resource_type
        self.strict = strict
        self.registry = registry
        self.ignored: list[Issue] = []
        self.value_count = 0

    def skip(self, name: str, message: str) -> None:
        if self.strict:
            raise BadRequest(message, expression=name)
        self.ignored.append(Issue("not-supported", message, (name,), "warning"))

    def parse(self, params: Sequence[tuple[str, str]]) -> Query:
        results = ResultParams(self)
        types = results.parse_types(params)
        criteria: list[Criterion] = []
        for name, value in params:
            try:
                if name in IGNORED or name == "_type" or results.handle(name, value, types):
                    continue
                if name in UNSUPPORTED:
                    raise Skip(UNSUPPORTED[name])
                if value == "":
                    self.ignored.append(Issue("informational", f"Parameter '{name}' has no value", (name,), "warning"))
                    continue
                self.count_values(name, value)
                criteria.append(self.criterion(name, types, value))
            except Skip as skip:
                self.skip(name, f"{skip} (parameter '{name}')")
        return results.build(self.resource_type, types, tuple(criteria), self.ignored)

    def count_values(self, name: str, value: str) -> None:
        """Refuse the search once its values pass MAX_VALUES, naming the parameter as written."""
        self.value_count += len(split_escaped(value, ","))
        if self.value_count > MAX_VALUES:
            message = (
                f"This search has more than {MAX_VALUES} values (parameter '{name}' passes the limit); "
                "split it into several searches"
            )
            raise BadRequest(message, issues=[Issue("too-costly", message, (name,))])

    # -- names ------------------------------------------------------------------------------

    def lookup(self, types: tuple[str, ...], code: str) -> SearchParam:
        """The parameter ``code`` on every type of ``types`` (common parameters when empty)."""
        if not types:
            param = self.registry.common(code)
            if param is None:
                raise Skip(f"Unknown search parameter '{code}' for a search across all types")
            return param
        found: list[SearchParam] = []
        for rtype in types:
            param = self.registry.get(rtype, code)
            if param is None:
                raise Skip(f"Unknown search parameter '{code}' for resource type '{rtype}'")
            found.append(param)
        if len({p.type for p in found}) > 1:
            raise BadRequest(f"Search parameter '{code}' has different types on {', '.join(types)}", expression=code)
        return found[0]

    def criterion(self, name: str, types: tuple[str, ...], value: str) -> Criterion:
        if name.startswith("_has:"):
            return self.has(name, types, value)
        head, dot, rest = name.partition(".")
        code, _, modifier = head.partition(":")
        if not code:
            raise BadRequest(f"Invalid search parameter name '{name}'", expression=name)
        param = self.lookup(types, code)
        if dot:
            return self.chain(param, modifier or None, rest, value)
        return self.filter(param, modifier or None, value, name)

    def has(self, name: str, types: tuple[str, ...], value: str) -> Has:
        parts = name[len("_has:") :].split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise BadRequest(f"'{name}': _has needs _has:Type:reference:parameter", expression=name)
        source, ref_code, inner = parts
        if not types:
            raise BadRequest(f"'{name}': _has needs a resource type (or _type)", expression=name)
        if not self.registry.is_resource_type(source):
            raise BadRequest(f"'{name}': unknown resource type '{source}'", expression=name)
        reference = self.lookup((source,), ref_code)
        if reference.type != "reference":
            raise BadRequest(f"'{name}': {source}.{ref_code} is not a reference parameter", expression=name)
        if reference.targets and not any(t in reference.targets for t in types):
            raise BadRequest(f"'{name}': {source}.{ref_code} cannot refer to {', '.join(types)}", expression=name)
        return Has(source, reference, self.criterion(inner, (source,), value))

    def chain(self, param: SearchParam, modifier: str | None, rest: str, value: str) -> Chain:
        name = f"{param.code}{':' + modifier if modifier else ''}.{rest}"
        if param.type != "reference":
            raise BadRequest(f"'{name}': cannot chain through {param.type} parameter '{param.code}'", expression=name)
        if modifier is not None:
            if not self.registry.is_resource_type(modifier):
                if modifier in MODIFIERS["reference"]:
                    raise BadRequest(f"'{name}': only a resource type may modify a chained parameter", expression=name)
                raise Skip(f"Unknown modifier ':{modifier}'")
            if param.targets and modifier not in param.targets:
                raise BadRequest(f"'{name}': '{param.code}' cannot refer to {modifier}", expression=name)
            return Chain(param, modifier, self.criterion(rest, (modifier,), value))
        target = self.chain_target(param, rest, name)
        return Chain(param, target, self.criterion(rest, (target,), value))

    def chain_target(self, param: SearchParam, rest: str, name: str) -> str:
        """The one target type of ``param`` that has the chained parameter (search.html#chaining)."""
        targets = effective_targets(param) or tuple(sorted(self.registry.resource_types))
        if rest.startswith("_has:"):
            parts = rest[len("_has:") :].split(":", 2)
            reverse = self.registry.get(parts[0], parts[1]) if len(parts) == 3 else None
            if reverse is not None and reverse.targets:
                targets = tuple(t for t in targets if t in reverse.targets) or targets
        else:
            code = rest.partition(".")[0].partition(":")[0]
            targets = tuple(t for t in targets if self.registry.get(t, code) is not None)
            if not targets:
                raise Skip(f"Unknown search parameter '{code}' on the targets of '{param.code}'")
        if len(targets) > 1:
            raise BadRequest(
                f"'{name}' is ambiguous: '{param.code}' may refer to {', '.join(targets)}; "
                f"name the type, e.g. '{param.code}:{targets[0]}.{rest}'",
                expression=name,
            )
        return targets[0]

    def filter(self, param: SearchParam, modifier: str | None, value: str, name: str) -> Filter:
        target: str | None = None
        if modifier is not None and modifier not in MODIFIERS[param.type]:
            if param.type == "reference" and self.registry.is_resource_type(modifier):
                if param.targets and modifier not in param.targets:
                    raise BadRequest(f"'{name}': '{param.code}' cannot refer to {modifier}", expression=name)
                target, modifier = modifier, None
            else:
                raise Skip(f"Unknown modifier ':{modifier}' for {param.type} parameter '{param.code}'")
        values = self.values(param, cast(Modifier | None, modifier), value, name, target)
        return Filter(param, cast(Modifier | None, modifier), values)

    def values(
        self, param: SearchParam, modifier: Modifier | None, value: str, name: str, target: str | None
    ) -> tuple[QueryValue, ...]:
        if param.type == "special" and param.code not in ("near", "_list"):
            raise Skip(f"Special parameter '{param.code}' is not supported")
        pieces = [p for p in split_escaped(value, ",") if p]
        if not pieces:
            raise BadRequest(f"Search parameter '{name}' has no value", expression=name)
        if modifier == "missing" and len(pieces) > 1:
            raise BadRequest(f"'{name}' takes a single true or false", expression=name)
        return tuple(parse_value(name, param, modifier, piece, target) for piece in pieces)


def effective_targets(param: SearchParam) -> tuple[str, ...]:
    """Declared targets, narrowed to the ``where(resolve() is T)`` types when every part has one
    (``Observation.patient`` declares Group too but selects only Patient references)."""
    resolved = {step[1] for part in param.parts for step in (part.steps or ()) if step[0] == "r"}
    all_filtered = bool(param.parts) and all(any(s[0] == "r" for s in (p.steps or ())) for p in param.parts)
    if all_filtered:
        return tuple(t for t in param.targets if t in resolved) or tuple(sorted(resolved))
    return param.targets


def parse(
    resource_type: str | None,
    params: Iterable[tuple[str, str]],
    *,
    strict: bool,
    registry: Registry | None = None,
) -> Query:
    """Parse a search on ``resource_type`` (None: system search) into a :class:`Query`."""
    parser = Parser(resource_type, strict=strict, registry=registry or default_registry())
    return parser.parse(list(params))
