"""One error hierarchy for the whole server, mapped to an OperationOutcome in one place.

Every failure a client can cause is a :class:`FhirError` carrying the HTTP status, the
OperationOutcome ``issue.code`` (http://hl7.org/fhir/R4/valueset-issue-type.html), a
diagnostic text and, where one applies, the FHIRPath expression of the offending element.
Handlers never build OperationOutcomes themselves; :func:`outcome_for` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["fatal", "error", "warning", "information"]


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue."""

    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()
    severity: Severity = "error"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class FhirError(Exception):
    """Base of every error that becomes an OperationOutcome response."""

    status: int = 500
    code: str = "exception"

    def __init__(
        self,
        diagnostics: str,
        *,
        expression: str | tuple[str, ...] | None = None,
        issues: list[Issue] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        if isinstance(expression, str):
            expression = (expression,)
        self.issues: list[Issue] = issues or [Issue(self.code, diagnostics, expression or ())]
        self.headers: dict[str, str] = headers or {}


class BadRequest(FhirError):
    status, code = 400, "invalid"


class OperationNotSupported(FhirError):
    """``$name`` that this server does not implement at that level (operations.html): 400 with
    issue code ``not-supported`` naming the operation, not a 404 about a resource type or id."""

    status, code = 400, "not-supported"


class InvalidResource(FhirError):
    """The resource content fails validation (HTTP 400, or 422 where the spec asks for it)."""

    status, code = 400, "invalid"


class UnprocessableEntity(FhirError):
    status, code = 422, "processing"


class Unauthorized(FhirError):
    status, code = 401, "login"


class Forbidden(FhirError):
    status, code = 403, "forbidden"


class NotFound(FhirError):
    status, code = 404, "not-found"


class MethodNotAllowed(FhirError):
    status, code = 405, "not-supported"


class NotAcceptable(FhirError):
    status, code = 406, "not-supported"


class Conflict(FhirError):
    status, code = 409, "conflict"


class Gone(FhirError):
    status, code = 410, "deleted"


class PreconditionFailed(FhirError):
    status, code = 412, "conflict"


class MultipleMatches(PreconditionFailed):
    """A conditional interaction whose criteria select several resources (http.html#cond-update: 412).
    Issue code ``multiple-matches`` (valueset-issue-type.html: "multiple matching records were found when
    the operation required only one match"): a client that reads only the OperationOutcome, as
    @medplum/core's errors do, can tell it from a version conflict."""

    code = "multiple-matches"


class PayloadTooLarge(FhirError):
    status, code = 413, "too-costly"


class UnsupportedMediaType(FhirError):
    status, code = 415, "not-supported"


class NotModified(FhirError):
    """Not an error for the client: 304 on a conditional read. Carries headers, no body."""

    status, code = 304, "informational"


class TooManyRequests(FhirError):
    status, code = 429, "throttled"


class ServiceUnavailable(FhirError):
    """A backend is throttling or unreachable; the client may retry (Retry-After)."""

    status, code = 503, "transient"


class NotImplementedFhir(FhirError):
    status, code = 501, "not-supported"


@dataclass(slots=True)
class Outcome:
    """An OperationOutcome under construction (also used for informational outcomes)."""

    issues: list[Issue] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in self.issues]}


def outcome_for(error: FhirError) -> dict[str, Any]:
    """The OperationOutcome resource for an error: the single place errors become FHIR."""
    return Outcome(list(error.issues)).to_json()


def internal_error_outcome() -> dict[str, Any]:
    """What a client sees for an unexpected failure: nothing about its cause."""
    return Outcome([Issue("exception", "An internal error occurred; it has been logged.")]).to_json()


def information(diagnostics: str, code: str = "informational") -> dict[str, Any]:
    return Outcome([Issue(code, diagnostics, severity="information")]).to_json()
