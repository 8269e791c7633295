"""One OpenSearch stand-in shared by every function process: the executing fake of
tests/unit/test_opensearch_fake.py, served from the test process through a multiprocessing
manager on 127.0.0.1, so that what index-sync writes, search reads. Each function process
reaches it through :class:`RecordingClient`, which records every request as the HTTP method and
path opensearch-py would send (what the domain's access policy and the role's ``es:ESHttp*``
grants are checked against)."""

from __future__ import annotations

import secrets
import threading
from multiprocessing.managers import BaseManager
from typing import Any

AUTHKEY_ENV = "STACK_OPENSEARCH_AUTHKEY"
ADDRESS_ENV = "STACK_OPENSEARCH_ADDRESS"


class _Manager(BaseManager):
    pass


class _Shared:
    def __init__(self) -> None:
        from tests.unit.test_opensearch_fake import FakeOpenSearch

        self.fake = FakeOpenSearch()
        self._lock = threading.Lock()

    def call(self, method: str, kwargs: dict[str, Any]) -> Any:
        with self._lock:
            target = self.fake.indices if method.startswith("indices.") else self.fake
            return getattr(target, method.rsplit(".", 1)[-1])(**kwargs)


def serve() -> tuple[dict[str, str], Any]:
    """Start the shared stand-in; returns the environment a function process needs to reach it,
    and the fake itself (for the test's own look)."""
    shared = _Shared()
    _Manager.register("opensearch", callable=lambda: shared)
    authkey = secrets.token_bytes(16)
    manager = _Manager(address=("127.0.0.1", 0), authkey=authkey)
    server = manager.get_server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.address
    return {ADDRESS_ENV: f"{host}:{port}", AUTHKEY_ENV: authkey.hex()}, shared.fake


def connect(address: str, authkey: str) -> Any:
    _Manager.register("opensearch")
    host, port = address.rsplit(":", 1)
    manager = _Manager(address=(host, int(port)), authkey=bytes.fromhex(authkey))
    manager.connect()
    return manager.opensearch()  # type: ignore[attr-defined]


class _Indices:
    def __init__(self, client: RecordingClient) -> None:
        self._client = client

    def create(self, *, index: str, **kwargs: Any) -> Any:
        return self._client.request("PUT", f"/{index}", "indices.create", index=index, **kwargs)

    def exists(self, *, index: str, **kwargs: Any) -> Any:
        return self._client.request("HEAD", f"/{index}", "indices.exists", index=index, **kwargs)

    def put_mapping(self, *, index: str, **kwargs: Any) -> Any:
        return self._client.request("PUT", f"/{index}/_mapping", "indices.put_mapping", index=index, **kwargs)


class RecordingClient:
    """The opensearch-py client surface the adapters use, on the shared stand-in, recording each
    request as (HTTP method, path)."""

    def __init__(self, proxy: Any, record: Any) -> None:
        self._proxy = proxy
        self._record = record
        self.indices = _Indices(self)

    def request(self, method: str, path: str, call: str, **kwargs: Any) -> Any:
        self._record(method, path)
        return self._proxy.call(call, kwargs)

    def search(self, *, index: str, **kwargs: Any) -> Any:
        return self.request("POST", f"/{index}/_search", "search", index=index, **kwargs)

    def index(self, *, index: str, **kwargs: Any) -> Any:
        return self.request("PUT", f"/{index}/_doc/{kwargs.get('id')}", "index", index=index, **kwargs)

    def bulk(self, *, index: str, **kwargs: Any) -> Any:
        return self.request("POST", f"/{index}/_bulk", "bulk", index=index, **kwargs)

    def get(self, *, index: str, **kwargs: Any) -> Any:
        return self.request("GET", f"/{index}/_doc/{kwargs.get('id')}", "get", index=index, **kwargs)
