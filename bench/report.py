"""Rows of the results table, and the table itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from statistics import median
from typing import Any

from bench.wrk import Result

COLUMNS = ("backend", "scenario", "imagehook", "bare", "ratio", "p50", "p99", "target", "notes")


@dataclass
class Row:
    backend: str
    scenario: str
    imagehook: str
    bare: str = ""
    ratio: str = ""
    p50: str = ""
    p99: str = ""
    target: str = ""
    notes: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # the numbers behind the row, for --json


def ms(value: float) -> str:
    if value != value:  # NaN: nothing was measured
        return "n/a"
    return f"{value:.2f} ms" if value < 10 else f"{value:,.0f} ms"


def rate(value: float, unit: str = "req/s") -> str:
    return f"{value:,.0f} {unit}"


def compared(
    backend: str,
    scenario: str,
    pairs: list[tuple[Result, Result]],
    *,
    unit: str = "req/s",
    notes: Sequence[str] = (),
    target: str = "",
) -> Row:
    """A gateway-vs-bare row: medians over the runs; the ratio is the median of each run's own ratio."""
    gateway, bare = [g for g, _ in pairs], [b for _, b in pairs]
    notes = list(notes)
    for name, results in (("imagehook", gateway), ("bare", bare)):
        failed = sum(r.non_2xx for r in results)
        errors = sum(r.socket_errors for r in results)
        if failed or errors:
            notes.append(f"{name}: {failed:,} non-2xx answers, {errors:,} socket errors")
    if len(pairs) > 1:
        notes.append(f"imagehook runs: {', '.join(f'{g.rps:,.0f}' for g in gateway)}")
    return Row(
        backend,
        scenario,
        rate(median(g.rps for g in gateway), unit),
        rate(median(b.rps for b in bare), unit),
        f"{median(g.rps / b.rps for g, b in pairs):.3f}",
        ms(median(g.p50_ms for g in gateway)),
        ms(median(g.p99_ms for g in gateway)),
        target=target,
        notes="; ".join(notes),
        data={"imagehook": [vars(g) for g in gateway], "bare": [vars(b) for b in bare]},
    )


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = (str(getattr(row, name)).replace("|", "\\|") or "—" for name in COLUMNS)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def as_dict(row: Row) -> dict[str, Any]:
    return {f.name: getattr(row, f.name) for f in fields(row)}
