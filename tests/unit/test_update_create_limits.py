"""Update-as-create (http.html#upsert) for tokens confined to part of a type (issue 14).

For such a token an id can be unused, or held by a resource hidden from it. Had the unused one
been created while the hidden one is refused, a PUT would tell them apart, an existence oracle.
By default update-as-create is open only to tokens that may know every resource of the type, and a
confined token gets the same 405 for both; ``update_create_limited`` opens it to every token, and
then the difference is there (documented in the README).
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import pytest

from fhirflow.runtime import build_dependencies
from tests.unit.test_authz_kit import InProcessClient, TestIssuer, auth_settings

ISSUER = TestIssuer()


def observation(id_: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": id_,
        "status": "final",
        "code": {"text": "potassium"},
        "subject": {"reference": f"Patient/{patient}"},
    }


def client(data_dir: Path, **settings: Any) -> InProcessClient:
    return InProcessClient(build_dependencies(dataclasses.replace(auth_settings(data_dir, ISSUER), **settings)))


def seeded(data_dir: Path, **settings: Any) -> tuple[InProcessClient, str]:
    """A server holding another patient's Observation (its id returned)."""
    server = client(data_dir, **settings)
    theirs = f"theirs-{uuid.uuid4().hex[:8]}"
    admin = ISSUER.token("system/*.cruds")
    assert server.request("PUT", f"/Observation/{theirs}", token=admin, body=observation(theirs, "them")).status == 201
    return server, theirs


def blanked(body: Any, id_: str) -> Any:
    return [{k: str(v).replace(id_, "<id>") for k, v in issue.items()} for issue in body["issue"]]


def test_a_confined_token_gets_one_answer_for_unused_and_hidden_ids(tmp_path: Path) -> None:
    server, theirs = seeded(tmp_path)
    token = ISSUER.token("patient/*.cruds", patient="me")
    unused = f"mine-{uuid.uuid4().hex[:8]}"

    hidden = server.request("PUT", f"/Observation/{theirs}", token=token, body=observation(theirs, "me"))
    fresh = server.request("PUT", f"/Observation/{unused}", token=token, body=observation(unused, "me"))

    assert (hidden.status, fresh.status) == (405, 405)
    assert blanked(hidden.body, theirs) == blanked(fresh.body, unused)
    assert server.request("GET", f"/Observation/{unused}", token=ISSUER.token("system/*.rs")).status == 404
    # A token that may see every Observation still chooses ids.
    system = ISSUER.token("system/Observation.cruds")
    assert server.request("PUT", f"/Observation/{unused}", token=system, body=observation(unused, "me")).status == 201


def test_a_patients_token_may_still_create_its_own_patient_record_with_its_id(tmp_path: Path) -> None:
    """Patient/me is in the compartment of me whatever it holds: no hidden resource can have that id."""
    server, _ = seeded(tmp_path)
    token = ISSUER.token("patient/*.cruds", patient="me")
    me = {"resourceType": "Patient", "id": "me"}
    assert server.request("PUT", "/Patient/me", token=token, body=me).status == 201
    other = {"resourceType": "Patient", "id": "other"}
    assert server.request("PUT", "/Patient/other", token=token, body=other).status == 403  # outside, by its body


@pytest.mark.parametrize("scopes", ["user/*.cruds", "patient/Observation.cruds?status=final"])
def test_user_and_granular_tokens_are_confined_too(tmp_path: Path, scopes: str) -> None:
    server, _ = seeded(tmp_path)
    token = ISSUER.token(scopes, patient="me", fhirUser="Patient/me")
    unused = f"mine-{uuid.uuid4().hex[:8]}"
    assert server.request("PUT", f"/Observation/{unused}", token=token, body=observation(unused, "me")).status == 405


def test_update_create_limited_opens_it_to_confined_tokens_and_the_difference_shows(tmp_path: Path) -> None:
    server, theirs = seeded(tmp_path, update_create_limited=True)
    token = ISSUER.token("patient/*.cruds", patient="me")
    unused = f"mine-{uuid.uuid4().hex[:8]}"

    assert server.request("PUT", f"/Observation/{unused}", token=token, body=observation(unused, "me")).status == 201
    assert server.request("PUT", f"/Observation/{theirs}", token=token, body=observation(theirs, "me")).status == 404
