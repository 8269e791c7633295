"""Compiling the FHIRPath subset of R4 search parameter expressions into walk steps.

Most R4 expressions are dotted paths, unions of paths, choice elements narrowed with
``as``/``ofType``, ``where(field = 'literal')``, ``where(resolve() is Type)`` and indexers.
:func:`compile_part` turns such a part into steps for :func:`fhirflow.searchparams.paths.walk`
(encoding described there), using the R4 element types of fhirpathpy's model; anything else
returns None and is evaluated by fhirpathpy. Used at generation time and when a runtime
SearchParameter is registered, never on the indexing path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

from fhirflow.searchparams.paths import Step

_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^'\\]|\\.)*')|(?P<num>\d+)|(?P<id>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>!=|[.()\[\]|=]))"
)
_EXISTS_NOT_FALSE = re.compile(r"(?P<path>[A-Za-z][A-Za-z0-9.]*)\.exists\(\)\s+and\s+(?P=path)\s*!=\s*false")


class Unsupported(Exception):
    """The expression uses FHIRPath beyond the compiled subset: evaluate it with fhirpathpy."""


@dataclass(frozen=True)
class TypeModel:
    """Element types of R4, in the shape of fhirpathpy's ``models['r4']``."""

    path2type: Mapping[str, str]
    choices: Mapping[str, Sequence[str]]
    elsewhere: Mapping[str, str]
    parents: Mapping[str, str]

    @classmethod
    def r4(cls) -> TypeModel:
        from fhirpathpy.models import models  # 80 ms, only when compiling

        model = models["r4"]
        return cls(model["path2Type"], model["choiceTypePaths"], model["pathsDefinedElsewhere"], model["type2Parent"])

    @cached_property
    def backbones(self) -> frozenset[str]:
        out: set[str] = set()
        for path in self.path2type:
            parts = path.split(".")
            out.update(".".join(parts[:i]) for i in range(2, len(parts)))
        return frozenset(out)


@dataclass(frozen=True, slots=True)
class Compiled:
    steps: tuple[Step, ...]
    hint: str | None  # FHIR type of the nodes when known (HumanName, ContactPoint, code...)
    context: str | None  # model path of the nodes, for compiling relative (composite) expressions


def leading_type(part: str) -> str | None:
    """The resource type a part starts from (``(Observation.value as Quantity)`` → Observation);
    None for a relative expression (``name | alias``)."""
    match = re.match(r"\(*\s*([A-Z][A-Za-z0-9]*)\s*(?:[.)]|$)", part)
    return match.group(1) if match else None


# ---------------------------------------------------------------------------------------------
# Compiling


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            raise Unsupported(text[pos:])
        out.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    return out


class _State:
    def __init__(self, model: TypeModel, context: str) -> None:
        self.model = model
        self.context: str | None = context
        self.choice: tuple[str, Sequence[str]] | None = None
        self.steps: list[Step] = []

    def child(self, name: str) -> None:
        if self.choice is not None or self.context is None:
            raise Unsupported(name)
        full = self._element(self.context, name)
        model = self.model
        if full in model.choices:
            types = model.choices[full]
            self.steps.append(("f", tuple(name + t for t in types)))
            self.choice, self.context = (name, types), None
            return
        self.steps.append(("f", (name,)))
        while full in model.elsewhere:
            full = model.elsewhere[full]
        self.context = model.path2type.get(full, full)

    def _element(self, context: str, name: str) -> str:
        model = self.model
        current: str | None = context
        while current is not None:
            full = f"{current}.{name}"
            if full in model.path2type or full in model.choices or full in model.backbones or full in model.elsewhere:
                return full
            current = model.parents.get(current)
        raise Unsupported(f"{context}.{name}")

    def narrow(self, type_name: str) -> None:
        if self.choice is None:
            if self.context != type_name:
                raise Unsupported(type_name)
            return
        name, types = self.choice
        wanted = type_name[0].upper() + type_name[1:]
        if wanted not in types:
            raise Unsupported(type_name)
        self.steps[-1] = ("f", (name + wanted,))
        self.choice, self.context = None, type_name

    def hint(self) -> str | None:
        if self.choice is not None:
            types = self.choice[1]
            return types[0][0].lower() + types[0][1:] if len(types) == 1 else None
        return self.context


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], state: _State) -> None:
        self.tokens, self.pos, self.state = tokens, 0, state

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        if self.pos >= len(self.tokens):
            raise Unsupported("end")
        got_kind, got = self.tokens[self.pos]
        if (kind and got_kind != kind) or (value and got != value):
            raise Unsupported(got)
        self.pos += 1
        return got

    def term(self, *, root: bool) -> None:
        if self.peek() == "(":
            self.take(value="(")
            self.term(root=root)
            if self.peek() == "as":
                self.take()
                self.state.narrow(self.take("id"))
            self.take(value=")")
        elif root:
            self.take("id")  # the resource type; the walk starts at the resource
        else:
            self.state.child(self.take("id"))
        self.postfix()

    def postfix(self) -> None:
        while (tok := self.peek()) is not None:
            if tok == ".":
                self.take()
                self.invocation(self.take("id"))
            elif tok == "[":
                self.take()
                self.state.steps.append(("i", int(self.take("num"))))
                self.take(value="]")
            else:
                return

    def invocation(self, name: str) -> None:
        if self.peek() != "(":
            self.state.child(name)
            return
        self.take(value="(")
        if name in ("as", "ofType"):
            self.state.narrow(self.take("id"))
        elif name == "first":
            self.state.steps.append(("i", 0))
        elif name == "where":
            self.where()
        else:
            raise Unsupported(name)
        self.take(value=")")

    def where(self) -> None:
        if self.peek() == "resolve":
            self.take(), self.take(value="("), self.take(value=")"), self.take(value="is")
            if self.state.context != "Reference":
                raise Unsupported("resolve")
            self.state.steps.append(("r", self.take("id")))
            return
        key = self.take("id")
        self.take(value="=")
        literal = self.take("str")[1:-1].replace("\\'", "'")
        self.state.steps.append(("w", key, literal))


def compile_part(part: str, model: TypeModel, *, context: str | None = None) -> Compiled | None:
    """Compile one union member. ``context`` set: a relative expression (composite component)
    evaluated on nodes of that model path; otherwise ``part`` starts with its resource type."""
    flag = _EXISTS_NOT_FALSE.fullmatch(part.strip())
    if flag is not None:
        inner = compile_part(flag["path"], model, context=context)
        return None if inner is None else Compiled((*inner.steps, ("b",)), "boolean", "boolean")
    try:
        tokens = _tokens(part)
        if context is None:
            root = leading_type(part)
            if root is None:
                raise Unsupported(part)
            state = _State(model, root)
        else:
            state = _State(model, context)
        parser = _Parser(tokens, state)
        parser.term(root=context is None)
        if parser.peek() == "as":  # `Type.path as X` without parentheses
            parser.take()
            state.narrow(parser.take("id"))
        if parser.pos != len(tokens):
            raise Unsupported(part)
    except (Unsupported, ValueError):
        return None
    return Compiled(tuple(state.steps), state.hint(), state.context)
