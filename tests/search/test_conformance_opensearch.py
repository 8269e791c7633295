"""Every row of the conformance table (``cases.py``) on the OpenSearch backend, with the same
expected ids as on SQLite (``test_conformance.check_case``): the fixture is indexed through
``OpenSearchSearchIndex`` (the real document builder, ``documents.py``) into the fake OpenSearch
(``tests/support/opensearch_fake.py``, which evaluates the query DSL with the index mapping's
semantics), and each row goes through the search service on ``OpenSearchSearchEngine``
(``conftest.opensearch_app``), every page walked by its ``next`` link.

The rows this backend does not support are :data:`tests.search.cases.OPENSEARCH_UNSUPPORTED`, each
with its reason; for those the backend must say so (a strict search answers 400 not-supported
naming the parameter), so a mark cannot outlive the limitation.
"""

from __future__ import annotations

import pytest

from fhirflow.http import Application
from tests.search.cases import CASES, OPENSEARCH_UNSUPPORTED, Case
from tests.search.test_conformance import check_case, send


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_case(opensearch_app: Application, case: Case) -> None:
    if case.id in OPENSEARCH_UNSUPPORTED:
        reply = send(opensearch_app, case, {"prefer": "handling=strict"})
        assert reply.status == 400, reply.body[:500]
        issues = reply.json()["issue"]
        assert any(issue["code"] == "not-supported" for issue in issues), issues
        return
    check_case(opensearch_app, case)


def test_every_unsupported_mark_names_a_row() -> None:
    assert set(OPENSEARCH_UNSUPPORTED) <= {case.id for case in CASES}
