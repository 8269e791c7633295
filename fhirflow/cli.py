"""``fhirflow`` command line: ``serve`` (the embedded server); more commands arrive with their features."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from fhirflow.hosts import is_loopback
from fhirflow.usage import UsageError


def serve(args: argparse.Namespace) -> int:
    dev_issuer = _uses_dev_issuer(args.auth)
    if not is_loopback(args.host) and (args.auth == "off" or dev_issuer):
        reason = "authorization is off" if args.auth == "off" else "the development issuer is on"
        print(
            f"fhirflow: refusing to listen on {args.host}: {reason}, so it listens on loopback only "
            "(127.0.0.1, ::1). Configure a real issuer (FHIRFLOW_AUTH_ISSUER, FHIRFLOW_AUTH_CONFIG) to listen beyond.",
            file=sys.stderr,
        )
        return 2
    _check_port(args.host, args.port)
    data_dir = Path(args.data_dir).resolve()
    os.environ["FHIRFLOW_DATA_DIR"] = str(data_dir)
    os.environ["FHIRFLOW_STORE"] = args.store
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    if args.max_body_bytes:
        os.environ["FHIRFLOW_MAX_BODY_BYTES"] = str(args.max_body_bytes)
    if args.api_gateway_rules:
        os.environ["FHIRFLOW_LOCAL_GATEWAY_MODE"] = "apigateway"  # fhirflow.local.apigateway_rules
    os.environ["FHIRFLOW_AUTH"] = args.auth
    if dev_issuer:
        os.environ["FHIRFLOW_AUTH_DEV_ISSUER"] = "true"
    os.environ.setdefault("FHIRFLOW_AUDIT", "file")  # data_dir/audit.jsonl
    if args.store == "dynamodb":
        _use_dynamodb(args)

    import uvicorn

    from fhirflow.local.gateway import serving_gateway
    from fhirflow.settings import Settings

    if args.stop_with_parent:
        import threading

        from fhirflow.local.launcher import watch_parent

        threading.Thread(target=watch_parent, args=(args.stop_with_parent,), daemon=True).start()
    settings = Settings.from_env()
    from fhirflow.local.worker import start_worker

    # Plays the stream: drains what earlier runs left undelivered, then whatever a write's own
    # drain could not deliver (sqlite), or follows the table's stream (dynamodb).
    start_worker(settings)
    from fhirflow_export.local import start_export_worker

    start_export_worker(settings)  # bulk export jobs, off the request path (the SQS worker's part)
    from fhirflow_search.local import start_reindex_worker

    start_reindex_worker(settings)  # $reindex jobs, in the background
    from fhirflow_subscriptions.local import start_subscriptions_worker

    start_subscriptions_worker(settings)  # matching, delivery, heartbeats (docs/subscriptions.md)
    workers = max(1, args.workers if args.workers is not None else min(os.cpu_count() or 1, 4))

    def announce() -> None:
        """Once the port listens: a connection made after reading this line is accepted."""
        print(
            f"fhirflow {args.store} store in {data_dir}\n"
            f"FHIR R4 base: http://{args.host}:{args.port}  ({_auth_banner(args.auth, dev_issuer, data_dir)})",
            flush=True,
        )

    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "access_log": args.access_log,
        "lifespan": "off",
    }
    if workers == 1:
        config = uvicorn.Config(serving_gateway(), **options)
        listener = config.bind_socket()
        listener.listen(config.backlog)
        announce()
        uvicorn.Server(config).run(sockets=[listener])
    else:
        # Worker processes share the SQLite database (writers queue on its lock; everything before
        # a commit runs on every core). This process accepts the connections and deals them to
        # the workers evenly, and runs the background workers above; each worker stops when this
        # process is gone.
        from fhirflow.local.balancer import Balancer

        os.environ["FHIRFLOW_SERVE_SUPERVISOR"] = str(os.getpid())
        config = uvicorn.Config("fhirflow.local.gateway:serving_gateway", factory=True, workers=workers, **options)
        Balancer(config, on_listening=announce).run()
    return 0


def _check_port(host: str, port: int) -> None:
    """Say so in one line, before starting anything, when the port is taken (as uvicorn binds: SO_REUSEADDR)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror} (choose another --port)") from exc


