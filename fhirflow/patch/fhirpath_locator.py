"""Evaluate a FHIRPath Patch ``path`` to *locations* in a resource, not to values.

fhirpathpy returns values; a patch has to know where each value lives (the JSON object
holding it, the property name, the array position) to change it. So the path is parsed
strictly with the FHIRPath grammar fhirpathpy ships, its navigation spine is compiled to a
short list of steps, and the steps are run here while tracking locations. Sub-expressions
that only compute values (``where()`` criteria, indexes, arguments) are handed back to
fhirpathpy to evaluate.

The spine may use (R4 fhirpatch.html: the path must select elements of the resource itself,
so no ``resolve()``):

* a leading type name (``Patient``), ``$this``, ``%resource``/``%rootResource``/``%context``,
  or a leading element name (``name``, relative to the resource);
* ``.element`` (choice elements by their FHIRPath name: ``Observation.value``), including
  ``id``/``extension`` of primitives, which FHIR JSON keeps in ``_element``
  (R4 json.html#primitive);
* ``[n]``, ``where(criteria)``, ``first()``, ``last()``, ``tail()``, ``skip(n)``, ``take(n)``,
  ``single()``, ``distinct()``, ``extension(url)``, ``ofType(Type)``, ``as(Type)``,
  ``children()``, ``descendants()``, the union ``|`` and parentheses.

Anything else (operators, ``select()``, ``resolve()``, functions returning booleans or
computed values) is a 400: its result would not be an element of the resource.

This leans on fhirpathpy beyond its documented API: the generated ANTLR lexer and parser,
its ASTPathListener (the AST shape walked below), ``apply_parsed_path`` and ``ResourceNode``.
The unit tests pin that behaviour.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from fhirflow.patch.r4model import R4Model, r4_model
from fhirflow.searchparams.fhirpath import load_fhirpathpy

# Function name -> number of arguments, for the functions allowed on the spine.
_FUNCTIONS: Final = {
    "where": 1,
    "first": 0,
    "last": 0,
    "tail": 0,
    "skip": 1,
    "take": 1,
    "single": 0,
    "extension": 1,
    "ofType": 1,
    "as": 1,
    "distinct": 0,
    "children": 0,
    "descendants": 0,
}
_ROOT_CONSTANTS: Final = frozenset({"resource", "rootResource", "context"})
_PRIMITIVE_CHILDREN: Final = frozenset({"id", "extension"})


class PathSyntaxError(ValueError):
    """The path is not FHIRPath, or uses something a patch path cannot (400)."""


class PathEvaluationError(LookupError):
    """The path is valid but could not be evaluated against this resource (422)."""


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # "start" | "root" | "member" | "index" | "function" | "union"
    name: str = ""
    argument: Any = None  # the argument's AST node, the type name for ofType, the operands of a union


@dataclass(frozen=True, slots=True)
class CompiledPath:
    text: str
    steps: tuple[Step, ...]

    @property
    def ends_with_element_name(self) -> bool:
        return self.steps[-1].kind in ("start", "member")


@dataclass(frozen=True, slots=True)
class Location:
    """Where one element lives: ``owner[key]`` or ``owner[key][index]``; owner None is the resource."""

    owner: dict[str, Any] | None
    key: str
    index: int | None
    element: str  # definition path, e.g. "Patient.contact" or "HumanName.given"
    fhir_type: str | None  # "HumanName", "string", the resourceType of a contained resource...
    choice_name: str | None  # "value" when key is "valueQuantity"
    value: Any
    expression: str  # a canonical FHIRPath to the element, for diagnostics

    @property
    def base(self) -> str:
        """The prefix under which this element's children are defined."""
        return r4_model().child_base(self.element, self.fhir_type)


def compile_path(text: str) -> CompiledPath:
    """Parse ``text`` strictly and compile its navigation spine; raises PathSyntaxError."""
    if not text.strip():
        raise PathSyntaxError("the path is empty")
    ast = _parse_strictly(text)
    try:
        steps = _compile(ast)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:  # an AST shape we do not know
        raise PathSyntaxError("the path is not supported in a patch") from exc
    return CompiledPath(text, tuple(steps))


