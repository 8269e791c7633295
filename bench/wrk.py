"""wrk as the load generator, when it is installed (``apt-get install wrk``); the bench falls back to the
Python generator without it.

The scenario's requests are written into a Lua script and pre-formatted in ``init``, so wrk picks one
at random per request without building it. One wrk thread holds all connections: a single core, like
the Python generator, leaving the other core to the server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.loadgen import LoadResult, Scenario

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\n{"requests": %d, "duration_us": %d, "io_errors": %d, "status_errors": %d, "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _lua_string(data: bytes) -> str:
    """A Lua long-bracket literal holding ``data`` verbatim."""
    level = 0
    while b"]" + b"=" * level + b"]" in data:
        level += 1
    text = data.decode("utf-8")
    return f"[{'=' * level}[{text}]{'=' * level}]"


def lua_script(scenario: Scenario) -> str:
    entries = ",\n".join(
        f"  {{{_lua_string(path.encode())}, {_lua_string(scenario.body_for(i))}}}"
        for i, path in enumerate(scenario.paths)
    )
    headers = ["Accept = 'application/fhir+json'"]
    if scenario.method in ("POST", "PUT", "PATCH"):
        headers.append(f"['Content-Type'] = '{scenario.content_type}'")
    return f"""
local entries = {{
{entries}
}}
local requests = {{}}
init = function(args)
  math.randomseed(1)
  local headers = {{{", ".join(headers)}}}
  for i, entry in ipairs(entries) do
    local body = entry[2]
    if body == '' then body = nil end
    requests[i] = wrk.format('{scenario.method}', entry[1], headers, body)
  end
end
request = function()
  return requests[math.random(#requests)]
end
{_DONE}
"""


class WrkLoadGenerator:
    name = "wrk"

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def run(
        self, host: str, port: int, scenario: Scenario, *, concurrency: int, warmup_s: float, duration_s: float
    ) -> LoadResult:
        with tempfile.TemporaryDirectory(prefix="fhirflow-wrk-") as tmp:
            script = Path(tmp) / "scenario.lua"
            script.write_text(lua_script(scenario), encoding="utf-8")
            if warmup_s > 0:
                self._wrk(host, port, script, concurrency, warmup_s)
            summary = self._wrk(host, port, script, concurrency, duration_s)
        errors = int(summary["io_errors"] + summary["status_errors"])
        note = f"wrk: {summary['status_errors']} HTTP errors, {summary['io_errors']} I/O errors" if errors else ""
        return LoadResult(
            ok=max(int(summary["requests"]) - errors, 0),
            errors=errors,
            throughput=int(summary["requests"]) / (summary["duration_us"] / 1e6),
            median_ms=summary["p50_us"] / 1000,
            p99_ms=summary["p99_us"] / 1000,
            first_error=note,
        )

    def _wrk(self, host: str, port: int, script: Path, concurrency: int, seconds: float) -> dict[str, int]:
        command = [
            self.executable,
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://{host}:{port}/",
        ]
        completed = subprocess.run(command, capture_output=True, text=True, check=True)
        last = completed.stdout.strip().splitlines()[-1]
        summary: dict[str, int] = json.loads(last)
        return summary