def _use_dynamodb(args: argparse.Namespace) -> None:
    """The parity switch: the same embedded gateway on DynamoDB (DynamoDB Local with an endpoint)."""
    if args.dynamodb_endpoint:
        os.environ["FHIRFLOW_DYNAMODB_ENDPOINT"] = args.dynamodb_endpoint
        # DynamoDB Local accepts any credentials, but the SDK insists on having some.
        if not (os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")):
            os.environ["AWS_ACCESS_KEY_ID"] = os.environ["AWS_SECRET_ACCESS_KEY"] = "local"  # noqa: S105 (not a secret)
    if args.dynamodb_table:
        os.environ["FHIRFLOW_DYNAMODB_TABLE"] = args.dynamodb_table
        os.environ["FHIRFLOW_DYNAMODB_LEDGER_TABLE"] = f"{args.dynamodb_table}-ledger"
    from fhirflow.settings import Settings

    settings = Settings.from_env()
    if settings.dynamodb_endpoint:
        from fhirflow.adapters.aws import clients
        from fhirflow.adapters.aws.schema import ensure_tables

        dynamodb = clients.client("dynamodb", endpoint_url=settings.dynamodb_endpoint, region=settings.aws_region)
        ensure_tables(dynamodb, settings.dynamodb_table, settings.dynamodb_ledger_table)


def _uses_dev_issuer(auth: str) -> bool:
    """``--auth smart|rbac`` without a configured issuer trusts the development issuer."""
    if auth == "off":
        return False
    explicit = os.environ.get("FHIRFLOW_AUTH_DEV_ISSUER", "").strip().lower() in ("1", "true", "yes", "on")
    return explicit or not (os.environ.get("FHIRFLOW_AUTH_ISSUER") or os.environ.get("FHIRFLOW_AUTH_CONFIG"))


def _auth_banner(auth: str, dev_issuer: bool, data_dir: Path) -> str:
    if auth == "off":
        return "authorization OFF: loopback only; `--auth smart` turns SMART on"
    if dev_issuer:
        return (
            f"authorization {auth.upper()} with the development issuer; mint tokens with: "
            f"{own_command()} token --data-dir {shlex.quote(str(data_dir))} --scope 'patient/*.rs' --patient 123"
        )
    return f"authorization {auth.upper()}"


def own_command() -> str:
    """How to run this ``fhirflow`` from a shell in the current directory, as it can be typed:
    ``fhirflow`` when that is on PATH, else the script beside this Python (``.venv/bin/fhirflow``),
    else ``python -m fhirflow.cli``."""
    script = Path(sys.executable).parent / "fhirflow"
    on_path = shutil.which("fhirflow")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "fhirflow"
    if not script.is_file():
        return f"{shlex.quote(sys.executable)} -m fhirflow.cli"
    try:
        relative = str(script.absolute().relative_to(Path.cwd()))
    except ValueError:
        return shlex.quote(str(script))
    return shlex.quote(relative if "/" in relative else f"./{relative}")


def token_command(args: argparse.Namespace) -> int:
    """Mint an access token that an embedded server with the development issuer accepts."""
    from fhirflow.authz.devissuer import DevIssuer

    issuer = DevIssuer(Path(args.data_dir).resolve())
    print(
        issuer.mint(
            scope=" ".join(args.scope),
            patient=args.patient,
            fhir_user=args.fhir_user,
            tenant=args.tenant,
            subject=args.sub,
            client_id=args.client_id,
            groups=args.group or None,
            lifetime=args.lifetime,
        )
    )
    return 0


def import_command(args: argparse.Namespace) -> int:
    from fhirflow import importer

    jobs = max(1, args.jobs if args.jobs is not None else min(os.cpu_count() or 1, 4))
    pool = None
    if args.url:
        post = importer.http_poster(args.url, token=args.token)
    else:
        from fhirflow.local import importing

        os.environ["FHIRFLOW_DATA_DIR"] = str(Path(args.data_dir).resolve())
        os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
        os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
        if jobs > 1:
            pool = importing.embedded_pool(jobs)
            post = importing.post_in_worker
        else:
            post = importing.embedded_poster()
    try:
        report = importer.run_import(
            args.paths, post, jobs=jobs, pool=pool, batch_size=args.batch_size, progress=not args.no_progress
        )
    finally:
        if pool is not None:
            pool.shutdown()
    print(
        f"imported {report.resources} resources from {report.files} files in {report.seconds:.1f} s "
        f"({report.rate:.0f} resources/s); {report.failed_resources} failed"
    )
    for failure in report.failures[:50]:
        print(f"  {failure}")
    return 1 if report.failed_resources else 0


def export_command(args: argparse.Namespace) -> int:
    """Bulk export from a running server into a directory of NDJSON files."""
    from fhirflow import exporter

    level = f"/Group/{args.group}" if args.group else "/Patient" if args.patients else ""
    types = [t for value in args.type or [] for t in value.split(",") if t]
    try:
        report = exporter.run_export(
            args.url, Path(args.outdir), types=types, since=args.since, token=args.token, level=level
        )
    except exporter.ExportError as error:
        print(f"fhirflow export: {error}", file=sys.stderr)
        return 1
    print(f"exported {report.resources} resources in {len(report.files)} files to {args.outdir}")
    if report.errors:
        print(f"  {report.errors} OperationOutcomes in the error files")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every command and option, each with its help text (``fhirflow <command> --help``)."""
    from importlib.metadata import version

    parser = argparse.ArgumentParser(prog="fhirflow", description="fhirflow FHIR R4 server")
    parser.add_argument("--version", action="version", version=f"fhirflow {version('fhirflow')}")
    commands = parser.add_subparsers(dest="command", required=True)
    data_dir_help = "the embedded server's data directory (default: $FHIRFLOW_DATA_DIR or .fhirflow)"
    serve_parser = commands.add_parser("serve", help="run the embedded server on one machine")
    serve_parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    serve_parser.add_argument(
        "--data-dir", default=os.environ.get("FHIRFLOW_DATA_DIR", ".fhirflow"), help=data_dir_help
    )
    serve_parser.add_argument(
        "--store",
        choices=["sqlite", "dynamodb"],
        default="sqlite",
        help="where resources live: sqlite in --data-dir (default) or DynamoDB",
    )
    serve_parser.add_argument(
        "--dynamodb-endpoint",
        default=os.environ.get("FHIRFLOW_DYNAMODB_ENDPOINT"),
        help="with --store dynamodb: DynamoDB Local's URL (its tables are created when missing)",
    )
    serve_parser.add_argument("--dynamodb-table", default=None, help="with --store dynamodb: the table name")
    serve_parser.add_argument(
        "--max-body-bytes", type=int, default=None, help="larger request bodies get 413 (default: 16 MiB)"
    )
    serve_parser.add_argument(
        "--api-gateway-rules", action="store_true", help="apply API Gateway REST's and Lambda's limits and encodings"
    )
    serve_parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ["FHIRFLOW_WORKERS"]) if os.environ.get("FHIRFLOW_WORKERS") else None,
        help="server processes (default: the number of cores, at most 4)",
    )
    serve_parser.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="the server log's level (default: warning)",
    )
    serve_parser.add_argument("--access-log", action="store_true", help="log one line per request")
    serve_parser.add_argument(
        "--auth",
        choices=["off", "smart", "rbac"],
        default=os.environ.get("FHIRFLOW_AUTH", "off"),
        help="authorization: off (loopback only), smart (SMART scopes) or rbac (token groups); "
        "without FHIRFLOW_AUTH_ISSUER/FHIRFLOW_AUTH_CONFIG the development issuer is trusted (see `fhirflow token`)",
    )
    serve_parser.add_argument("--stop-with-parent", type=int, default=None, help=argparse.SUPPRESS)
    serve_parser.set_defaults(func=serve)
    import_parser = commands.add_parser("import", help="load transaction/batch Bundles and NDJSON files")
    import_parser.add_argument("paths", nargs="+", type=Path, help="files or directories (.json, .ndjson)")
    import_parser.add_argument(
        "--url", help="a running server's base URL; without it, the embedded store in --data-dir"
    )
    import_parser.add_argument(
        "--data-dir", default=os.environ.get("FHIRFLOW_DATA_DIR", ".fhirflow"), help=data_dir_help
    )
    import_parser.add_argument("--token", default=os.environ.get("FHIRFLOW_TOKEN"), help="bearer token for --url")
    import_parser.add_argument("--batch-size", type=int, default=500, help="resources per batch Bundle for NDJSON")
    import_parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="bundles in flight at once (default: the number of cores, at most 4); "
        "embedded: that many worker processes",
    )
    import_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    import_parser.set_defaults(func=import_command)
    export_parser = commands.add_parser("export", help="bulk export from a running server into NDJSON files")
    export_parser.add_argument("outdir", help="directory for the NDJSON files and the manifest")
    export_parser.add_argument(
        "--url",
        default=os.environ.get("FHIRFLOW_URL", "http://127.0.0.1:8080"),
        help="the server's base URL (default: $FHIRFLOW_URL or http://127.0.0.1:8080)",
    )
    export_parser.add_argument("--type", action="append", help="resource types (repeatable or comma-separated)")
    export_parser.add_argument("--since", help="only resources updated at or after this FHIR instant")
    export_parser.add_argument("--patients", action="store_true", help="Patient-level export (/Patient/$export)")
    export_parser.add_argument("--group", help="Group-level export of this Group id")
    export_parser.add_argument("--token", default=os.environ.get("FHIRFLOW_TOKEN"), help="bearer token")
    export_parser.set_defaults(func=export_command)
    token_parser = commands.add_parser("token", help="mint an access token from the embedded development issuer")
    token_parser.add_argument(
        "--data-dir", default=os.environ.get("FHIRFLOW_DATA_DIR", ".fhirflow"), help=data_dir_help
    )
    token_parser.add_argument(
        "--scope", action="append", required=True, help="SMART scopes, e.g. 'patient/*.rs' (repeatable)"
    )
    token_parser.add_argument("--patient", help="the patient launch context (a Patient id)")
    token_parser.add_argument("--fhir-user", help="the fhirUser claim, e.g. Practitioner/123")
    token_parser.add_argument("--tenant", help="bind the token to a tenant (the 'tenant' claim)")
    token_parser.add_argument("--sub", default="dev-user", help="the token's subject (default: dev-user)")
    token_parser.add_argument("--client-id", default="fhirflow-cli", help="the client_id claim (default: fhirflow-cli)")
    token_parser.add_argument("--group", action="append", help="a group for --auth rbac (repeatable)")
    token_parser.add_argument("--lifetime", type=int, default=3600, help="seconds until the token expires")
    token_parser.set_defaults(func=token_command)
    rebuild_parser = commands.add_parser(
        "rebuild-index", help="fill the OpenSearch index from the DynamoDB table (resumable; fhirflow/index_rebuild.py)"
    )
    rebuild_parser.add_argument("--store", choices=["dynamodb"], default="dynamodb", help="the system of record")
    rebuild_parser.add_argument("--table", help="the resource table (default: $FHIRFLOW_DYNAMODB_TABLE)")
    rebuild_parser.add_argument("--dynamodb-endpoint", help="e.g. DynamoDB Local's URL (default: AWS)")
    rebuild_parser.add_argument("--opensearch-url", help="the domain's endpoint (default: $FHIRFLOW_OPENSEARCH_URL)")
    rebuild_parser.add_argument("--index", help="the index to fill (default: $FHIRFLOW_OPENSEARCH_INDEX)")
    rebuild_parser.add_argument("--blob-bucket", help="where large bodies are (default: $FHIRFLOW_BLOB_BUCKET)")
    rebuild_parser.add_argument("--tenant", help="rebuild this tenant's resources only")
    rebuild_parser.add_argument("--segments", type=int, default=4, help="parallel Scan segments (default: 4)")
    rebuild_parser.add_argument("--page-size", type=int, default=500, help="items per Scan page (default: 500)")
    rebuild_parser.add_argument(
        "--checkpoint", help="the checkpoint file; an existing one resumes (default: rebuild-<table>-<index>.json)"
    )
    rebuild_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    rebuild_parser.set_defaults(func=_rebuild_index)
    return parser


def _rebuild_index(args: argparse.Namespace) -> int:
    from fhirflow.index_rebuild import rebuild_command

    return rebuild_command(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except UsageError as error:
        print(f"fhirflow {args.command}: {error}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
