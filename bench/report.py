"""Benchmark rows, their targets, the table printed with rich and the JSON file."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.loadgen import LoadResult


@dataclass(frozen=True)
class Target:
    text: str
    passed: bool


def at_least(value: float, threshold: float, unit: str) -> Target:
    return Target(f"≥ {threshold:,.0f} {unit}", value >= threshold)


def at_most(value: float, threshold: float, unit: str) -> Target:
    return Target(f"≤ {threshold:g} {unit}", value <= threshold)


@dataclass(frozen=True)
class Row:
    bench: str
    case: str
    median_ms: float | None = None
    p99_ms: float | None = None
    throughput: float | None = None
    samples: int | None = None
    errors: int = 0
    target: Target | None = None
    note: str = ""

    @property
    def passed(self) -> bool | None:
        """None without a target; a run with errors misses its target whatever its speed."""
        return None if self.target is None else self.target.passed and not self.errors

    @classmethod
    def from_load(
        cls, bench: str, case: str, result: LoadResult, *, target: Target | None = None, note: str = ""
    ) -> Row:
        if result.first_error:
            note = f"{note}; first error: {result.first_error[:120]}".lstrip("; ")
        return cls(
            bench=bench,
            case=case,
            median_ms=result.median_ms,
            p99_ms=result.p99_ms,
            throughput=result.throughput,
            samples=result.completed,
            errors=result.errors,
            target=target,
            note=note,
        )


def _ms(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:.2f} ms" if value < 100 else f"{value:.0f} ms"


def _verdict(row: Row) -> str:
    if row.passed is None:
        return ""
    if row.errors:
        return "[bold red]MISS[/] (errors)"
    return "[bold green]PASS[/]" if row.passed else "[bold red]MISS[/]"


def render(rows: list[Row], title: str, console: Console | None = None) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("bench")
    table.add_column("case")
    table.add_column("median", justify="right")
    table.add_column("p99", justify="right")
    table.add_column("throughput", justify="right")
    table.add_column("n", justify="right")
    table.add_column("errors", justify="right")
    table.add_column("target")
    table.add_column("result")
    table.add_column("note")
    bench = ""
    for row in rows:
        if bench and row.bench != bench:
            table.add_section()
        bench = row.bench
        table.add_row(
            row.bench,
            row.case,
            _ms(row.median_ms),
            _ms(row.p99_ms),
            "—" if row.throughput is None else f"{row.throughput:,.0f}/s",
            "—" if row.samples is None else f"{row.samples:,}",
            str(row.errors) if row.errors else "",
            row.target.text if row.target else "",
            _verdict(row),
            row.note,
        )
    (console or Console()).print(table)


def missed(rows: list[Row]) -> list[Row]:
    return [row for row in rows if row.passed is False]


def environment() -> dict[str, Any]:
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
    }


def write_json(path: Path, rows: list[Row], settings: dict[str, Any]) -> None:
    def clean(value: Any) -> Any:
        return None if isinstance(value, float) and math.isnan(value) else value

    document = {
        "environment": environment(),
        "settings": settings,
        "results": [{key: clean(value) for key, value in asdict(row).items()} | {"passed": row.passed} for row in rows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
