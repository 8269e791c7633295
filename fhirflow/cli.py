"""``fhirflow`` command line: ``serve`` (the embedded server); more commands arrive with their features."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(args: argparse.Namespace) -> int:
    if not _is_loopback(args.host):
        print(
            f"fhirflow: refusing to listen on {args.host}: authorization is off in the embedded mode, "
            "so it listens on loopback only (127.0.0.1, ::1).",
            file=sys.stderr,
        )
        return 2
    data_dir = Path(args.data_dir).resolve()
    os.environ["FHIRFLOW_DATA_DIR"] = str(data_dir)
    os.environ["FHIRFLOW_STORE"] = args.store
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    if args.max_body_bytes:
        os.environ["FHIRFLOW_MAX_BODY_BYTES"] = str(args.max_body_bytes)

    import uvicorn

    from fhirflow.local.gateway import LocalGateway
    from fhirflow.settings import Settings

    if args.stop_with_parent:
        import threading

        from fhirflow.local.launcher import watch_parent

        threading.Thread(target=watch_parent, args=(args.stop_with_parent,), daemon=True).start()
    settings = Settings.from_env()
    gateway = LocalGateway(max_body_bytes=settings.max_body_bytes)
    # Build the handlers now so that the first request does not pay for it.
    for service in ("crud", "bundle"):
        gateway.handler_for(service)
    print(
        f"fhirflow {args.store} store in {data_dir}\n"
        f"FHIR R4 base: http://{args.host}:{args.port}  (authorization OFF: loopback only)",
        flush=True,
    )
    uvicorn.run(
        gateway,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
        lifespan="off",
    )
    return 0


def import_command(args: argparse.Namespace) -> int:
    from fhirflow import importer

    if args.url:
        post = importer.http_poster(args.url, token=args.token)
    else:
        os.environ["FHIRFLOW_DATA_DIR"] = str(Path(args.data_dir).resolve())
        os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
        os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
        post = importer.embedded_poster()
    report = importer.run_import(args.paths, post, batch_size=args.batch_size, progress=not args.no_progress)
    print(
        f"imported {report.resources} resources from {report.files} files in {report.seconds:.1f} s "
        f"({report.rate:.0f} resources/s); {report.failed_resources} failed"
    )
    for failure in report.failures[:50]:
        print(f"  {failure}")
    return 1 if report.failed_resources else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fhirflow", description="fhirflow FHIR R4 server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the embedded server on one machine")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8080)
    serve_parser.add_argument("--data-dir", default=os.environ.get("FHIRFLOW_DATA_DIR", ".fhirflow"))
    serve_parser.add_argument("--store", choices=["sqlite"], default="sqlite")
    serve_parser.add_argument("--max-body-bytes", type=int, default=None)
    serve_parser.add_argument("--log-level", default="warning")
    serve_parser.add_argument("--access-log", action="store_true")
    serve_parser.add_argument("--stop-with-parent", type=int, default=None, help=argparse.SUPPRESS)
    serve_parser.set_defaults(func=serve)
    import_parser = commands.add_parser("import", help="load transaction/batch Bundles and NDJSON files")
    import_parser.add_argument("paths", nargs="+", type=Path, help="files or directories (.json, .ndjson)")
    import_parser.add_argument(
        "--url", help="a running server's base URL; without it, the embedded store in --data-dir"
    )
    import_parser.add_argument("--data-dir", default=os.environ.get("FHIRFLOW_DATA_DIR", ".fhirflow"))
    import_parser.add_argument("--token", default=os.environ.get("FHIRFLOW_TOKEN"), help="bearer token for --url")
    import_parser.add_argument("--batch-size", type=int, default=500, help="resources per batch Bundle for NDJSON")
    import_parser.add_argument("--no-progress", action="store_true")
    import_parser.set_defaults(func=import_command)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
