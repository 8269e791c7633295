"""The search conformance table: one row per feature of search.html, with the expected result.

Shared by the backends, with the same expected ids: ``test_conformance.py`` runs every row on
SQLite through the search service; ``test_conformance_opensearch.py`` runs every row on the
OpenSearch backend over the fake OpenSearch (the rows it does not support are
:data:`OPENSEARCH_UNSUPPORTED`, with the reason); ``tests/unit/test_opensearch_compiler.py``
compiles every row for OpenSearch against golden files. A row names the searched type (None:
system search), the query as a client writes it (URL-encoded, FHIR escapes intact), and what
must come back: the matches (``Type/id``; in order when ``ordered``), the included resources,
or the status and the parameter an error names.

A row is sent as ``GET path?query`` or, with ``method="POST"``, as ``POST path/_search`` with the
query as its ``application/x-www-form-urlencoded`` body (http.html#search); a ``shape`` says what
``_summary``/``_elements`` must leave of every match.

The data is ``tests/search/fixtures.py``: the R4 examples, Synthea patients and ``ff-…`` resources
written for this table; each expectation below was read off that data by hand (the element lists
of the shapes off the R4 StructureDefinitions in ``shared/fhir-r4/hl7.fhir.r4.core``).
"""

from __future__ import annotations

from dataclasses import dataclass

ASA = "Patient/c79b748f-a792-4aea-bca5-c7c9c5b188cd"  # Synthea, born 1971-03-03, male
BARNEY = "Patient/5ee05359-57bf-4cee-8e89-91382c07e162"  # Synthea, born 1964-03-18, male
ARDITH = "Patient/0c2a34a4-d948-4917-98b8-f44a77e459d8"  # Synthea, born 2014-11-09, female
FF = "Patient/ff-comma"
ENC_A, ENC_B, ENC_C = "Encounter/ff-enc-a", "Encounter/ff-enc-b", "Encounter/ff-enc-c"
OBS_LT, OBS_UNIT = "Observation/ff-obs-lt", "Observation/ff-obs-unit"
FF_SUBJECT = "subject=Patient/ff-comma&"
LOINC = "http%3A%2F%2Floinc.org"
UCUM = "http%3A%2F%2Funitsofmeasure.org"
FEMALE = (
    "Patient/animal",
    "Patient/genetics-example1",
    "Patient/infant-mom",
    "Patient/infant-twin-1",
    "Patient/mom",
    "Patient/pat4",
    "Patient/proband",
    ARDITH,
)
VITAL_SIGNS = tuple(
    f"Observation/{i}"
    for i in (
        "blood-pressure-cancel",
        "blood-pressure-dar",
        "blood-pressure",
        "bmi",
        "body-height",
        "body-length",
        "body-temperature",
        "head-circumference",
        "heart-rate",
        "respiratory-rate",
        "satO2",
        "vitals-panel",
    )
)
LONG_LIST = tuple(
    f"Patient/{i}"
    for i in (
        "example",
        "pat1",
        "pat2",
        "pat3",
        "pat4",
        "xcda",
        "xds",
        "animal",
        "dicom",
        "ihe-pcd",
        "f001",
        "f201",
        "glossy",
        "proband",
        "genetics-example1",
        "ch-example",
        "newborn",
        "mom",
    )
)
CHALMERS_LEVIN = ("Patient/example", "Patient/glossy", "Patient/xcda")
PATIENT_ALWAYS = frozenset({"id", "meta"})
"""What every shape keeps of a Patient: id and meta (Patient has no 1..1 top-level element)."""
PATIENT_SUMMARY = frozenset(
    {
        # isSummary in StructureDefinition-Patient (deceased[x] as its JSON names)
        *("id", "meta", "implicitRules", "identifier", "active", "name", "telecom", "gender", "birthDate"),
        *("deceasedBoolean", "deceasedDateTime", "address", "managingOrganization", "link"),
    }
)
ENCOUNTER_TEXT = frozenset({"id", "meta", "text", "status", "class"})
"""``_summary=text`` of an Encounter: status and class are its 1..1 top-level elements."""
ENCOUNTER_SUBJECT = ENCOUNTER_TEXT - {"text"} | {"subject"}
"""``_elements=subject`` of the ff encounters: subject, id, meta and the 1..1 status and class."""
EXAMPLE_DATA = frozenset(
    {
        *("id", "meta", "identifier", "active", "name", "telecom", "gender", "birthDate", "_birthDate"),
        *("deceasedBoolean", "address", "contact", "managingOrganization"),
    }
)
"""Patient-example.json's elements but text (and resourceType)."""


