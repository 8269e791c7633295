"""opensearch-py clients for the search index, built lazily from settings (DESIGN.md §2).

Nothing here does I/O or imports opensearch-py (186 ms of cold start) until a client is built:
:func:`client_factory` checks the settings at once and returns a function that builds the client
on first use, which is what ``OpenSearchSearchIndex(client_factory=...)`` takes.

Authentication (``Settings.opensearch_auth``):

- ``sigv4`` (the default, and what the CDK stack deploys): every request is signed with the
  Lambda role's credentials (botocore's SigV4 through opensearch-py's ``Urllib3AWSV4SignerAuth``),
  for service ``es`` (a managed domain) or ``aoss`` (a serverless collection), in ``aws_region``.
  The domain's policies name the roles that may read or write (infra/fhirflow_infra/search.py).
- ``none``: plain HTTP(S), for a development cluster (``http://localhost:9200``) and the live
  tests; never for PHI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhirflow.settings import Settings

AUTH_MODES = ("sigv4", "none")
SERVICES = ("es", "aoss")
TIMEOUT_SECONDS = 6
"""Per attempt; a bulk of a stream batch (5 MiB at most) or a search page finishes well within it.
The worst case of one request, ``TIMEOUT_SECONDS * (1 + MAX_RETRIES)``, must leave an API
Lambda (28 s) time for a search plan's second request and a 503: tests/infra checks it."""
MAX_RETRIES = 1
"""opensearch-py retries connection failures on another node (not 4xx/5xx answers, and not
timeouts: a search that timed out once would most likely time out again, on the caller's time)."""


def opensearch_client(
    url: str,
    *,
    region: str | None = None,
    service: str = "es",
    auth: str | None = None,
    timeout: float = TIMEOUT_SECONDS,
) -> Any:
    """An opensearch-py client for ``url``. ``auth`` defaults to ``sigv4`` when ``region`` is given
    (``service`` "es" for managed domains, "aoss" for serverless collections), else ``none``."""
    from opensearchpy import OpenSearch

    mode = auth or ("sigv4" if region else "none")
    options: dict[str, Any] = {
        "hosts": [url],
        "use_ssl": url.startswith("https://"),
        "verify_certs": True,
        "timeout": timeout,
        "max_retries": MAX_RETRIES,
        "retry_on_timeout": False,
        "http_compress": True,  # bulk bodies are JSON: they shrink several times
    }
    if mode == "sigv4":
        if not region:
            raise ValueError("SigV4 needs the region (AWS_REGION)")
        import boto3
        from opensearchpy import Urllib3AWSV4SignerAuth

        # Refreshable where the session's credentials are; the signer freezes them per request.
        credentials = boto3.Session().get_credentials()
        options["http_auth"] = Urllib3AWSV4SignerAuth(credentials, region, service)
    elif mode != "none":
        raise ValueError(f"Unknown OpenSearch auth '{mode}'; expected one of {', '.join(AUTH_MODES)}")
    client = OpenSearch(**options)
    traced(client)
    return client


def traced(client: Any) -> None:
    """Each request of ``client`` in an X-Ray subsegment ``OpenSearch`` (the X-Ray SDK sees no
    AWS call here: urllib3 is not patched), annotated with the method and the API (``_search``,
    ``_bulk``...), never a path's ids or a body. Nothing changes when tracing is off."""
    from fhirflow import tracing

    if not tracing.enabled():
        return
    transport = client.transport
    perform = transport.perform_request

    def perform_request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        api = next((part for part in reversed(url.split("?", 1)[0].split("/")) if part.startswith("_")), "document")
        with tracing.subsegment("OpenSearch", method=method, api=api):
            return perform(method, url, *args, **kwargs)

    transport.perform_request = perform_request


def client_factory(settings: Settings) -> Callable[[], Any]:
    """A function building the client the settings describe; the settings are checked now."""
    url = settings.opensearch_url
    if not url:
        raise ValueError("search_index 'opensearch' needs the endpoint: set FHIRFLOW_OPENSEARCH_URL")
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"FHIRFLOW_OPENSEARCH_URL must be an http(s) URL, not '{url}'")
    if settings.opensearch_auth not in AUTH_MODES:
        raise ValueError(
            f"Unknown FHIRFLOW_OPENSEARCH_AUTH '{settings.opensearch_auth}'; expected one of {', '.join(AUTH_MODES)}"
        )
    if settings.opensearch_service not in SERVICES:
        expected = ", ".join(SERVICES)
        raise ValueError(
            f"Unknown FHIRFLOW_OPENSEARCH_SERVICE '{settings.opensearch_service}'; expected one of {expected}"
        )
    if settings.opensearch_auth == "sigv4" and not settings.aws_region:
        raise ValueError("FHIRFLOW_OPENSEARCH_AUTH=sigv4 needs the region: set AWS_REGION")
    region, service, auth = settings.aws_region, settings.opensearch_service, settings.opensearch_auth

    def build() -> Any:
        return opensearch_client(url, region=region, service=service, auth=auth)

    return build
