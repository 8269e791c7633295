"""The Cognito option (context ``fhirflow:cognito=true``): a user pool with FHIR Works on AWS's
groups, an app client, and the API's authorization switched to the RBAC mode that reads them
(``fhirflow.authz.rbac``: ``cognito:groups`` → FWoA's group rules).

The pool is the identity provider the stack trusts: its issuer and JWKS become the functions'
``auth_issuer`` and ``auth_jwks_uri`` and ``auth`` becomes ``rbac``. Access tokens are checked by
the functions as any issuer's (signature, issuer, expiry); Cognito access tokens carry the app
client in ``client_id``, not ``aud``, so no audience is required.

Users are created by an administrator (no self sign-up) and put in a group; they sign in with
SRP (no password is ever sent), with a TOTP second factor required, and get an access token
valid for an hour.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from fhirflow_infra.compliance import acknowledge

GROUPS = {
    "practitioner": "FWoA practitioner: every interaction on every type, transactions, batches and bulk export",
    "non-practitioner": "FWoA non-practitioner: read and search the financial resource types",
    "auditor": "FWoA auditor: read and search Patient",
}
"""The groups of FHIR Works on AWS's Cognito deployment and the rules ``fhirflow.authz.rbac.FWOA_RULES`` gives them."""


class CognitoUsers(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, construct_id)
        self.user_pool = cognito.UserPool(
            self,
            "Pool",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(username=True, email=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            feature_plan=cognito.FeaturePlan.ESSENTIALS,
            deletion_protection=removal_policy == RemovalPolicy.RETAIN,
            removal_policy=removal_policy,
        )
        self.groups = {
            name: cognito.CfnUserPoolGroup(
                self, f"Group-{name}", user_pool_id=self.user_pool.user_pool_id, group_name=name, description=text
            )
            for name, text in GROUPS.items()
        }
        self.client = self.user_pool.add_client(
            "Client",
            auth_flows=cognito.AuthFlow(user_srp=True),
            generate_secret=False,
            prevent_user_existence_errors=True,
            access_token_validity=Duration.hours(1),
            id_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.days(1),
            enable_token_revocation=True,
        )
        acknowledge(
            self.user_pool,
            "AwsSolutions-COG8",
            "Cognito's Plus feature plan (threat protection) is billed per monthly active user; the pool is on "
            "Essentials, with no self sign-up, a required TOTP second factor and 12-character passwords. A deployer "
            "who wants threat protection sets feature_plan PLUS here (README: Deploying to AWS).",
        )

    @property
    def issuer(self) -> str:
        """``https://cognito-idp.<region>.amazonaws.com/<pool id>``: the ``iss`` of the pool's tokens."""
        return self.user_pool.user_pool_provider_url

    @property
    def jwks_uri(self) -> str:
        return f"{self.user_pool.user_pool_provider_url}/.well-known/jwks.json"
