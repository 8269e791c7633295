"""``fhirflow import`` into the embedded store: post through the bundle service's own handler.

Part of the embedded runner, not of :mod:`fhirflow.importer`: the kernel never imports the embedded
runner (docs/architecture.md, Layers), so the CLI hands the importer a poster built here.
"""

from __future__ import annotations

from concurrent.futures import Executor, ProcessPoolExecutor

from fhirflow.importer import Poster

_worker_post: Poster | None = None


def _start_embedded_worker() -> None:
    global _worker_post
    _worker_post = embedded_poster()


def post_in_worker(body: bytes) -> tuple[int, bytes]:
    """The poster for :func:`embedded_pool`: each worker process posts with its own gateway."""
    assert _worker_post is not None, "the worker's initializer did not run"
    return _worker_post(body)


def embedded_pool(jobs: int) -> Executor:
    """Worker processes that each post through the bundle handler in-process (settings from the
    environment, which they inherit). SQLite serialises their commits; everything before a
    commit (parsing, validation, references, search extraction) runs on every core."""
    import multiprocessing

    return ProcessPoolExecutor(
        jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_start_embedded_worker
    )


def embedded_poster() -> Poster:
    """Post through the bundle service's own handler, in this process (settings from the environment)."""
    from fhirflow.local.gateway import LocalGateway

    gateway = LocalGateway()
    headers = [(b"host", b"localhost"), (b"content-type", b"application/fhir+json"), (b"prefer", b"return=minimal")]

    def post(body: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "query_string": b"",
            "headers": headers,
            "scheme": "http",
            "client": ("127.0.0.1", 0),
        }
        result = gateway.dispatch(scope, body)
        return int(result["statusCode"]), str(result.get("body") or "").encode()

    return post
