"""Search result parameters (search.html#return): _type, _sort, _count, _total, _summary,
_elements, _contained, _containedType, _include and _revinclude.

A repeated singleton (``_count``, ``_total``...) keeps its last value; ``_sort`` and the
includes accumulate. ``_include:recurse`` (STU3) is read as ``:iterate``, ``_sort:desc`` (STU3)
as descending keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from fhirflow.errors import BadRequest, Issue
from fhirflow.query.ast import Contained, ContainedType, Criterion, Include, Query, SortKey, Summary, Total

if TYPE_CHECKING:
    from fhirflow.query.parser import Parser

_ELEMENT = re.compile(r"(?:[A-Z][A-Za-z]*\.)?[a-z][A-Za-z0-9]*(?:\[x\])?")
_CHOICES: dict[str, frozenset[str]] = {
    "_total": frozenset(("none", "estimate", "accurate")),
    "_summary": frozenset(("true", "text", "data", "count", "false")),
    "_contained": frozenset(("true", "false", "both")),
    "_containedType": frozenset(("container", "contained")),
}
RESULT_NAMES = frozenset(("_sort", "_count", "_elements", "_include", "_revinclude", *_CHOICES))


class ResultParams:
    def __init__(self, parser: Parser) -> None:
        self.parser = parser
        self.registry = parser.registry
        self.includes: list[Include] = []
        self.revincludes: list[Include] = []
        self.sort: list[SortKey] = []
        self.count: int | None = None
        self.choices: dict[str, str] = {}
        self.elements: tuple[str, ...] = ()

    def parse_types(self, params: Sequence[tuple[str, str]]) -> tuple[str, ...]:
        """The types the criteria apply to: the searched type, or ``_type`` for a system search."""
        if self.parser.resource_type is not None:
            for name, _ in params:
                if name == "_type":
                    self.parser.skip(name, "_type applies to system-level searches only (parameter '_type')")
            return (self.parser.resource_type,)
        types: list[str] = []
        for name, value in params:
            if name != "_type":
                continue
            for rtype in (t.strip() for t in value.split(",")):
                if not self.registry.is_resource_type(rtype):
                    raise BadRequest(f"_type: unknown resource type '{rtype}'", expression="_type")
                if rtype not in types:
                    types.append(rtype)
        return tuple(types)

    def handle(self, name: str, value: str, types: tuple[str, ...]) -> bool:
        """Parse ``name`` if it is a result parameter; False for anything else."""
        base, _, modifier = name.partition(":")
        if base not in RESULT_NAMES:
            return False
        if base in ("_include", "_revinclude"):
            if modifier not in ("", "iterate", "recurse"):
                self.parser.skip(name, f"Unknown modifier ':{modifier}' on {base} (parameter '{name}')")
                return True
            self.include(name, base == "_revinclude", value, types, iterate=bool(modifier))
        elif base == "_sort" and modifier in ("", "asc", "desc"):
            self.sort_keys(name, value, types, descending=modifier == "desc")
        elif modifier:
            self.parser.skip(name, f"Unknown modifier ':{modifier}' on {base} (parameter '{name}')")
        elif base == "_count":
            if not value.isdigit():
                raise BadRequest(f"_count must be a non-negative integer, got '{value}'", expression="_count")
            self.count = int(value)
        elif base == "_elements":
            self.elements = self.element_names(value)
        else:
            if value not in _CHOICES[base]:
                allowed = " | ".join(sorted(_CHOICES[base]))
                raise BadRequest(f"{base} must be one of {allowed}, got '{value}'", expression=base)
            self.choices[base] = value
        return True

    def element_names(self, value: str) -> tuple[str, ...]:
        names = tuple(n.strip() for n in value.split(",") if n.strip())
        for element in names:
            if not _ELEMENT.fullmatch(element):
                raise BadRequest(f"_elements: invalid element name '{element}'", expression="_elements")
        return names

    def sort_keys(self, name: str, value: str, types: tuple[str, ...], *, descending: bool) -> None:
        from fhirflow.query.parser import Skip  # parser imports this module

        for key in value.split(","):
            code = key.strip().removeprefix("-")
            if not code:
                raise BadRequest(f"_sort: empty sort key in '{value}'", expression="_sort")
            try:
                param = self.parser.lookup(types, code)
            except Skip as skip:
                self.parser.skip(name, f"{skip} (parameter '{name}')")
                continue
            self.sort.append(SortKey(param, descending or key.strip().startswith("-")))

    def include(self, name: str, reverse: bool, value: str, types: tuple[str, ...], *, iterate: bool) -> None:
        for item in (v.strip() for v in value.split(",")):
            include = self.include_item(name, item, reverse=reverse, iterate=iterate)
            if include is None:
                continue
            problem = self.unrelated(include, reverse, types)
            if problem:
                self.parser.skip(name, f"{problem} (parameter '{name}')")
            elif reverse:
                self.revincludes.append(include)
            else:
                self.includes.append(include)

    def include_item(self, name: str, item: str, *, reverse: bool, iterate: bool) -> Include | None:
        if item == "*":
            return Include(None, None, None, iterate)
        parts = item.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise BadRequest(f"{name}: '{item}' is not Type:parameter[:targetType]", expression=name)
        source = parts[0]
        if not self.registry.is_resource_type(source):
            raise BadRequest(f"{name}: unknown resource type '{source}'", expression=name)
        if parts[1] == "*":
            return Include(source, None, None, iterate)
        param = self.registry.get(source, parts[1])
        if param is None:
            self.parser.skip(name, f"Unknown search parameter '{parts[1]}' for '{source}' (parameter '{name}')")
            return None
        if param.type != "reference":
            raise BadRequest(f"{name}: '{source}:{parts[1]}' is not a reference parameter", expression=name)
        target = parts[2] if len(parts) == 3 else None
        if target is not None and (
            not self.registry.is_resource_type(target) or (param.targets and target not in param.targets)
        ):
            raise BadRequest(f"{name}: '{source}:{parts[1]}' cannot refer to '{target}'", expression=name)
        return Include(source, param, target, iterate)

    def unrelated(self, include: Include, reverse: bool, types: tuple[str, ...]) -> str | None:
        """Why a non-iterating include cannot apply to the searched types (None if it can)."""
        if include.iterate or not types or include.source_type is None:
            return None
        if not reverse:
            return None if include.source_type in types else f"{include.source_type} is not a searched type"
        targets = include.param.targets if include.param else ()
        if include.target_type is not None:
            targets = (include.target_type,)
        if targets and not any(t in targets for t in types):
            return f"{include.source_type} resources cannot refer to {', '.join(types)} that way"
        return None

    def build(
        self, resource_type: str | None, types: tuple[str, ...], criteria: tuple[Criterion, ...], ignored: list[Issue]
    ) -> Query:
        choice: dict[str, Any] = self.choices
        return Query(
            resource_type=resource_type,
            types=types if resource_type is None else (),
            criteria=criteria,
            includes=tuple(self.includes),
            revincludes=tuple(self.revincludes),
            sort=tuple(self.sort),
            count=self.count,
            total=cast(Total | None, choice.get("_total")),
            summary=cast(Summary | None, choice.get("_summary")),
            elements=self.elements,
            contained=cast(Contained | None, choice.get("_contained")),
            contained_type=cast(ContainedType | None, choice.get("_containedType")),
            ignored=ignored,
        )
