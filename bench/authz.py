"""Authorization overhead per request, in-process: ``authenticate`` plus the policy's checks.

The typical request is a read of an Observation with a patient-context SMART token
(``patient/*.rs``): the bearer token is validated (or found in the principal cache), the type is
authorized, and the stored resource's compartments are checked before it is returned. Cases:

- the same token again (what a client session does): principal cache hit, then the policy;
- a token never seen before, with the JWKS already cached: signature verification (RS256 and
  ES256), claim checks and scope parsing, then the policy;
- a ``system/*.rs`` token (no compartment check) and a history page of 50 versions.

Keys are pinned in the configuration (a cached JWKS: no fetch during the run); tokens are minted
before timing starts. Each sample is one request, timed with ``perf_counter_ns``.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.loadgen import percentile
from bench.report import Row, at_most

TARGET_MS = 0.5


def _observation(patient: str, id_: str) -> dict[str, Any]:
    """About the size and shape of a Synthea Observation."""
    return {
        "resourceType": "Observation",
        "id": id_,
        "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:00:00.000Z"},
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                        "display": "vital-signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}],
            "text": "Heart rate",
        },
        "subject": {"reference": f"Patient/{patient}"},
        "encounter": {"reference": f"Encounter/{uuid.uuid4()}"},
        "effectiveDateTime": "2024-05-01T09:55:00+00:00",
        "issued": "2024-05-01T09:55:00.000+00:00",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }


class _Setup:
    def __init__(self) -> None:
        from joserfc.jwk import ECKey, RSAKey

        from fhirflow.authz.authenticator import BearerAuthenticator
        from fhirflow.authz.config import AuthConfig, IssuerConfig
        from fhirflow.authz.policy import SmartPolicy
        from fhirflow.ports import ResourceVersion

        self.rsa = RSAKey.generate_key(2048, parameters={"kid": "rsa"})
        self.ec = ECKey.generate_key("P-256", parameters={"kid": "ec"})
        jwks = {"keys": [k.as_dict(private=False) for k in (self.rsa, self.ec)]}
        issuer = IssuerConfig(issuer="https://idp.bench/", audience=("https://fhir.bench",), static_jwks=jwks)
        config = AuthConfig(mode="smart", issuers=(issuer,))
        self.authenticator = BearerAuthenticator(config)
        self.policy = SmartPolicy(config)
        body = json.dumps(_observation("p1", "o1")).encode()
        self.version = ResourceVersion("default", "Observation", "o1", 1, 0, False, "PUT", body)
        self.history = [
            ResourceVersion(
                "default", "Observation", f"o{n}", 1, n, False, "PUT", json.dumps(_observation("p1", f"o{n}")).encode()
            )
            for n in range(50)
        ]

    def token(self, scope: str, *, es256: bool = False, **claims: Any) -> str:
        from joserfc import jwt

        key: Any = self.ec if es256 else self.rsa
        alg = "ES256" if es256 else "RS256"
        now = int(time.time())
        body = {
            "iss": "https://idp.bench/",
            "aud": "https://fhir.bench",
            "sub": "u",
            "client_id": "c",
            "scope": scope,
            "iat": now,
            "exp": now + 3600,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode({"alg": alg, "kid": key.kid, "typ": "at+jwt"}, body, key, algorithms=[alg])

    def request(self, token: str, *, path: str = "/Observation/o1", route: str = "/{type}/{id}") -> Any:
        from fhirflow.model import FhirRequest

        params = dict(zip(("type", "id"), path.strip("/").split("/"), strict=False))
        return FhirRequest(
            method="GET",
            path=path,
            route=route,
            path_params=params,
            headers={"authorization": f"Bearer {token}"},
            base_url="https://fhir.bench",
        )

    def read(self, request: Any) -> None:
        request.principal = self.authenticator.authenticate(request)
        self.policy.authorize(request, "read", "Observation")
        self.policy.check_read(request, self.version)

    def history_page(self, request: Any) -> None:
        request.principal = self.authenticator.authenticate(request)
        self.policy.authorize(request, "history-type", "Observation")
        visible = [v for v in self.history if self.policy.visible(request, v)]
        assert len(visible) == 50


def _time(samples: int, prepare: Callable[[int], Any], run: Callable[[Any], None]) -> list[float]:
    out: list[float] = []
    for n in range(samples):
        argument = prepare(n)
        started = time.perf_counter_ns()
        run(argument)
        out.append((time.perf_counter_ns() - started) / 1e6)
    return out


def _row(case: str, values: list[float], *, target: bool, note: str = "") -> Row:
    median = statistics.median(values)
    return Row(
        "authz",
        case,
        median_ms=median,
        p99_ms=percentile(values, 99),
        samples=len(values),
        target=at_most(median, TARGET_MS, "ms median") if target else None,
        note=note,
    )


def run(*, quick: bool) -> list[Row]:
    setup = _Setup()
    repeats = 2_000 if quick else 20_000
    fresh = 300 if quick else 2_000
    patient_token = setup.token("patient/*.rs", patient="p1")
    setup.read(setup.request(patient_token))  # warm: scopes parsed, registry and joserfc loaded
    rows = [
        _row(
            "read, patient/*.rs, same token again",
            _time(repeats, lambda _: setup.request(patient_token), setup.read),
            target=True,
            note="principal cache hit + scope check + compartment check",
        )
    ]
    rs_tokens = [setup.token("patient/*.rs", patient="p1") for _ in range(fresh)]
    rows.append(
        _row(
            "read, patient/*.rs, new RS256 token",
            _time(fresh, lambda n: setup.request(rs_tokens[n]), setup.read),
            target=True,
            note="JWKS cached; signature + claims + scope parsing + policy",
        )
    )
    es_tokens = [setup.token("patient/*.rs", es256=True, patient="p1") for _ in range(fresh)]
    rows.append(
        _row(
            "read, patient/*.rs, new ES256 token",
            _time(fresh, lambda n: setup.request(es_tokens[n]), setup.read),
            target=True,
            note="JWKS cached",
        )
    )
    system_token = setup.token("system/*.rs")
    setup.read(setup.request(system_token))
    rows.append(
        _row(
            "read, system/*.rs, same token again",
            _time(repeats, lambda _: setup.request(system_token), setup.read),
            target=True,
            note="no compartment check",
        )
    )
    history_requests = max(200, repeats // 20)
    rows.append(
        _row(
            "history page of 50, patient/*.rs",
            _time(
                history_requests,
                lambda _: setup.request(patient_token, path="/Observation/_history", route="/{type}/_history"),
                setup.history_page,
            ),
            target=False,
            note="50 compartment checks (visible)",
        )
    )
    return rows


if __name__ == "__main__":
    from bench.report import render

    render(run(quick=True), "authz (quick)")
