"""The ``fhirflow`` command as a newcomer meets it: ``--version``, help on every option, a banner
printed once the port is bound whose commands work as printed, and mistakes (no server at
``--url``, a missing path, a file that is not FHIR) as one clear line with exit status 2."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from fhirflow.cli import build_parser
from fhirflow.local.launcher import free_port

REPO = Path(__file__).resolve().parents[2]


def _fhirflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fhirflow.cli", *args]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=120, cwd=cwd)


def _one_clear_line(done: subprocess.CompletedProcess[str], *words: str) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_version() -> None:
    from importlib.metadata import version

    done = _fhirflow("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"fhirflow {version('fhirflow')}"


def test_every_command_and_option_has_help() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, command in subparsers.choices.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without help: {missing}"
    assert {c.dest for c in subparsers._choices_actions} == set(subparsers.choices)
    assert all(c.help for c in subparsers._choices_actions)


def test_import_of_a_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"
    done = _fhirflow("import", str(missing), "--data-dir", str(tmp_path / "data"), "--no-progress")
    _one_clear_line(done, "fhirflow import:", str(missing), "no such file")


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("notes.json", "this is not json", "not JSON"),
        ("list.json", "[1, 2, 3]", "not a transaction/batch Bundle, a resource or NDJSON"),
        ("lines.ndjson", '{"resourceType": "Patient"}\n{"hello": "world"}\n', "lines.ndjson:2: not a FHIR resource"),
        ("broken.ndjson", '{"resourceType": "Patient"}\n{oops\n', "broken.ndjson:2"),
    ],
)
def test_import_of_a_file_that_is_not_fhir(tmp_path: Path, name: str, content: str, says: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    done = _fhirflow("import", str(path), "--data-dir", str(tmp_path / "data"), "--no-progress")
    _one_clear_line(done, "fhirflow import:", says)


def test_import_with_no_server_at_the_url(tmp_path: Path) -> None:
    path = tmp_path / "patient.json"
    path.write_text(json.dumps({"resourceType": "Patient", "gender": "male"}))
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for jobs in ("1", "2"):
        done = _fhirflow("import", str(path), "--url", url, "--jobs", jobs, "--no-progress")
        _one_clear_line(done, "fhirflow import:", f"no FHIR server at {url}")


def test_export_with_no_server_at_the_url(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = _fhirflow("export", str(tmp_path / "out"), "--url", url)
    _one_clear_line(done, "fhirflow export:", f"no FHIR server at {url}")
    done = _fhirflow("export", str(tmp_path / "out"), "--url", "127.0.0.1:8080")  # no scheme
    _one_clear_line(done, "fhirflow export:", "no FHIR server at 127.0.0.1:8080")


def test_serve_on_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _fhirflow("serve", "--port", str(port), "--data-dir", str(tmp_path / "data"))
    _one_clear_line(done, "fhirflow serve:", f"cannot listen on 127.0.0.1:{port}", "--port")


@contextmanager
def _serving(data_dir: Path, *args: str, cwd: Path) -> Iterator[tuple[subprocess.Popen[str], int, list[str]]]:
    """``fhirflow serve`` with its output on a pipe; yields once the banner is out, with its lines."""
    port = free_port()
    command = [sys.executable, "-m", "fhirflow.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    command += ["--stop-with-parent", str(os.getpid()), *args]
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                pytest.fail(f"serve exited before its banner: {''.join(lines)}")
            lines.append(line)
            if "FHIR R4 base:" in line:
                break
        yield process, port, lines
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_banner_comes_once_the_port_listens(tmp_path: Path, workers: str) -> None:
    with _serving(tmp_path / "data", "--workers", workers, cwd=tmp_path) as (_, port, lines):
        # no retry: a connection made right after the banner is accepted
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert f"FHIR R4 base: http://127.0.0.1:{port}" in lines[-1]
        deadline = time.monotonic() + 60
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=30).status_code == 200
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def test_the_banners_token_command_works_as_printed(tmp_path: Path) -> None:
    """Run from the repository as the README says: the banner names ``.venv/bin/fhirflow`` (or whatever
    runs this Python), not a bare ``fhirflow`` that is not on PATH."""
    env_path = os.environ.get("PATH", "")
    with _serving(tmp_path / "data", "--auth", "smart", "--workers", "1", cwd=REPO) as (_, port, lines):
        banner = lines[-1]
        command = re.search(r"mint tokens with: (.+?)\)?\s*$", banner)
        assert command, banner
        minted = subprocess.run(
            command.group(1),
            shell=True,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PATH": env_path},
        )
        assert minted.returncode == 0, (command.group(1), minted.stderr)
        token = minted.stdout.strip()
        assert token.count(".") == 2
        reply = httpx.get(
            f"http://127.0.0.1:{port}/Patient/123", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert reply.status_code == 404, reply.text  # authorized (patient 123's own record), just not there