@dataclass(frozen=True)
class Shape:
    """What ``_summary``/``_elements`` must leave of every match (search.html#summary, #elements).

    Elements are top-level JSON keys (a choice element by its JSON names: ``deceasedBoolean``)."""

    only: frozenset[str]
    """The elements a match may hold: the asked ones plus those the spec always keeps
    (``resourceType`` aside; a primitive's ``_x`` sibling, its extensions, counts as ``x``)."""
    present: frozenset[str] = frozenset()
    """JSON keys every match must still hold, ``_x`` as written (each is in every match's data)."""
    subsetted: bool = True
    """``meta.tag`` carries SUBSETTED (v3-ObservationValue), so the subset is never written back."""


@dataclass(frozen=True)
class Case:
    id: str
    resource_type: str | None
    query: str
    expected: tuple[str, ...] | None = None
    """The matches (all pages), as ``Type/id``; None when the row checks something else."""
    ordered: bool = False
    included: tuple[str, ...] | None = None
    status: int = 200
    error_param: str | None = None
    """For an error: the parameter the OperationOutcome's expression names."""
    compartment: tuple[str, str] | None = None
    """``/Compartment/id/{type or *}`` instead of ``/{type}``."""
    tenant: str | None = None
    strict: bool = False
    """``Prefer: handling=strict``."""
    total: int | None = None
    no_total: bool = False
    warning: str | None = None
    """A lenient search's outcome entry must mention this parameter."""
    method: str = "GET"
    """``POST``: ``POST path/_search`` with ``query`` as the form body (the next pages are GET links)."""
    shape: Shape | None = None

    def path(self) -> str:
        prefix = f"/tenant/{self.tenant}" if self.tenant else ""
        if self.compartment is not None:
            return f"{prefix}/{self.compartment[0]}/{self.compartment[1]}/{self.resource_type or '*'}"
        return f"{prefix}/{self.resource_type}" if self.resource_type else prefix or "/"

    def target(self) -> str:
        """The URL path the request goes to: ``path()``, or ``path()/_search`` for POST."""
        return self.path().rstrip("/") + "/_search" if self.method == "POST" else self.path()

    def request_line(self) -> str:
        """``GET /Patient?name=x`` or ``POST /Patient/_search`` (the query then is the body)."""
        if self.method == "POST":
            return f"POST {self.target()}"
        return f"GET {self.target()}" + (f"?{self.query}" if self.query else "")


def rows(resource_type: str | None, *items: tuple[str, str, tuple[str, ...]], **common: object) -> list[Case]:
    return [Case(id_, resource_type, query, expected, **common) for id_, query, expected in items]  # type: ignore[arg-type]


def ff_dates(prefix: str, value: str, expected: tuple[str, ...]) -> Case:
    return Case(f"date-period-{prefix}", "Encounter", f"subject=Patient/ff-comma&date={prefix}{value}", expected)


