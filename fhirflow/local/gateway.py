"""The local gateway: HTTP in, API Gateway REST proxy events out, to the same Lambda handlers.

It plays API Gateway's part in the embedded mode: it matches the route table (the one the
CDK app builds API Gateway from), fills ``resource`` and ``pathParameters`` as API Gateway
does, enforces the body size limit before reading more, and turns the handler's proxy
response back into HTTP. A plain ASGI callable, no framework, because it sits on the hot path
of every request.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import importlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fhirflow import compression, jsonio
from fhirflow.errors import FhirError, PayloadTooLarge, internal_error_outcome, outcome_for
from fhirflow.local.apigateway_rules import REQUEST_BODY_LIMIT, ApiGatewayRules
from fhirflow.local.worker import install_read_your_writes
from fhirflow.routes import ROUTE_TABLE, RouteTable

if TYPE_CHECKING:
    from fhirflow.adapters.filesystem.signed_urls import SignedLocalBlobUrls

logger = logging.getLogger("fhirflow.gateway")

# The embedded mode's read-your-writes (DESIGN.md §6), registered before any handler this process
# calls builds its store: `fhirflow serve` (each server process) and `fhirflow import` go through here.
install_read_your_writes()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class LambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:fhirflow"
    function_version: str = "$LATEST"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def default_handler(service: str) -> LambdaHandler:
    module = importlib.import_module(f"fhirflow_{service.replace('-', '_')}.handler")
    handler: LambdaHandler = module.lambda_handler
    return handler


WRITE_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))
WRITE_THREADS = 8
"""Writes in progress at once per server process (each on its own thread and SQLite connection)."""
READ_THREADS = 8
"""Searches, history and operations in progress at once per server process."""
QUICK_INTERACTIONS = frozenset(("read", "vread", "capabilities", "smart-configuration"))
"""Interactions whose cost is small and bounded whatever the input: they run on the event loop."""


class LocalGateway:
    def __init__(
        self,
        *,
        routes: RouteTable = ROUTE_TABLE,
        max_body_bytes: int = 16 * 1024 * 1024,
        load_handler: Callable[[str], LambdaHandler] = default_handler,
        write_threads: int = WRITE_THREADS,
        read_threads: int = READ_THREADS,
        cors_origins: tuple[str, ...] = (),
        signed_urls: SignedLocalBlobUrls | None = None,
        api_gateway: ApiGatewayRules | None = None,
    ) -> None:
        self.routes = routes
        self.signed_urls = signed_urls
        """Plays S3 for Binary content moved by signed URLs (fhirflow.binarycontent), when set."""
        self.api_gateway = api_gateway
        """API Gateway REST's limits and encodings (fhirflow.local.apigateway_rules), when set."""
        self.max_body_bytes = max_body_bytes
        self._load_handler = load_handler
        self._handlers: dict[str, LambdaHandler] = {}
        self.write_threads = write_threads
        self.read_threads = read_threads
        self.cors_origins = cors_origins
        """Origins whose preflights this gateway answers (API Gateway's CORS in AWS; fhirflow.cors)."""
        self._writers: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None

    def handler_for(self, service: str) -> LambdaHandler:
        handler = self._handlers.get(service)
        if handler is None:
            handler = self._handlers[service] = self._load_handler(service)
        return handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self.signed_urls is not None and scope["path"].startswith(self.signed_urls.url_prefix):
            from fhirflow.local.signed_transfers import serve_signed

            await serve_signed(self.signed_urls, scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and self.cors_origins:
            await _send_result(send, _preflight(self.cors_origins, _header(scope, b"origin")))
            return
        if self.api_gateway is not None:
            await _send_result(send, await self._as_api_gateway(self.api_gateway, scope, receive))
            return
        try:
            body = await self._read_body(scope, receive)
            pool = self._pool_for(scope)
            if pool is None:
                result = self.dispatch(scope, body)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(pool, self.dispatch, scope, body)
        except FhirError as error:
            result = _error_result(error)
        except Exception:
            logger.exception("gateway failure")
            result = {
                "statusCode": 500,
                "headers": {"Content-Type": "application/fhir+json"},
                "body": jsonio.dumps(internal_error_outcome()).decode(),
            }
        await _send_result(send, result, _header(scope, b"accept-encoding"))

    async def _as_api_gateway(self, rules: ApiGatewayRules, scope: Scope, receive: Receive) -> dict[str, Any]:
        try:
            body = await self._read_body(scope, receive, limit=REQUEST_BODY_LIMIT)
        except PayloadTooLarge:
            return rules.request_too_long()
        try:
            route, params = self.routes.match(scope["method"], scope["path"])
        except FhirError as error:
            return _error_result(error)
        event = build_event(scope, body, resource=route.pattern, path_params=params, base64_body=True)
        context = LambdaContext(
            function_name=f"fhirflow-{route.service}", aws_request_id=event["requestContext"]["requestId"]
        )
        return await rules.invoke(self.handler_for(route.service), event, context)

    async def _read_body(self, scope: Scope, receive: Receive, *, limit: int | None = None) -> bytes:
        limit = self.max_body_bytes if limit is None else limit
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {limit}")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The body is over the limit of {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _pool_for(self, scope: Scope) -> ThreadPoolExecutor | None:
        """Where a request runs: on the event loop only when its cost is small and bounded (a read
        by id, the CapabilityStatement); writes on the writer threads, so that those arriving
        together share a SQLite commit (fhirflow.adapters.sqlite.group_commit) and SQLite's work,
        which releases the GIL, overlaps with the next request's Python; everything else (searches,
        history, operations) on the reader threads, so that a slow one never stalls the loop and
        with it every other request of this process."""
        method = scope["method"]
        if method in WRITE_METHODS:
            if self.write_threads <= 0:
                return None
            if self._writers is None:
                self._writers = ThreadPoolExecutor(self.write_threads, thread_name_prefix="fhirflow-write")
            return self._writers
        try:
            route, _ = self.routes.match(method, scope["path"])
        except FhirError:
            return None  # answered at once by dispatch
        if route.interaction in QUICK_INTERACTIONS or self.read_threads <= 0:
            return None
        if self._readers is None:
            self._readers = ThreadPoolExecutor(self.read_threads, thread_name_prefix="fhirflow-read")
        return self._readers

    def dispatch(self, scope: Scope, body: bytes) -> dict[str, Any]:
        method = scope["method"]
        path = scope["path"]
        route, params = self.routes.match(method, path)
        event = build_event(scope, body, resource=route.pattern, path_params=params)
        context = LambdaContext(
            function_name=f"fhirflow-{route.service}", aws_request_id=event["requestContext"]["requestId"]
        )
        return self.handler_for(route.service)(event, context)


def build_event(
    scope: Scope, body: bytes, *, resource: str, path_params: dict[str, str], base64_body: bool = False
) -> dict[str, Any]:
    """An API Gateway REST proxy event (payload format 1.0) for one HTTP request; ``base64_body``
    as API Gateway does for a body whose media type is a binary media type (the stack's ``*/*``)."""
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        headers[name] = value
        multi_headers.setdefault(name, []).append(value)
    # API Gateway adds X-Forwarded-Proto/For; so does the local gateway, from the connection.
    client = scope.get("client") or ("127.0.0.1", 0)
    for name, value in (("x-forwarded-proto", scope.get("scheme", "http")), ("x-forwarded-for", client[0])):
        if name not in headers:
            headers[name] = value
            multi_headers[name] = [value]
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    query: dict[str, list[str]] = {}
    for key, value in pairs:
        query.setdefault(key, []).append(value)
    if base64_body and body:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    else:
        try:
            text, encoded = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
    request_id = headers.get("x-request-id") or str(uuid.uuid4())
    return {
        "resource": resource,
        "path": scope["path"],
        "httpMethod": scope["method"],
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": path_params or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": scope["method"],
            "path": scope["path"],
            "stage": "local",
            "fhirflowLocal": True,
            "requestId": request_id,
            "requestTimeEpoch": time.time_ns() // 1_000_000,
            "identity": {"sourceIp": client[0]},
        },
        "body": text or None,
        "isBase64Encoded": encoded,
    }


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _preflight(origins: tuple[str, ...], origin: str | None) -> dict[str, Any]:
    """A CORS preflight's answer: no body; without CORS headers when the origin is not allowed,
    which makes the browser refuse the request it asked about."""
    from fhirflow.cors import preflight_headers

    return {"statusCode": 204, "headers": preflight_headers(origins, origin) or {}, "body": ""}


