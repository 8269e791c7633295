"""Subscription delivery latency, commit to receipt (``python -m bench --only subscriptions-delivery``).

The embedded server (``fhirflow serve``, two processes) with 100 R4 subscriptions whose criteria
are ``Observation?code=bench-{n}``, each with an ``application/fhir+json`` payload to one receiver
on 127.0.0.1; Observations are created at 100 per second, each matching one subscription. The
latency of a change is the time from the write's response (the commit) to the receiver's arrival
of its ``PUT``. Targets (issue 12): p50 ≤ 50 ms, p99 ≤ 250 ms.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from bench.report import Row, at_most

SUBSCRIPTIONS = 100
RATE_PER_S = 100
TARGET_P50_MS = 50.0
TARGET_P99_MS = 250.0
ENV = {
    "FHIRFLOW_SUBSCRIPTIONS_ALLOW_HTTP": "true",
    "FHIRFLOW_SUBSCRIPTIONS_ALLOW_PRIVATE": "true",
}


class _Arrivals:
    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()

    def serve(self) -> ThreadingHTTPServer:
        arrivals = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                with arrivals.lock:
                    arrivals.at.setdefault(self.path.rsplit("/", 1)[-1], time.monotonic())
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def run(*, quick: bool = False) -> list[Row]:
    from fhirflow.local.launcher import LocalServer

    seconds = 3 if quick else 10
    arrivals = _Arrivals()
    receiver = arrivals.serve()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/fhir"
    committed: dict[str, float] = {}
    errors = 0
    with (
        tempfile.TemporaryDirectory(prefix="fhirflow-bench-subs-") as data_dir,
        LocalServer(data_dir=Path(data_dir), env=ENV, workers=2) as server,
        httpx.Client(base_url=server.base_url, headers={"Content-Type": "application/fhir+json"}, timeout=30) as http,
    ):
        for n in range(SUBSCRIPTIONS):
            body = {
                "resourceType": "Subscription",
                "status": "requested",
                "reason": "bench",
                "criteria": f"Observation?code=bench-{n}",
                "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json"},
            }
            http.post("/Subscription", json=body).raise_for_status()
        time.sleep(1.0)  # activation
        start = time.monotonic()
        for i in range(seconds * RATE_PER_S):
            due = start + i / RATE_PER_S
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            observation = {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"code": f"bench-{i % SUBSCRIPTIONS}"}]},
            }
            reply = http.post("/Observation", json=observation)
            if reply.status_code != 201:
                errors += 1
                continue
            committed[reply.json()["id"]] = time.monotonic()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(arrivals.at) < len(committed):
            time.sleep(0.05)
    receiver.shutdown()
    latencies = sorted((arrivals.at[id_] - at) * 1000 for id_, at in committed.items() if id_ in arrivals.at)
    missing = len(committed) - len(latencies)
    p50 = statistics.median(latencies) if latencies else float("inf")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("inf")
    target = at_most(p50, TARGET_P50_MS, "ms p50")
    target_p99 = at_most(p99, TARGET_P99_MS, "ms p99")
    return [
        Row(
            bench="subscriptions-delivery",
            case=f"commit → webhook receipt, {RATE_PER_S} changes/s, {SUBSCRIPTIONS} subscriptions",
            median_ms=p50,
            p99_ms=p99,
            throughput=len(latencies) / seconds,
            samples=len(latencies),
            errors=errors + missing,
            target=type(target)(f"{target.text}, {target_p99.text}", target.passed and target_p99.passed),
            note=f"{missing} not received" if missing else "",
        )
    ]