class Locator:
    """Runs compiled paths against one resource (the working copy being patched)."""

    def __init__(self, resource: dict[str, Any]) -> None:
        self._model: R4Model = r4_model()
        self._resource = resource
        resource_type = resource.get("resourceType")
        self._type = resource_type if isinstance(resource_type, str) else "Resource"
        self._fhirpath: Any = load_fhirpathpy()

    def root(self) -> Location:
        return Location(None, "", None, self._type, self._type, None, self._resource, self._type)

    def locate(self, path: CompiledPath) -> list[Location]:
        focus: list[Location] = []
        for step in path.steps:
            focus = self._run(step, focus)
        return focus

    def children(self, parent: Location, name: str) -> list[Location]:
        """``parent.name`` as locations, one per array item."""
        value = parent.value
        if isinstance(value, dict):
            return self._children_of(value, name, parent.base, parent.expression)
        if name in _PRIMITIVE_CHILDREN and parent.owner is not None and not isinstance(value, list):
            holder = primitive_holder(parent.owner, parent.key, parent.index)
            if holder is not None:
                return self._children_of(holder, name, "Element", parent.expression)
        return []

    def _run(self, step: Step, focus: list[Location]) -> list[Location]:
        if step.kind == "root":
            return [self.root()]
        if step.kind == "start":
            if step.name in (self._type, "DomainResource", "Resource"):
                return [self.root()]
            return self.children(self.root(), step.name)
        if step.kind == "member":
            return [child for location in focus for child in self.children(location, step.name)]
        if step.kind == "index":
            position = self.constant(step.argument, int, "index")
            return [focus[position]] if 0 <= position < len(focus) else []
        if step.kind == "union":
            left, right = step.argument
            return _distinct(self.locate(CompiledPath("", left)) + self.locate(CompiledPath("", right)))
        return _FUNCTION_RUNNERS[step.name](self, focus, step)

    def all_children(self, parent: Location) -> list[Location]:
        """FHIRPath children(): every child element, by its JSON property name."""
        value = parent.value
        if isinstance(value, dict):
            names = [key for key in value if not key.startswith("_") and key != "resourceType"]
            return [child for name in names for child in self.children(parent, name)]
        return [child for name in sorted(_PRIMITIVE_CHILDREN) for child in self.children(parent, name)]

    def _children_of(self, holder: dict[str, Any], name: str, parent_base: str, prefix: str) -> list[Location]:
        element = self._model.element_path(parent_base, name)
        key, fhir_type, choice_name = name, self._model.type_of(element), None
        if name not in holder:
            suffix = next((s for s in self._model.choice_types(element) or () if name + s in holder), None)
            if suffix is None:
                return []
            key, fhir_type, choice_name = name + suffix, self._model.type_for_suffix(suffix), name
        raw = holder[key]
        items = list(enumerate(raw)) if isinstance(raw, list) else [(None, raw)]
        found = []
        for index, value in items:
            if value is None:
                continue
            actual_type = fhir_type
            if fhir_type == "Resource" and isinstance(value, dict) and isinstance(value.get("resourceType"), str):
                actual_type = value["resourceType"]
            expression = f"{prefix}.{name}" + ("" if index is None else f"[{index}]")
            found.append(Location(holder, key, index, element, actual_type, choice_name, value, expression))
        return found

    def evaluate_value(self, node: Any, data: Any, base: str | None) -> list[Any]:
        """Evaluate a value-producing sub-expression with fhirpathpy, with ``data`` as its focus."""
        fp = self._fhirpath
        variables = {"resource": self._resource, "rootResource": self._resource}
        try:
            return list(
                fp.apply_parsed_path(
                    fp.ResourceNode.create_node(data, base), {"children": [node]}, variables, self._model.raw
                )
            )
        except Exception as exc:  # fhirpathpy raises bare exceptions for evaluation errors
            # exc's text may quote resource content, so it is chained, not shown.
            raise PathEvaluationError("a sub-expression of the path could not be evaluated on this resource") from exc

    def constant(self, node: Any, kind: type, what: str) -> Any:
        result = self.evaluate_value(node, self._resource, self._type)
        if len(result) != 1 or not isinstance(result[0], kind) or isinstance(result[0], bool):
            kind_name = "integer" if kind is int else "string"
            raise PathEvaluationError(f"the {what} in the path does not evaluate to a single {kind_name}")
        return result[0]

    def fhirpath_base(self, location: Location) -> str | None:
        """The type path fhirpathpy needs to type a value (choice elements, date comparisons)."""
        if location.fhir_type and location.fhir_type[:1].islower():
            return location.fhir_type
        return location.base