def _error_result(error: FhirError) -> dict[str, Any]:
    return {
        "statusCode": error.status,
        "headers": {"Content-Type": "application/fhir+json; charset=utf-8", **error.headers},
        "body": jsonio.dumps(outcome_for(error)).decode(),
    }


async def _send_result(send: Send, result: dict[str, Any], accept_encoding: str | None = None) -> None:
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode("utf-8")
    status = int(result.get("statusCode", 500))
    single = {k: str(v) for k, v in (result.get("headers") or {}).items()}
    payload, single = await _compressed(status, payload, single, accept_encoding)
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in single.items()]
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((name.lower().encode("latin-1"), str(v).encode("latin-1")) for v in values)
    if status not in (204, 304):
        headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload if status not in (204, 304) else b""})


GZIP_OFF_LOOP_BYTES = 64 * 1024
"""Bodies at least this large are compressed on a thread (zlib releases the GIL), not on the event loop."""


async def _compressed(
    status: int, payload: bytes, headers: dict[str, str], accept_encoding: str | None
) -> tuple[bytes, dict[str, str]]:
    """What API Gateway does with ``minimumCompressionSize`` (fhirflow.compression): gzip when the
    client accepts it, the type is text and the body is large enough; ``Vary`` on every such answer."""
    if not compression.varies(status, headers):
        return payload, headers
    headers = compression.with_vary(headers)
    if (
        status == 304
        or any(k.lower() == "content-encoding" for k in headers)
        or len(payload) < compression.MIN_COMPRESSED_BYTES
        or not compression.accepts_gzip(accept_encoding)
    ):
        return payload, headers
    if len(payload) >= GZIP_OFF_LOOP_BYTES:
        payload = await asyncio.get_running_loop().run_in_executor(None, compression.gzip_bytes, payload)
    else:
        payload = compression.gzip_bytes(payload)
    return payload, {**headers, "Content-Encoding": "gzip"}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


