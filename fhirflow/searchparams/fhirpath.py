"""Evaluation of search parameter expressions with fhirpathpy: the fallback and the reference.

fhirpathpy is imported on first use (about 50-80 ms). Three adjustments make R4 expressions
evaluate as servers read them:

- ``X.as(T)`` and ``(X as T)`` become ``X.ofType(T)``: R4's ``as`` raises on collections of more
  than one item (``Observation.component.value.as(Quantity)``), the intent is a filter, and R5
  rewrote these expressions with ``ofType``;
- a leading ``Resource.``/``DomainResource.`` is replaced by the concrete type, which fhirpathpy
  needs to match the root;
- ``ofType(DateTime)`` (and the other System type names) become the FHIR primitive
  (``ofType(dateTime)``): ``Observation-code-value-date`` writes ``value.as(DateTime)`` for the
  FHIR element, which would otherwise select nothing;
- ``resolve()`` returns a typed stub for literal references (``Patient/1``, absolute URLs) so
  ``where(resolve() is Patient)`` filters on the reference's type without fetching anything.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from typing import Any

from fhirflow.searchparams.paths import reference_type, split_union

_AS_FUNCTION = re.compile(r"\.as\(")
_AS_OPERATOR = re.compile(r"\(([^()']+?)\s+as\s+([A-Za-z]+)\)")
_SYSTEM_TYPE = re.compile(r"\.ofType\((DateTime|Date|Time|String|Boolean|Decimal|Integer)\)")
_ROOT = re.compile(r"^(\(*\s*)(?:Resource|DomainResource)\.")


def rewrite(expression: str, resource_type: str | None = None) -> str:
    """The expression as fhirpathpy should evaluate it (see the module docstring)."""
    out = _AS_OPERATOR.sub(r"\1.ofType(\2)", _AS_FUNCTION.sub(".ofType(", expression))
    out = _SYSTEM_TYPE.sub(lambda m: f".ofType({m[1][0].lower()}{m[1][1:]})", out)
    if resource_type:
        out = "|".join(_ROOT.sub(rf"\g<1>{resource_type}.", p) for p in split_union(out))
    return out


def _resolve(inputs: list[Any]) -> list[Any]:
    resource_node = _engine()[1]
    out: list[Any] = []
    for item in inputs:
        reference = item.get("reference") if isinstance(item, dict) else item
        target = reference_type(reference)
        if target is not None:
            out.append(resource_node.create_node({"resourceType": target}, target))
    return out


@cache
def load_fhirpathpy() -> Any:
    """fhirpathpy, with ``matches()`` and ``replaceMatches()`` run by RE2 instead of Python's
    ``re``: a backtracking engine takes exponential time on patterns such as ``^(a+)+$``, and
    the pattern comes from the client (a FHIRPath Patch path, a SearchParameter expression that
    then runs on every write). RE2 runs in time linear in the input, with bounded memory; the
    constructs it lacks (backreferences, lookaround) make the expression fail to evaluate, which
    the callers report as a 4xx. Every use of fhirpathpy goes through here."""
    import fhirpathpy  # heavy, only when an expression runs

    table: dict[str, Any] = _strings().__dict__["invocation_registry"]  # the engine's own dict
    table["matches"] = {**table["matches"], "fn": _matches}
    table["replaceMatches"] = {**table["replaceMatches"], "fn": _replace_matches}
    return fhirpathpy


_MAX_PATTERN = 1000
"""Characters of one FHIRPath regular expression."""


@lru_cache(maxsize=256)
def _regex(pattern: str) -> Any:
    import re2  # google-re2: linear-time matching

    if len(pattern) > _MAX_PATTERN:
        raise ValueError(f"a regular expression of more than {_MAX_PATTERN} characters")
    options = re2.Options()
    options.dot_nl = True  # FHIRPath: "single line" mode
    options.log_errors = False
    options.max_mem = 8 << 20
    return re2.compile(pattern, options)


def _strings() -> Any:
    """fhirpathpy's invocation package (its function table), untyped."""
    import importlib

    return importlib.import_module("fhirpathpy.engine.invocations")


def _single_string(coll: Any) -> str:
    """fhirpathpy's own check that the input is one string (it raises otherwise)."""
    return str(_strings().strings.ensure_string_singleton(coll))


def _matches(ctx: Any, coll: Any, regex: Any) -> Any:
    if not regex or not coll:
        return []
    return _regex(str(regex)).search(_single_string(coll)) is not None


def _replace_matches(ctx: Any, coll: Any, regex: Any, repl: Any) -> Any:
    string = _single_string(coll)
    if isinstance(regex, list) or isinstance(repl, list):
        return []
    return _regex(str(regex)).sub(_GROUP.sub(r"\\\1", str(repl)), string)


_GROUP = re.compile(r"\$(\d+)")  # FHIRPath's $1 is \1 in the replacement


@cache
def _engine() -> tuple[Any, Any, Any, dict[str, Any]]:
    fhirpathpy = load_fhirpathpy()
    from fhirpathpy.engine.nodes import ResourceNode
    from fhirpathpy.models import models

    options = {"userInvocationTable": {"resolve": {"fn": _resolve, "arity": {0: []}}}}
    return fhirpathpy, ResourceNode, models["r4"], options


@cache
def _parsed(expression: str) -> Any:
    fhirpathpy, _, _, _ = _engine()
    return fhirpathpy.parse(expression)


def evaluate(node: Any, expression: str, *, resource: dict[str, Any], base: str | None = None) -> list[Any]:
    """Evaluate ``expression`` on ``node``: the resource, or an element of it whose model path
    is ``base`` (``%resource`` is the resource either way).

    Returns plain JSON values (dicts, strings, numbers; decimals may come back as Decimal).
    """
    fhirpathpy, resource_node, model, options = _engine()
    parsed = _parsed(rewrite(expression, resource.get("resourceType")))
    root = resource_node.create_node(node, base) if base else node
    variables = {"resource": resource, "rootResource": resource}
    result = fhirpathpy.apply_parsed_path(root, parsed, variables, model, options)
    return [item for item in result if item is not None]


def syntax_error(expression: str) -> str | None:
    """Why ``expression`` is not valid FHIRPath (None: it parses). fhirpathpy's own ``parse``
    recovers from syntax errors silently and may read only a prefix (``Patient name`` parses as
    ``Patient``), so this runs its grammar with a listener that keeps the errors and checks that
    the whole text was read."""
    import importlib

    grammar: Any = importlib.import_module("fhirpathpy.parser")  # the ANTLR grammar fhirpathpy ships
    errors: list[str] = []

    class _Collect(grammar.ErrorListener):  # type: ignore[misc]
        def syntaxError(self, recognizer: Any, symbol: Any, line: int, column: int, msg: str, e: Any) -> None:  # noqa: N802
            errors.append(f"column {column + 1}: {msg.split(' expecting ', maxsplit=1)[0][:120]}")

    lexer = grammar.FHIRPathLexer(grammar.InputStream(expression))
    lexer.removeErrorListeners()
    lexer.addErrorListener(_Collect())
    parser = grammar.FHIRPathParser(grammar.CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(_Collect())
    parser.expression()
    token = parser.getCurrentToken()
    if not errors and token.type != grammar.Token.EOF:
        errors.append(f"column {token.column + 1}: unexpected {token.text!r}")
    return errors[0] if errors else None