CASES: list[Case] = [
    # -- string (search.html#string) ------------------------------------------------------------
    *rows(
        "Patient",
        ("string-default", "name=peter", ("Patient/example",)),
        ("string-accents", "name=zoe", (FF,)),
        ("string-exact", "name:exact=Peter", ("Patient/example",)),
        ("string-exact-case", "name:exact=peter", ()),
        ("string-contains", "name:contains=alm", ("Patient/example",)),
        ("string-or", "family=chalmers,levin", ("Patient/example", "Patient/glossy", "Patient/xcda")),
        ("string-and", "given=peter&given=james", ("Patient/example",)),
        ("string-escaped-comma", "family=Smith%5C%2C%20Jr", (FF,)),
        ("string-missing", "name:missing=true", ("Patient/infant-fetal", "Patient/newborn", "Patient/proband")),
        ("string-address", "address-city=springfield", (FF,)),
    ),
    # -- token (search.html#token) --------------------------------------------------------------
    *rows(
        "Patient",
        ("token-code", "gender=female", FEMALE),
        ("token-or", "gender=other,unknown", ("Patient/pat2", FF)),
        (
            "token-not",
            "gender:not=male",
            (*FEMALE, "Patient/pat2", FF, "Patient/ihe-pcd"),
        ),
        ("token-missing", "gender:missing=true", ("Patient/ihe-pcd",)),
        (
            "token-system-any-code",
            "identifier=http://hl7.org/fhir/sid/us-ssn%7C",
            ("Patient/genetics-example1", "Patient/mom", ASA, BARNEY, ARDITH),
        ),
        ("token-system-code", "identifier=http://ff.example/mrn%7Cff-001", (FF,)),
        ("token-code-any-system", "identifier=ff-001", (FF,)),
        ("token-no-system", "identifier=%7CAB60001", ("Patient/ihe-pcd",)),
        ("token-no-system-excludes", "identifier=%7Cff-001", ()),
        (
            "token-of-type",
            "identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203%7CMR%7Cff-001",
            (FF,),
        ),
        ("token-boolean-and-string", "active=true&family=levin", ("Patient/glossy", "Patient/xcda")),
    ),
    Case("token-text", "Observation", "code:text=fasting", (OBS_LT, OBS_UNIT)),
    # :text matches a word of the display anywhere, not only its first
    Case("token-text-inner-word", "Observation", FF_SUBJECT + "code:text=glucose", (OBS_LT, OBS_UNIT)),
    # -- token terminology modifiers, from fixtures.terminology(): ff-codes is ff-sugar >
    #    (ff-glucose, ff-fructose); the sugars value set lists ff-glucose (the ff-obs-* code);
    #    the heart value set is an expansion holding LOINC 8867-4 (Observation/heart-rate only)
    Case("token-in", "Observation", "code:in=http://ff.example/vs/sugars", (OBS_LT, OBS_UNIT)),
    Case("token-in-version", "Observation", "code:in=http://ff.example/vs/sugars%7C2", (OBS_LT, OBS_UNIT)),
    Case("token-in-expansion", "Observation", "code:in=ValueSet/ff-heart", ("Observation/heart-rate",)),
    Case("token-not-in", "Observation", "_id=ff-obs-lt,heart-rate&code:not-in=ValueSet/ff-heart", (OBS_LT,)),
    Case("token-below", "Observation", "code:below=http://ff.example/codes%7Cff-sugar", (OBS_LT, OBS_UNIT)),
    Case("token-below-leaf", "Observation", "code:below=http://ff.example/codes%7Cff-fructose", ()),
    Case("token-above", "Observation", "code:above=http://ff.example/codes%7Cff-glucose", (OBS_LT, OBS_UNIT)),
    Case("token-above-root", "Observation", "code:above=http://ff.example/codes%7Cff-sugar", ()),
    Case("token-loinc-total", "Observation", f"code={LOINC}%7C29463-7&_summary=count", total=28),
    # -- date (search.html#date), points: birthDate --------------------------------------------
    *rows(
        "Patient",
        ("date-eq-day", "birthdate=1974-12-25", ("Patient/ch-example", "Patient/example")),
        ("date-eq-year", "birthdate=1973", ("Patient/genetics-example1", "Patient/mom")),
        (
            "date-ne",
            "birthdate=ne1974-12-25&gender=male",
            (
                "Patient/glossy",
                "Patient/xcda",
                "Patient/f001",
                "Patient/xds",
                "Patient/f201",
                BARNEY,
                ASA,
                "Patient/pat3",
                "Patient/infant-twin-2",
                "Patient/newborn",
            ),
        ),
        ("date-gt", "birthdate=gt2017-05-15", ("Patient/newborn",)),
        ("date-lt", "birthdate=lt1940", ("Patient/glossy", "Patient/xcda")),
        ("date-ge", "birthdate=ge2014", (ARDITH, "Patient/infant-twin-1", "Patient/infant-twin-2", "Patient/newborn")),
        ("date-le", "birthdate=le1944-11-17", ("Patient/glossy", "Patient/xcda", "Patient/f001")),
        (
            "date-sa",
            "birthdate=sa2010-03-23",
            (ARDITH, "Patient/infant-twin-1", "Patient/infant-twin-2", "Patient/newborn"),
        ),
        ("date-eb", "birthdate=eb1944-11-17", ("Patient/glossy", "Patient/xcda")),
        ("date-ap", "birthdate=ap1990-05-15", (FF,)),
        ("date-month-precision-value", "birthdate=1990-05", (FF,)),
        ("date-day-inside-month-value", "birthdate=1990-05-17", ()),
        (
            "date-missing",
            "birthdate:missing=true",
            ("Patient/dicom", "Patient/ihe-pcd", "Patient/infant-fetal", "Patient/pat1", "Patient/pat2"),
        ),
    ),
    # -- date on Periods (Encounter.period): [2020-01-01T10:00Z, 2020-01-03T12:00Z], [2021-05-10, open),
    #    [2019-07-01, 2019-07-01]
    ff_dates("eq", "2020-01", (ENC_A,)),
    Case("date-period-eq-day-inside", "Encounter", "subject=Patient/ff-comma&date=2020-01-02", ()),
    ff_dates("ne", "2020-01", (ENC_B, ENC_C)),
    ff_dates("gt", "2020-01-02", (ENC_A, ENC_B)),
    ff_dates("lt", "2020-01-02", (ENC_A, ENC_C)),
    ff_dates("ge", "2020-01-02", (ENC_A, ENC_B)),
    ff_dates("le", "2020-01-02", (ENC_A, ENC_C)),
    ff_dates("sa", "2020-01-02", (ENC_B,)),
    ff_dates("eb", "2020-01-02", (ENC_C,)),
    ff_dates("ap", "2020-01-02", (ENC_A,)),
    # ap on a day that holds now: a margin of one day at least (fhirflow/query/prefixes.py)
    Case("date-ap-near-now", "Slot", "start=ap2024-06-10", ("Slot/ff-slot",)),
    Case("date-period-open-end", "Encounter", "subject=Patient/ff-comma&date=gt2099", (ENC_B,)),
    Case("date-time-with-offset", "Encounter", "subject=Patient/ff-comma&date=lt2020-01-01T11:00:00%2B02:00", (ENC_C,)),
    # -- number (search.html#number): RiskAssessment.prediction.probability -------------------
    *rows(
        "RiskAssessment",
        ("number-eq", "probability=0.02", ("RiskAssessment/cardiac",)),
        ("number-precision", "probability=0.0004", ("RiskAssessment/genetic", "RiskAssessment/riskexample")),
        ("number-ne", "probability=ne0.02", ("RiskAssessment/genetic", "RiskAssessment/riskexample")),
        ("number-gt", "probability=gt0.001", ("RiskAssessment/cardiac", "RiskAssessment/genetic")),
        ("number-lt", "probability=lt0.0002", ("RiskAssessment/genetic",)),
        ("number-ge", "probability=ge0.02", ("RiskAssessment/cardiac",)),
        ("number-le", "probability=le0.000368", ("RiskAssessment/genetic", "RiskAssessment/riskexample")),
        ("number-sa", "probability=sa0.001663", ("RiskAssessment/cardiac",)),
        ("number-eb", "probability=eb0.0002", ("RiskAssessment/genetic",)),
        ("number-ap", "probability=ap0.02", ("RiskAssessment/cardiac",)),
        # ap is 10% of the value: 0.000168 is 16% below 0.0002 (within the precision's ±0.00005)
        ("number-ap-ten-percent", "probability=ap0.0002", ()),
        # sa/eb compare with the exact value, not its precision range: 0.001663 starts after 0.00166
        ("number-sa-inside-precision", "probability=sa0.00166", ("RiskAssessment/cardiac", "RiskAssessment/genetic")),
        (
            "number-missing",
            "probability:missing=true",
            ("RiskAssessment/breastcancer-risk", "RiskAssessment/population", "RiskAssessment/prognosis"),
        ),
    ),
    Case(
        "number-integer",
        "MolecularSequence",
        "variant-start=13116",
        (
            "MolecularSequence/fda-example",
            "MolecularSequence/fda-vcf-comparison",
            "MolecularSequence/fda-vcfeval-comparison",
        ),
    ),
    # -- quantity (search.html#quantity): <5 mmol/L (UCUM) and 5.4 "mmol/l" (unit only) ------
    Case("quantity-value", "Observation", FF_SUBJECT + "value-quantity=5.4", (OBS_UNIT,)),
    Case("quantity-lt", "Observation", FF_SUBJECT + "value-quantity=lt5.4", (OBS_LT,)),
    Case(
        "quantity-gt-comparator",
        "Observation",
        FF_SUBJECT + "value-quantity=gt4",
        (OBS_LT, OBS_UNIT),
    ),
    Case(
        "quantity-code-or-unit",
        "Observation",
        FF_SUBJECT + "value-quantity=5.4%7C%7Cmmol/l",
        (OBS_UNIT,),
    ),
    Case(
        "quantity-system-code",
        "Observation",
        FF_SUBJECT + f"value-quantity=le5%7C{UCUM}%7Cmmol/L",
        (OBS_LT,),
    ),
    Case("quantity-ap", "Observation", FF_SUBJECT + "value-quantity=ap5", (OBS_LT, OBS_UNIT)),
    Case("quantity-ne", "Observation", FF_SUBJECT + "value-quantity=ne5.4", (OBS_LT,)),
    Case("quantity-gt", "Observation", FF_SUBJECT + "value-quantity=gt5", (OBS_UNIT,)),
    Case("quantity-ge", "Observation", FF_SUBJECT + "value-quantity=ge5.4", (OBS_UNIT,)),
    Case("quantity-le", "Observation", FF_SUBJECT + "value-quantity=le5", (OBS_LT,)),
    Case("quantity-sa", "Observation", FF_SUBJECT + "value-quantity=sa5", (OBS_UNIT,)),
    Case("quantity-eb", "Observation", FF_SUBJECT + "value-quantity=eb5.4", (OBS_LT,)),
    Case("quantity-missing", "Observation", FF_SUBJECT + "value-quantity:missing=false", (OBS_LT, OBS_UNIT)),
    Case("quantity-ucum-lbs", "Observation", f"value-quantity=185%7C{UCUM}%7C%5Blb_av%5D", ("Observation/example",)),
    # -- reference (search.html#reference) -----------------------------------------------------
    *rows(
        "Encounter",
        ("reference-type-id", "subject=Patient/ff-comma", (ENC_A, ENC_B, ENC_C)),
        ("reference-id", "subject=ff-comma", (ENC_A, ENC_B, ENC_C)),
        ("reference-type-modifier", "subject:Patient=ff-comma", (ENC_A, ENC_B, ENC_C)),
        ("reference-absolute-local", "subject=http://fhir.test/Patient/ff-comma", (ENC_A, ENC_B, ENC_C)),
        ("reference-absolute-foreign", "subject=http://elsewhere.example/Patient/ff-comma", ()),
    ),
    Case(
        "reference-identifier",
        "Claim",
        "patient:identifier=http://www.jurisdiction.com/nationalId%7C123AB345",
        ("Claim/100154",),
    ),
    Case(
        "reference-canonical-relative",
        "QuestionnaireResponse",
        "questionnaire=Questionnaire/gcs",
        ("QuestionnaireResponse/gcs",),
    ),
    Case("reference-missing-false", "Observation", FF_SUBJECT + "encounter:missing=false", (OBS_LT,)),
    Case("reference-missing-true", "Observation", FF_SUBJECT + "encounter:missing=true", (OBS_UNIT,)),
    # -- uri (search.html#uri) -------------------------------------------------------------------
    *rows(
        "Questionnaire",
        ("uri-exact", "url=http://hl7.org/fhir/Questionnaire/3141", ("Questionnaire/3141",)),
        (
            "uri-below",
            "url:below=http://hl7.org/fhir/Questionnaire",
            ("Questionnaire/3141", "Questionnaire/bb", "Questionnaire/f201", "Questionnaire/gcs"),
        ),
        ("uri-above", "url:above=http://hl7.org/fhir/Questionnaire/3141/_history/2", ("Questionnaire/3141",)),
        # :above is by path: .../3141 is not above .../31415
        ("uri-above-not-a-path-prefix", "url:above=http://hl7.org/fhir/Questionnaire/31415", ()),
        ("uri-missing", "url:missing=true", ("Questionnaire/phq-9-questionnaire", "Questionnaire/qs1")),
    ),
    # -- composite (search.html#composite) -----------------------------------------------------
    Case("composite", "Observation", f"code-value-quantity={LOINC}%7C29463-7$gt180", ("Observation/example",)),
    Case(
        "composite-component",
        "Observation",
        f"component-code-value-quantity={LOINC}%7C8480-6$lt106.2",
        ("Observation/81cbc22b-8966-4e3a-b3ef-8fb277592348", "Observation/8b65f13a-5b59-40f0-aaf2-4ebdd4f1ce11"),
    ),
    # systolic code with a diastolic-sized value: a match would mean components were mixed up
    Case("composite-pairs-components", "Observation", f"component-code-value-quantity={LOINC}%7C8480-6$lt90", ()),
    Case(
        "composite-or",
        "Observation",
        "code-value-quantity=http://ff.example/codes%7Cff-glucose$5.4,http://ff.example/codes%7Cff-glucose$lt4.9",
        (OBS_LT, OBS_UNIT),
    ),
    # -- parameters for all resources (search.html#all) ---------------------------------------
    Case("common-id", "Patient", "_id=example,f001", ("Patient/example", "Patient/f001")),
    Case("common-lastupdated", "Patient", "_lastUpdated=gt2024-01-01T05:00:00Z", (FF,)),
    Case(
        "common-lastupdated-range",
        "Patient",
        "_lastUpdated=ge2024-01-01T02:46:40Z&_lastUpdated=lt2024-01-01T03:00:00Z",
        (ASA, BARNEY, ARDITH),
    ),
    Case("common-tag", "Patient", "_tag=http://ff.example/tags%7Cff", (FF,)),
    Case(
        "common-tag-synthea", "Patient", "_tag=https://smarthealthit.org/tags%7Csynthea-5-2019", (ASA, BARNEY, ARDITH)
    ),
    Case("common-profile", "Observation", "_profile=http://hl7.org/fhir/StructureDefinition/vitalsigns", VITAL_SIGNS),
    Case(
        "common-security",
        "Condition",
        "_security=http://terminology.hl7.org/CodeSystem/v3-ActCode%7CTBOO",
        ("Condition/f202",),
    ),
    Case("common-source", "Patient", "_source=http://ff.example/feed%231", (FF,)),
    Case("common-text", "Encounter", "_text=pneumonia", ("Encounter/f203",)),
    Case("common-content", "Patient", "_content=springfield", (FF,)),
    Case("common-list", "Patient", "_list=long", LONG_LIST),
    Case("common-list-other-type", "Condition", "_list=example", ("Condition/example", "Condition/example2")),
    Case("special-near", "Location", "near=42.2547%7C-83.6946%7C1%7Ckm", ("Location/1",)),
    # -- chains (search.html#chaining) and reverse chains (search.html#has) -------------------
    Case("chain", "Encounter", "subject:Patient.name=zoe", (ENC_A, ENC_B, ENC_C)),
    Case("chain-inferred-type", "Encounter", "patient.name=zoe", (ENC_A, ENC_B, ENC_C)),
    Case(
        "chain-two-levels",
        "Observation",
        "subject:Patient.organization.name=burgers",
        tuple(
            f"Observation/{i}"
            for i in ("ekg", "f001", "f002", "f003", "f004", "f005", "unsat", "ff-obs-lt", "ff-obs-unit")
        ),
    ),
    Case("chain-three-levels", "Encounter", "subject:Patient.organization.partof.name=burgers", (ENC_A, ENC_B, ENC_C)),
    Case(
        "chain-and-filter",
        "Observation",
        f"subject:Patient.name=peter&code={LOINC}%7C29463-7",
        ("Observation/example",),
    ),
    Case(
        "has", "Patient", f"_has:Observation:patient:code={LOINC}%7C29463-7", ("Patient/example", ASA, BARNEY, ARDITH)
    ),
    Case(
        "has-nested",
        "Patient",
        "_has:Encounter:patient:_has:Observation:encounter:code=http://ff.example/codes%7Cff-glucose",
        (FF,),
    ),
    Case("has-other-type", "Organization", "_has:Patient:organization:name=zoe", ("Organization/f003",)),
    # -- _include / _revinclude (search.html#include) ------------------------------------------
    Case("include", "Encounter", "_id=ff-enc-a&_include=Encounter:subject", (ENC_A,), included=(FF,)),
    Case("include-wildcard", "Encounter", "_id=ff-enc-a&_include=Encounter:*", (ENC_A,), included=(FF,)),
    Case(
        "include-target-type",
        "Observation",
        "_id=ff-obs-lt&_include=Observation:subject:Patient",
        (OBS_LT,),
        included=(FF,),
    ),
    Case(
        "include-iterate",
        "Observation",
        "_id=ff-obs-lt&_include=Observation:encounter&_include:iterate=Encounter:subject",
        (OBS_LT,),
        included=(ENC_A, FF),
    ),
    Case(
        "include-iterate-same-type",
        "Patient",
        "_id=ff-comma&_include=Patient:organization&_include:iterate=Organization:partof",
        (FF,),
        included=("Organization/f003", "Organization/f001"),
    ),
    Case(
        "include-canonical",
        "QuestionnaireResponse",
        "_id=gcs&_include=QuestionnaireResponse:questionnaire",
        ("QuestionnaireResponse/gcs",),
        included=("Questionnaire/gcs",),
    ),
    Case("revinclude", "Patient", "_id=ff-comma&_revinclude=Encounter:subject", (FF,), included=(ENC_A, ENC_B, ENC_C)),
    Case(
        "revinclude-iterate",
        "Patient",
        "_id=ff-comma&_revinclude=Encounter:subject&_revinclude:iterate=Observation:encounter",
        (FF,),
        included=(ENC_A, ENC_B, ENC_C, OBS_LT),
    ),
    Case(
        "revinclude-wildcard",
        "Patient",
        "_id=ff-comma&_revinclude=*",
        (FF,),
        included=(ENC_A, ENC_B, ENC_C, OBS_LT, OBS_UNIT, "List/ff-list"),
    ),
    # -- _sort (search.html#sort): in order ----------------------------------------------------
    Case(
        "sort-several",
        "Patient",
        "family=solo,everywoman&_sort=-birthdate,given",
        (
            "Patient/infant-twin-2",
            "Patient/infant-twin-1",
            "Patient/infant-mom",
            "Patient/genetics-example1",
            "Patient/mom",
        ),
        ordered=True,
    ),
    Case(
        "sort-number-desc-missing-last",
        "RiskAssessment",
        "_sort=-probability",
        tuple(
            f"RiskAssessment/{i}"
            for i in ("cardiac", "genetic", "riskexample", "breastcancer-risk", "population", "prognosis")
        ),
        ordered=True,
    ),
    Case(
        "sort-number-asc",
        "RiskAssessment",
        "_sort=probability",
        tuple(
            f"RiskAssessment/{i}"
            for i in ("genetic", "riskexample", "cardiac", "breastcancer-risk", "population", "prognosis")
        ),
        ordered=True,
    ),
    Case(
        "sort-id-desc",
        "Patient",
        "family=solo&_sort=-_id",
        ("Patient/infant-twin-2", "Patient/infant-twin-1", "Patient/infant-mom"),
        ordered=True,
    ),
    Case(
        "sort-period-asc-uses-start",
        "Encounter",
        "subject=Patient/ff-comma&_sort=date",
        (ENC_C, ENC_A, ENC_B),
        ordered=True,
    ),
    Case(
        "sort-period-desc-uses-end",
        "Encounter",
        "subject=Patient/ff-comma&_sort=-date",
        (ENC_B, ENC_A, ENC_C),
        ordered=True,
    ),
    Case(
        "sort-lastupdated-paged",
        "Patient",
        "_lastUpdated=ge2024-01-01T02:46:40Z&_sort=-_lastUpdated&_count=2",
        (FF, ARDITH, BARNEY, ASA),
        ordered=True,
    ),
    # -- _total, _summary=count, compartments, system search, tenants -------------------------
    Case("total-accurate", "Patient", "gender=female&_total=accurate", FEMALE, total=8),
    Case("total-estimate", "Patient", "gender=female&_total=estimate", FEMALE, total=8),
    Case("total-none", "Patient", "gender=female&_total=none", FEMALE, no_total=True),
    Case("summary-count", "Patient", "gender=female&_summary=count", (), total=8),
    Case("count-zero", "Patient", "gender=female&_count=0", (), total=8),
    Case("compartment", "Encounter", "", (ENC_A, ENC_B, ENC_C), compartment=("Patient", "ff-comma")),
    Case("compartment-with-criteria", "Encounter", "date=eq2020-01", (ENC_A,), compartment=("Patient", "ff-comma")),
    Case(
        "compartment-all-types",
        None,
        "",
        (FF, ENC_A, ENC_B, ENC_C, OBS_LT, OBS_UNIT),
        compartment=("Patient", "ff-comma"),
    ),
    Case("system-types", None, "_type=Patient,Practitioner&_id=example", ("Patient/example", "Practitioner/example")),
    Case("system-all-types", None, "_tag=http://ff.example/tags%7Cff", (FF, OBS_LT)),
    Case("tenant-other", "Patient", "name=otherton", ("Patient/example",), tenant="other"),
    Case("tenant-default-does-not-see-other", "Patient", "name=otherton", ()),
    Case("tenant-chain", "Observation", "subject:Patient.name=olga", ("Observation/example",), tenant="other"),
    # -- Prefer: handling (search.html#errors) -------------------------------------------------
    Case("lenient-unknown-parameter", "Patient", "name=peter&foo=bar", ("Patient/example",), warning="foo"),
    Case(
        "lenient-terminology-modifier",
        "Patient",
        "gender:in=http://x.example/vs&name=peter",
        ("Patient/example",),
        warning="gender:in",
    ),
    Case("lenient-contained", "Patient", "name=peter&_contained=true", ("Patient/example",), warning="_contained"),
    Case("strict-unknown-parameter", "Patient", "foo=bar", status=400, error_param="foo", strict=True),
    Case("strict-unknown-modifier", "Patient", "name:foo=x", status=400, error_param="name:foo", strict=True),
    Case(
        "strict-terminology-modifier",
        "Patient",
        "gender:in=http://x.example/vs",
        status=400,
        error_param="gender:in",
        strict=True,
    ),
    Case("strict-contained", "Patient", "_contained=true", status=400, error_param="_contained", strict=True),
    # -- bad input: 400 naming the parameter, whatever the handling ----------------------------
    Case("error-malformed-date", "Patient", "birthdate=1974-13-01", status=400, error_param="birthdate"),
    Case("error-unknown-prefix", "Patient", "birthdate=xx1974", status=400, error_param="birthdate"),
    Case("error-chain-through-token", "Patient", "gender.name=x", status=400, error_param="gender.name"),
    Case("error-ambiguous-chain", "Observation", "subject.name=peter", status=400, error_param="subject.name"),
    Case("error-bad-number", "RiskAssessment", "probability=abc", status=400, error_param="probability"),
    Case("error-bad-count", "Patient", "_count=many", status=400, error_param="_count"),
    # --- result shaping and POST (added by the audit)
    # _elements (search.html#elements): the asked elements, plus id, meta and the mandatory ones.
    # Every female Patient has gender and a birthDate; Patient has no mandatory element.
    Case(
        "elements",
        "Patient",
        "gender=female&_elements=birthDate,gender",
        FEMALE,
        shape=Shape(PATIENT_ALWAYS | {"birthDate", "gender"}, present=PATIENT_ALWAYS | {"birthDate", "gender"}),
    ),
    # Encounter.status and .class are 1..1: kept unasked; the ff encounters' period is dropped.
    Case(
        "elements-mandatory",
        "Encounter",
        "subject=Patient/ff-comma&_elements=subject",
        (ENC_A, ENC_B, ENC_C),
        shape=Shape(ENCOUNTER_SUBJECT, present=ENCOUNTER_SUBJECT),
    ),
    # _summary=true: Patient's isSummary elements; the three drop text, contact (example),
    # extension and generalPractitioner (glossy) and keep what all three have of the summary.
    Case(
        "summary-true",
        "Patient",
        "family=chalmers,levin&_summary=true",
        CHALMERS_LEVIN,
        shape=Shape(
            PATIENT_SUMMARY,
            present=PATIENT_ALWAYS | {"identifier", "active", "name", "gender", "birthDate", "managingOrganization"},
        ),
    ),
    # _summary=text: text, id, meta and the top-level mandatory elements (none for Patient).
    Case(
        "summary-text",
        "Patient",
        "family=chalmers,levin&_summary=text",
        CHALMERS_LEVIN,
        shape=Shape(PATIENT_ALWAYS | {"text"}, present=PATIENT_ALWAYS | {"text"}),
    ),
    # ... with Encounter's mandatory status and class; f203 has a narrative, ff-enc-a none.
    Case(
        "summary-text-mandatory",
        "Encounter",
        "_id=f203,ff-enc-a&_summary=text",
        ("Encounter/f203", ENC_A),
        shape=Shape(ENCOUNTER_TEXT, present=ENCOUNTER_TEXT - {"text"}),
    ),
    # _summary=data: everything but text; Patient/example keeps its non-summary contact and the
    # birthTime extension of its birthDate (``_birthDate``).
    Case(
        "summary-data",
        "Patient",
        "name=peter&_summary=data",
        ("Patient/example",),
        shape=Shape(EXAMPLE_DATA, present=EXAMPLE_DATA),
    ),
    # POST [base]/.../_search with the parameters as a form (http.html#search): same answers as GET
    Case("post-type", "Patient", "gender=female&_count=3", FEMALE, total=8, method="POST"),
    Case(
        "post-system",
        None,
        "_type=Patient,Practitioner&_id=example",
        ("Patient/example", "Practitioner/example"),
        method="POST",
    ),
    Case(
        "post-compartment",
        "Encounter",
        "date=eq2020-01",
        (ENC_A,),
        compartment=("Patient", "ff-comma"),
        method="POST",
    ),
    Case(
        "post-compartment-all-types",
        None,
        "_tag=http://ff.example/tags%7Cff",
        (FF, OBS_LT),
        compartment=("Patient", "ff-comma"),
        method="POST",
    ),
    Case(
        "post-elements",
        "Encounter",
        "subject=Patient/ff-comma&_elements=subject",
        (ENC_A, ENC_B, ENC_C),
        method="POST",
        shape=Shape(ENCOUNTER_SUBJECT, present=ENCOUNTER_SUBJECT),
    ),
    Case(
        "post-strict-unknown-parameter", "Patient", "foo=bar", status=400, error_param="foo", strict=True, method="POST"
    ),
]


OPENSEARCH_UNSUPPORTED: dict[str, str] = {
    # row id → why the OpenSearch backend refuses it (test_conformance_opensearch.py checks that it
    # does). Empty: every row runs on both backends (_list was the last; it is a lookup now).
}