def primitive_holder(owner: dict[str, Any], key: str, index: int | None) -> dict[str, Any] | None:
    """The ``_key`` object holding a primitive's id and extensions (R4 json.html#primitive), if any."""
    holder = owner.get("_" + key)
    if index is not None:
        holder = holder[index] if isinstance(holder, list) and index < len(holder) else None
    return holder if isinstance(holder, dict) else None


def _where(locator: Locator, focus: list[Location], step: Step) -> list[Location]:
    kept = []
    for location in focus:
        result = locator.evaluate_value(step.argument, location.value, locator.fhirpath_base(location))
        # FHIRPath where(): an item is kept only when the criteria is the single value true.
        if len(result) == 1 and result[0] is True:
            kept.append(location)
    return kept


def _distinct(locations: list[Location]) -> list[Location]:
    seen: set[tuple[int, str, int | None]] = set()
    unique = []
    for location in locations:
        identity = (id(location.owner), location.key, location.index)
        if identity not in seen:
            seen.add(identity)
            unique.append(location)
    return unique


def _descendants(locator: Locator, focus: list[Location], _: Step) -> list[Location]:
    found: list[Location] = []
    frontier = focus
    while frontier:
        frontier = [child for location in frontier for child in locator.all_children(location)]
        found.extend(frontier)
    return found


def _single(_: Locator, focus: list[Location], __: Step) -> list[Location]:
    if len(focus) > 1:
        raise PathEvaluationError("single() was applied to more than one element")
    return focus


def _skip(locator: Locator, focus: list[Location], step: Step) -> list[Location]:
    return focus[max(locator.constant(step.argument, int, "skip() argument"), 0) :]


def _take(locator: Locator, focus: list[Location], step: Step) -> list[Location]:
    return focus[: max(locator.constant(step.argument, int, "take() argument"), 0)]


def _extension(locator: Locator, focus: list[Location], step: Step) -> list[Location]:
    url = locator.constant(step.argument, str, "extension() url")
    return [
        child
        for location in focus
        for child in locator.children(location, "extension")
        if isinstance(child.value, dict) and child.value.get("url") == url
    ]


def _of_type(locator: Locator, focus: list[Location], step: Step) -> list[Location]:
    model = r4_model()
    return [loc for loc in focus if loc.fhir_type is not None and model.is_a(loc.fhir_type, step.argument)]


_FUNCTION_RUNNERS: Final[dict[str, Callable[[Locator, list[Location], Step], list[Location]]]] = {
    "where": _where,
    "first": lambda _, focus, __: focus[:1],
    "last": lambda _, focus, __: focus[-1:],
    "tail": lambda _, focus, __: focus[1:],
    "skip": _skip,
    "take": _take,
    "single": _single,
    "extension": _extension,
    "ofType": _of_type,
    "as": _of_type,
    "distinct": lambda _, focus, __: _distinct(focus),
    "children": lambda locator, focus, __: [child for loc in focus for child in locator.all_children(loc)],
    "descendants": _descendants,
}


def _compile(node: dict[str, Any]) -> list[Step]:
    kind = node.get("type")
    children: list[dict[str, Any]] = node.get("children", [])
    if kind in ("TermExpression", "ParenthesizedTerm"):
        return _compile(children[0])
    if kind == "InvocationTerm":
        return _compile_start(children[0])
    if kind == "InvocationExpression":
        return [*_compile(children[0]), _compile_invocation(children[1])]
    if kind == "IndexerExpression":
        return [*_compile(children[0]), Step("index", argument=children[1])]
    if kind == "UnionExpression":
        return [Step("union", argument=(tuple(_compile(children[0])), tuple(_compile(children[1]))))]
    if kind == "ExternalConstantTerm":
        name = _identifier(children[0]["children"][0]) if children[0].get("children") else ""
        if name in _ROOT_CONSTANTS:
            return [Step("root")]
        raise PathSyntaxError(f"the constant %{name} cannot start a patch path")
    raise PathSyntaxError(f"'{node.get('text', kind)}' is not supported in a patch path ({kind})")


