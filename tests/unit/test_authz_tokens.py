"""Token validation: every attack is a 401/403 with an OperationOutcome and a generic reason, never
a 5xx; JWKS caching, rotation and its bounded refresh; RFC 7662 introspection and its cache."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from fhirflow.authz.authenticator import BearerAuthenticator
from fhirflow.authz.config import AuthConfig, IssuerConfig, issuer_from_json
from fhirflow.authz.fetch import FetchError
from fhirflow.authz.jwks import JwksCache
from fhirflow.errors import ServiceUnavailable, Unauthorized
from fhirflow.model import FhirRequest
from tests.unit.test_authz_kit import (
    AUDIENCE,
    ISSUER,
    InProcessClient,
    TestIssuer,
    ec_key,
    rsa_key,
    smart_client,
)

GENERIC = "The access token is not valid"


@pytest.fixture(scope="module")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, issuer: TestIssuer) -> InProcessClient:
    return smart_client(tmp_path_factory.mktemp("tokens"), issuer)


def _assert_invalid_token(reply: Any) -> None:
    assert reply.status == 401, reply.body
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="fhirflow", error="invalid_token"'
    assert reply.outcome_codes == ["login"]
    assert reply.body["issue"][0]["diagnostics"] == GENERIC  # the same words for every failure


NOW = int(time.time())


def _attacks(issuer: TestIssuer) -> dict[str, str]:
    stranger = TestIssuer(issuer="https://evil.test/", keys=[rsa_key("evil")])
    return {
        "expired": issuer.token(exp=NOW - 3600, iat=NOW - 7200, nbf=NOW - 7200),
        "not yet valid": issuer.token(nbf=NOW + 3600),
        "issued in the future": issuer.token(iat=NOW + 3600),
        "no exp": issuer.token(exp=None),
        "exp not a number": issuer.token(exp="tomorrow"),
        "wrong issuer": stranger.token(),
        "wrong issuer, our key": issuer.token(iss="https://other.test/"),
        "wrong audience": issuer.token(aud="https://someone-else.test/fhir"),
        "bad signature": issuer.tampered(),
        "alg none": issuer.unsigned(alg="none"),
        "alg None": issuer.unsigned(alg="None"),
        "HS256 with the public key": issuer.hs256_with_public_key(),
        "unknown kid": issuer.token(key=rsa_key("unpublished"), header={"kid": "rsa-unpublished"}),
        "known kid, other key": issuer.token(key=rsa_key("unpublished"), header={"kid": rsa_key().kid}),
        "wrong typ": issuer.token(header={"typ": "id_token+jwt"}),
        "malformed": "not-a-jwt",
        "malformed three parts": "a.b.c",
        "malformed json": "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln",
        "five parts (JWE)": "a.b.c.d.e",
        "huge": "a" * 20000,
    }


ATTACKS = list(_attacks(TestIssuer()))


@pytest.mark.parametrize("attack", ATTACKS)
def test_every_token_attack_is_a_401_with_a_generic_outcome(
    client: InProcessClient, issuer: TestIssuer, attack: str
) -> None:
    token = _attacks(issuer)[attack]

    _assert_invalid_token(client.get("/Patient/anything", token))
    _assert_invalid_token(client.request("POST", "/Patient", token=token, body={"resourceType": "Patient"}))


def test_missing_token_is_a_401_without_an_error_code(client: InProcessClient) -> None:
    reply = client.get("/Patient/anything")

    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="fhirflow"'
    assert reply.outcome_codes == ["login"]


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "token"])
def test_a_malformed_authorization_header_is_invalid_request(client: InProcessClient, header: str) -> None:
    reply = client.request("GET", "/Patient/x", headers={"authorization": header})

    assert reply.status == 401
    assert 'error="invalid_request"' in reply.headers["WWW-Authenticate"]


def test_a_valid_token_without_clinical_scopes_is_403_insufficient_scope(
    client: InProcessClient, issuer: TestIssuer
) -> None:
    for scope in ("openid fhirUser", None, "patient/Observation.dus"):
        reply = client.get("/Patient/anything", issuer.token(scope))

        assert reply.status == 403, scope
        assert reply.headers["WWW-Authenticate"] == 'Bearer realm="fhirflow", error="insufficient_scope"'
        assert reply.outcome_codes == ["forbidden"]


def test_patient_scopes_without_a_patient_context_grant_nothing(client: InProcessClient, issuer: TestIssuer) -> None:
    assert client.get("/Patient/p1", issuer.token("patient/*.rs")).status == 403
    assert client.get("/Patient/p1", issuer.token("user/*.rs")).status == 403  # user/ needs fhirUser


def test_clock_skew_is_tolerated_within_a_minute(client: InProcessClient, issuer: TestIssuer) -> None:
    just_expired = issuer.token(exp=int(time.time()) - 30)
    almost_valid = issuer.token(nbf=int(time.time()) + 30)

    assert client.get("/Patient/nobody", just_expired).status == 404
    assert client.get("/Patient/nobody", almost_valid).status == 404


def test_es256_tokens_from_the_same_issuer_work(client: InProcessClient, issuer: TestIssuer) -> None:
    assert client.get("/Patient/nobody", issuer.token(key=ec_key())).status == 404


def test_algorithms_are_pinned_per_issuer(issuer: TestIssuer) -> None:
    pinned = IssuerConfig(issuer=ISSUER, audience=(AUDIENCE,), static_jwks=issuer.jwks(), algorithms=("ES256",))
    authenticator = BearerAuthenticator(AuthConfig(mode="smart", issuers=(pinned,)))

    assert authenticator.principal_for(issuer.token(key=ec_key())).sub == "user-1"
    with pytest.raises(Unauthorized):
        authenticator.principal_for(issuer.token(key=rsa_key()))


def test_symmetric_algorithms_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        issuer_from_json({"issuer": ISSUER, "jwks_uri": "https://idp.test/jwks", "algorithms": ["RS256", "HS256"]})


# -- JWKS: fetched once, refreshed on an unknown kid, rate-bounded ----------------------------------


class FakeIdp:
    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.fetches = 0
        self.down = False

    def fetch(self, url: str) -> dict[str, Any]:
        self.fetches += 1
        if self.down:
            raise FetchError("connection refused")
        return self.jwks


def _remote_config(**options: Any) -> AuthConfig:
    issuer = IssuerConfig(issuer=ISSUER, audience=(AUDIENCE,), jwks_uri="https://idp.test/jwks")
    return AuthConfig(mode="smart", issuers=(issuer,), **options)


def test_the_jwks_is_fetched_once_for_many_tokens() -> None:
    idp = FakeIdp(TestIssuer().jwks())
    authenticator = BearerAuthenticator(_remote_config(), fetch=idp.fetch)

    for _ in range(20):
        authenticator.principal_for(TestIssuer().token("patient/*.rs", patient="p1"))

    assert idp.fetches == 1


def test_key_rotation_is_picked_up_on_an_unknown_kid() -> None:
    old = TestIssuer(keys=[rsa_key("old")])
    new = TestIssuer(keys=[rsa_key("new")])
    idp = FakeIdp(old.jwks())
    clock = [1000.0]
    config = _remote_config(jwks_min_refresh_seconds=30)
    authenticator = BearerAuthenticator(config, fetch=idp.fetch)
    authenticator.verifier.caches[ISSUER]._clock = lambda: clock[0]

    assert authenticator.principal_for(old.token()).issuer == ISSUER
    idp.jwks = new.jwks()  # the IdP rotates its key
    clock[0] += 31
    assert authenticator.principal_for(new.token()).issuer == ISSUER
    assert idp.fetches == 2


def test_refreshes_for_unknown_kids_are_rate_bounded() -> None:
    issuer = TestIssuer()
    idp = FakeIdp(issuer.jwks())
    clock = [1000.0]
    authenticator = BearerAuthenticator(_remote_config(jwks_min_refresh_seconds=30), fetch=idp.fetch)
    authenticator.verifier.caches[ISSUER]._clock = lambda: clock[0]
    authenticator.principal_for(issuer.token())

    def burst(prefix: str) -> None:
        for n in range(50):  # fifty made-up kids
            with pytest.raises(Unauthorized):
                authenticator.principal_for(issuer.token(key=rsa_key("unpublished"), header={"kid": f"{prefix}{n}"}))

    burst("early-")
    assert idp.fetches == 1  # the keys were fetched less than 30 s ago: no refresh at all
    clock[0] += 31
    burst("later-")
    assert idp.fetches == 2  # one refresh for the whole burst


def test_an_unreachable_idp_is_503_not_a_crash_and_cached_keys_survive_it() -> None:
    issuer = TestIssuer()
    idp = FakeIdp(issuer.jwks())
    idp.down = True
    authenticator = BearerAuthenticator(_remote_config(), fetch=idp.fetch)

    with pytest.raises(ServiceUnavailable):
        authenticator.principal_for(issuer.token())

    idp.down = False
    authenticator.principal_for(issuer.token())  # the next request tries again
    cache = authenticator.verifier.caches[ISSUER]
    idp.down = True
    cache._fetched_at = -1e9  # stale: the refresh fails, the cached keys are kept
    authenticator.principal_for(issuer.token())


def test_only_public_asymmetric_signature_keys_are_kept() -> None:
    weak = TestIssuer().jwks()["keys"][0] | {"kid": "weak"}
    weak["n"] = base64.urlsafe_b64encode((2**1023 + 1).to_bytes(128, "big")).rstrip(b"=").decode()
    jwks = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {**TestIssuer().jwks()["keys"][0], "use": "enc", "kid": "enc"},
            weak,
            {"kty": "RSA", "kid": "broken"},
            TestIssuer().jwks()["keys"][1],
        ]
    }
    cache = JwksCache(static_jwks=jwks)

    assert cache.key_for("sym", "RS256") is None
    assert cache.key_for("enc", "RS256") is None
    assert cache.key_for("weak", "RS256") is None
    assert cache.key_for(ec_key().kid, "ES256") is not None
    assert cache.key_for(ec_key().kid, "RS256") is None  # a key is used only with its own algorithm family


def test_a_verified_token_is_cached_until_it_expires() -> None:
    issuer = TestIssuer()
    now = [time.time()]
    config = _remote_config()
    authenticator = BearerAuthenticator(config, fetch=FakeIdp(issuer.jwks()).fetch, clock=lambda: now[0])
    authenticator.verifier._clock = lambda: now[0]
    token = issuer.token(exp=int(now[0]) + 120)

    first = authenticator.principal_for(token)
    assert authenticator.principal_for(token) is first  # no second verification
    now[0] += 120 + config.clock_skew_seconds + 1
    with pytest.raises(Unauthorized):
        authenticator.principal_for(token)


# -- RFC 7662 introspection ------------------------------------------------------------------------


class FakeIntrospection:
    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, str], dict[str, str]]] = []

    def post(self, url: str, form: dict[str, str], *, headers: dict[str, str] | None = None) -> dict[str, Any]:
        self.calls.append((url, dict(form), dict(headers or {})))
        return self.answers.get(form["token"], {"active": False})


def _introspection_config(**options: Any) -> AuthConfig:
    issuer = IssuerConfig(
        issuer="https://as.test/",
        introspection_endpoint="https://as.test/introspect",
        introspection_client_id="fhir server",
        introspection_client_secret="s3cret:x",
    )
    return AuthConfig(mode="smart", issuers=(issuer,), **options)


def test_an_active_opaque_token_is_introspected_once() -> None:
    exp = int(time.time()) + 300
    fake = FakeIntrospection(
        {"opaque-1": {"active": True, "scope": "patient/*.rs", "client_id": "app", "exp": exp, "patient": "p1"}}
    )
    authenticator = BearerAuthenticator(_introspection_config(), post=fake.post)

    principal = authenticator.principal_for("opaque-1")
    again = authenticator.principal_for("opaque-1")

    assert again is principal
    assert (principal.patient, principal.client_id, principal.issuer) == ("p1", "app", "https://as.test/")
    assert [s.text for s in principal.scopes] == ["patient/*.rs"]
    assert len(fake.calls) == 1
    url, form, headers = fake.calls[0]
    assert url == "https://as.test/introspect"
    assert form == {"token": "opaque-1", "token_type_hint": "access_token"}
    assert base64.b64decode(headers["Authorization"].removeprefix("Basic ")) == b"fhir+server:s3cret%3Ax"


@pytest.mark.parametrize(
    "answer",
    [
        {"active": False},
        {"active": "true", "exp": int(time.time()) + 300},
        {"active": True},  # SMART requires exp
        {"active": True, "exp": int(time.time()) - 3600},
        {"active": True, "exp": int(time.time()) + 300, "iss": "https://someone-else.test/"},
    ],
)
def test_inactive_or_unacceptable_introspection_answers_are_401(answer: dict[str, Any]) -> None:
    fake = FakeIntrospection({"opaque": answer})
    authenticator = BearerAuthenticator(_introspection_config(), post=fake.post)

    for _ in range(3):
        with pytest.raises(Unauthorized):
            authenticator.principal_for("opaque")
    assert len(fake.calls) == 1  # a rejected token is remembered for a few seconds


def test_introspection_answers_are_cached_for_a_bounded_time() -> None:
    now = [time.time()]
    fake = FakeIntrospection({"opaque": {"active": True, "scope": "system/*.rs", "exp": int(now[0]) + 3600}})
    authenticator = BearerAuthenticator(
        _introspection_config(introspection_cache_seconds=60), post=fake.post, clock=lambda: now[0]
    )
    authenticator.introspectors["https://as.test/"]._clock = lambda: now[0]

    authenticator.principal_for("opaque")
    now[0] += 59
    authenticator.principal_for("opaque")
    assert len(fake.calls) == 1
    now[0] += 2
    authenticator.principal_for("opaque")  # asked again: the token may have been revoked meanwhile
    assert len(fake.calls) == 2


def test_the_principal_cache_is_bounded() -> None:
    fake = FakeIntrospection(
        {f"t{n}": {"active": True, "scope": "system/*.rs", "exp": int(time.time()) + 300} for n in range(50)}
    )
    authenticator = BearerAuthenticator(_introspection_config(cache_size=10), post=fake.post)

    for n in range(50):
        authenticator.principal_for(f"t{n}")

    assert len(authenticator._principals) == 10


def test_public_routes_need_no_token_and_ignore_a_bad_one(client: InProcessClient) -> None:
    assert client.get("/metadata").status == 200
    assert client.get("/metadata", "garbage").status == 200
    assert client.get("/.well-known/smart-configuration").status == 200


def test_a_request_object_gets_its_principal(issuer: TestIssuer) -> None:
    authenticator = BearerAuthenticator(_remote_config(), fetch=FakeIdp(issuer.jwks()).fetch)
    request = FhirRequest(
        method="GET",
        path="/Patient/1",
        route="/{type}/{id}",
        headers={"authorization": f"Bearer {issuer.token('user/*.rs', fhirUser='Practitioner/dr1')}"},
    )

    principal = authenticator.authenticate(request)

    assert principal is not None
    assert principal.fhir_user == ("Practitioner", "dr1")
    assert principal.client_id == "app-1"
    assert "fhirUser" in principal.claim_names
    assert request.tenant == "default"


def test_the_scope_claim_name_is_configurable(tmp_path: Any, issuer: TestIssuer) -> None:
    client = smart_client(tmp_path, issuer, scope_claim="scp")

    assert client.get("/Patient/nobody", issuer.token(None, scp=["system/*.rs"])).status == 404
    assert client.get("/Patient/nobody", issuer.token("system/*.rs")).status == 403  # "scope" is not read now


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "application/at+jwt", "AT+JWT", None])
def test_access_token_types_are_accepted(client: InProcessClient, issuer: TestIssuer, typ: str | None) -> None:
    assert client.get("/Patient/nobody", issuer.token(header={"typ": typ})).status == 404
