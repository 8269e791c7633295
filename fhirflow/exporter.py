"""``fhirflow export``: a bulk data client (https://hl7.org/fhir/uv/bulkdata/STU2/export.html).

Kicks off an export on a running server (``Prefer: respond-async``), polls the status URL while
showing ``X-Progress``, then downloads every file of the manifest into a directory, one NDJSON
file per manifest entry, and writes the manifest beside them. Standard library HTTP only.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode, urlsplit

from fhirflow.usage import UsageError


class ExportError(Exception):
    """The server refused or failed the export; the message holds its OperationOutcome's words."""


@dataclass
class ExportReport:
    files: list[Path] = field(default_factory=list)
    resources: int = 0
    errors: int = 0
    manifest: dict[str, Any] = field(default_factory=dict)


def _request(
    url: str, *, method: str = "GET", token: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    all_headers = {"Accept": "application/fhir+json", **(headers or {})}
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    try:
        request = urllib.request.Request(url, method=method, headers=all_headers)  # noqa: S310 (the user's own URL)
        with urllib.request.urlopen(request, timeout=300) as reply:  # noqa: S310
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()
    except (urllib.error.URLError, ValueError, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise UsageError(f"no FHIR server at {url}: {reason}") from error


def _diagnostics(body: bytes) -> str:
    try:
        outcome = json.loads(body)
        return "; ".join(str(i.get("diagnostics", i.get("code", ""))) for i in outcome.get("issue", []))
    except (ValueError, AttributeError):
        return body[:300].decode("utf-8", "replace")


def kick_off(base_url: str, *, types: list[str], since: str | None, token: str | None, level: str = "") -> str:
    """Start the export; the status URL."""
    params: list[tuple[str, str]] = []
    if types:
        params.append(("_type", ",".join(types)))
    if since:
        params.append(("_since", since))
    url = f"{base_url.rstrip('/')}{level}/$export" + (f"?{urlencode(params)}" if params else "")
    status, headers, body = _request(url, token=token, headers={"Prefer": "respond-async"})
    if status != 202 or "content-location" not in headers:
        raise ExportError(f"kick-off answered {status}: {_diagnostics(body)}")
    return headers["content-location"]


def wait(
    status_url: str, *, token: str | None, on_progress: Callable[[str], None], poll_seconds: float = 1.0
) -> dict[str, Any]:
    """Poll until the export is done; its manifest."""
    while True:
        status, headers, body = _request(status_url, token=token)
        if status == 200:
            manifest: dict[str, Any] = json.loads(body)
            return manifest
        if status != 202:
            raise ExportError(f"the export failed ({status}): {_diagnostics(body)}")
        on_progress(headers.get("x-progress", "in progress"))
        retry = headers.get("retry-after", "")
        time.sleep(float(retry) if retry.isdigit() else poll_seconds)


def download(manifest: dict[str, Any], out_dir: Path, *, token: str | None) -> ExportReport:
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ExportReport(manifest=manifest)
    send_token = token if manifest.get("requiresAccessToken") else None
    for kind in ("output", "error"):
        for entry in manifest.get(kind) or []:
            name = Path(urlsplit(entry["url"]).path).name or f"{entry['type']}.ndjson"
            status, _, body = _request(entry["url"], token=send_token, headers={"Accept": "application/fhir+ndjson"})
            if status != 200:
                raise ExportError(f"downloading {name} answered {status}: {_diagnostics(body)}")
            path = out_dir / (name if kind == "output" else f"error-{name}")
            path.write_bytes(body)
            report.files.append(path)
            lines = body.count(b"\n")
            if kind == "output":
                report.resources += lines
            else:
                report.errors += lines
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return report


def run_export(
    base_url: str,
    out_dir: Path,
    *,
    types: list[str],
    since: str | None,
    token: str | None,
    level: str = "",
    stream: TextIO = sys.stderr,
) -> ExportReport:
    status_url = kick_off(base_url, types=types, since=since, token=token, level=level)
    stream.write(f"export started: {status_url}\n")
    last = [""]

    def show(progress: str) -> None:
        if progress != last[0]:
            stream.write(f"\r{progress[:100]:<100}")
            stream.flush()
            last[0] = progress

    manifest = wait(status_url, token=token, on_progress=show)
    if last[0]:
        stream.write("\n")
    return download(manifest, out_dir, token=token)