def _compile_start(node: dict[str, Any]) -> list[Step]:
    kind = node.get("type")
    if kind == "MemberInvocation":
        return [Step("start", _identifier(node["children"][0]))]
    if kind == "ThisInvocation":
        return [Step("root")]
    if kind == "FunctionInvocation":
        return [Step("root"), _compile_invocation(node)]
    raise PathSyntaxError(f"{kind} is not supported in a patch path")


def _compile_invocation(node: dict[str, Any]) -> Step:
    kind = node.get("type")
    if kind == "MemberInvocation":
        return Step("member", _identifier(node["children"][0]))
    if kind != "FunctionInvocation":
        raise PathSyntaxError(f"{kind} is not supported in a patch path")
    function = node["children"][0]
    name = _identifier(function["children"][0])
    arguments = function["children"][1]["children"] if len(function["children"]) > 1 else []
    if name not in _FUNCTIONS:
        raise PathSyntaxError(f"the function {name}() is not supported in a patch path")
    if len(arguments) != _FUNCTIONS[name]:
        raise PathSyntaxError(f"{name}() takes {_FUNCTIONS[name]} argument(s), not {len(arguments)}")
    if name in ("ofType", "as"):
        # The type specifier is a (possibly qualified) name, e.g. Quantity or FHIR.Quantity.
        return Step("function", name, str(arguments[0].get("text", "")).rpartition(".")[2].strip("`"))
    return Step("function", name, arguments[0] if arguments else None)


def _identifier(node: dict[str, Any]) -> str:
    # Delimited identifiers keep their backticks in the AST: `div` names the element div.
    return str(node.get("text", "")).strip("`")


class _RaisingErrorListener:
    """An ANTLR error listener that turns the first syntax error into PathSyntaxError.

    fhirpathpy's own parse() installs a listener that ignores errors and lets ANTLR
    recover, which would silently accept malformed paths.
    """

    def syntaxError(self, *args: Any) -> None:  # noqa: N802 (ANTLR's method name)
        # ANTLR passes (recognizer, offendingSymbol, line, column, msg, e).
        column, message = args[3], args[4]
        raise PathSyntaxError(f"syntax error at column {column + 1}: {message}")

    def reportAmbiguity(self, *args: Any) -> None:  # noqa: N802
        return None

    def reportAttemptingFullContext(self, *args: Any) -> None:  # noqa: N802
        return None

    def reportContextSensitivity(self, *args: Any) -> None:  # noqa: N802
        return None


def _parse_strictly(text: str) -> dict[str, Any]:
    """The fhirpathpy AST of ``text``, built from a parse that fails on the first syntax error."""
    antlr: Any = importlib.import_module("antlr4")
    lexer_module: Any = importlib.import_module("fhirpathpy.parser.generated.FHIRPathLexer")
    parser_module: Any = importlib.import_module("fhirpathpy.parser.generated.FHIRPathParser")
    listener_module: Any = importlib.import_module("fhirpathpy.parser.ASTPathListener")
    errors = _RaisingErrorListener()
    lexer = lexer_module.FHIRPathLexer(antlr.InputStream(text))
    lexer.removeErrorListeners()
    lexer.addErrorListener(errors)
    parser = parser_module.FHIRPathParser(antlr.CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(errors)
    try:
        # entireExpression is "expression EOF": trailing tokens are an error too.
        tree = parser.entireExpression()
        builder = listener_module.ASTPathListener()
        antlr.ParseTreeWalker().walk(builder, tree)
        # parentStack[0] holds the EntireExpression node, whose first child is the expression.
        ast: dict[str, Any] = builder.parentStack[0]["children"][0]["children"][0]
    except PathSyntaxError:
        raise
    except Exception as exc:  # ANTLR's recognition exceptions, or an AST shape we do not know
        raise PathSyntaxError("the path is not a valid FHIRPath expression") from exc
    return ast