SERVICES = ("crud", "bundle", "search", "export", "subscriptions")
"""The services behind the route table, built before a server takes its first request."""


def serving_gateway() -> LocalGateway:
    """The ASGI app of one ``fhirflow serve`` process (uvicorn's factory with ``--workers``),
    configured from the environment ``serve`` prepared, its handlers built up front so that the
    first request does not pay for them. A worker process exits when its supervisor is gone."""
    from fhirflow.adapters.filesystem.signed_urls import SignedLocalBlobUrls
    from fhirflow.settings import Settings

    supervisor = os.environ.get("FHIRFLOW_SERVE_SUPERVISOR")
    if supervisor and int(supervisor) != os.getpid():
        import threading

        from fhirflow.local.launcher import watch_parent

        threading.Thread(target=watch_parent, args=(int(supervisor),), daemon=True).start()
    threads = os.environ.get("FHIRFLOW_WRITE_THREADS", "")
    settings = Settings.from_env()
    gateway = LocalGateway(
        max_body_bytes=settings.max_body_bytes,
        write_threads=int(threads) if threads.isdigit() else WRITE_THREADS,
        cors_origins=settings.cors_origins,
        signed_urls=SignedLocalBlobUrls.for_data_dir(settings.data_dir) if settings.binary_direct else None,
        api_gateway=ApiGatewayRules.from_env(),
    )
    for service in SERVICES:
        gateway.handler_for(service)
    settle_heap()
    return gateway


YOUNG_COLLECTION_THRESHOLD = 20_000
"""Allocations between collections of the youngest generation (CPython's default is 700)."""


def settle_heap() -> None:
    """Once a server process has built its handlers: what exists now (modules, the search
    parameter registry, validation tables, handlers) lives as long as the process, so it is moved
    out of the cycle collector's sight (``gc.freeze``), and the young generation is collected
    less often. A transaction bundle allocates hundreds of thousands of short-lived objects; with
    the defaults the collector ran ~2,000 times (15 full passes over the whole heap) while one
    process imported the 11.5k Synthea resources, about a tenth of its CPU time."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_COLLECTION_THRESHOLD), middle, old)
