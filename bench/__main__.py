"""``python -m bench``: run the benchmarks and print one table (``--help`` for the options)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from bench import ceiling, coldstart, crud
from bench.loadgen import AsyncioLoadGenerator, LoadGenerator
from bench.report import Row, missed, render, write_json
from bench.wrk import WrkLoadGenerator, wrk_path

BENCHES = (
    "loadgen",
    "crud",
    "import",
    "coldstart",
    "authz",
    "search",
    "subscriptions",
    "subscriptions-delivery",
    "bombs",
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help=f"run only these benchmarks: {', '.join(BENCHES)} (repeatable or comma-separated)",
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (under a minute); numbers are rough")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument(
        "--generator",
        choices=("auto", "python", "wrk"),
        default="auto",
        help="load generator for the HTTP benchmarks: wrk if installed (auto), else raw asyncio",
    )
    parser.add_argument(
        "--store",
        default="sqlite",
        help="the server's store (fhirflow serve --store); with sqlite, crud also runs on DynamoDB Local",
    )
    parser.add_argument(
        "--no-dynamodb",
        action="store_true",
        help="crud: skip the leg on DynamoDB Local (started for the run when Java is installed)",
    )
    parser.add_argument("--dynamodb-endpoint", metavar="URL", help="passed to fhirflow serve (DynamoDB Local)")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for fhirflow serve, e.g. --server-arg=--max-body-bytes=1000000 (repeatable)",
    )
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    args = parser.parse_args(argv)
    selected = [name.strip() for value in args.only for name in value.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    args.selected = [name for name in BENCHES if name in selected] if selected else list(BENCHES)
    if args.generator == "wrk" and wrk_path() is None:
        parser.error("--generator wrk: wrk is not installed (apt-get install wrk)")
    return args


def generators(choice: str) -> list[LoadGenerator]:
    """The chosen generator first, then the others that are available (their ceilings are shown too)."""
    python: LoadGenerator = AsyncioLoadGenerator()
    found = wrk_path()
    wrk: LoadGenerator | None = WrkLoadGenerator(found) if found else None
    if wrk is not None and choice in ("auto", "wrk"):
        return [wrk, python]
    return [python] if wrk is None else [python, wrk]


def run_one(
    name: str, available: list[LoadGenerator], options: crud.ServerOptions, *, quick: bool, dynamodb: bool = True
) -> list[Row]:
    if name == "loadgen":
        return ceiling.run(available, quick=quick)
    if name == "crud":
        return crud.run(available[0], options, quick=quick, dynamodb=dynamodb)
    if name == "authz":
        from bench import authz  # in-process, no server: imported only when it runs

        return authz.run(quick=quick)
    if name == "import":
        from bench import load  # fhirflow import of ../shared/synthea

        return load.run(quick=quick, dynamodb=dynamodb)
    if name == "subscriptions-delivery":
        from bench import subscription_delivery  # commit → webhook receipt over the real server

        return subscription_delivery.run(quick=quick)
    if name == "subscriptions":
        from bench import subscriptions  # in-process matching, no server

        return subscriptions.run(quick=quick)
    if name == "search":
        from bench import search  # builds ~200k resources (a few minutes); --quick uses fewer

        return search.run(quick=quick)
    if name == "bombs":
        from bench import bombs  # /metadata while resource bombs go off (issue 14)

        return bombs.run(quick=quick)
    return coldstart.run(quick=quick)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    console = Console()
    if not console.is_terminal:  # piped or in CI: do not squeeze the table into 80 columns
        console = Console(width=180)
    available = generators(args.generator)
    options = crud.ServerOptions(
        store=args.store, dynamodb_endpoint=args.dynamodb_endpoint, extra_args=tuple(args.server_arg)
    )
    rows: list[Row] = []
    started = time.monotonic()
    failures: list[str] = []
    for name in args.selected:
        with console.status(f"bench: {name}…"):
            try:
                rows += run_one(name, available, options, quick=args.quick, dynamodb=not args.no_dynamodb)
            except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
                failures.append(name)
                console.print(f"[bold red]bench {name} failed:[/] {error}", markup=True, highlight=False)
    elapsed = time.monotonic() - started
    mode = "quick" if args.quick else "full"
    # The load average tells how much the neighbours took from a 2-core machine while this ran.
    title = (
        f"fhirflow bench ({mode}, generator {available[0].name}, {elapsed:.0f} s, load avg {os.getloadavg()[0]:.1f})"
    )
    render(rows, title, console)
    if args.json:
        settings = {
            "quick": args.quick,
            "generator": available[0].name,
            "server_args": list(options.args()),
            "benches": args.selected,
        }
        write_json(args.json, rows, settings)
        console.print(f"wrote {args.json}")
    misses = missed(rows)
    if misses:
        console.print(f"{len(misses)} target(s) missed: " + ", ".join(f"{r.bench} {r.case}" for r in misses))
    if failures:
        return 2
    return 1 if args.strict and misses else 0


if __name__ == "__main__":
    sys.exit(main())
