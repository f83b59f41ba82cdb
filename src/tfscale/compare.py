"""Two runs, point by point: did anything get slower or faster beyond both runs' noise?

A change is flagged only when the interquartile ranges of the two measurements do not
overlap: a 3% difference between two noisy points is not a regression.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

from tfscale.plan import Point
from tfscale.progress import describe
from tfscale.results import point_of


@dataclass(frozen=True)
class Change:
    point: Point
    median_a_s: float
    median_b_s: float
    verdict: str  # regression | improvement | within noise

    @property
    def ratio(self) -> float:
        """time B / time A: above 1 is slower."""
        return self.median_b_s / self.median_a_s


def compare_runs(rows_a: list[dict], rows_b: list[dict]) -> list[Change]:
    by_id = {r["point_id"]: r for r in rows_a if r.get("status") == "ok"}
    changes = []
    for b in rows_b:
        a = by_id.get(b["point_id"])
        if a is None or b.get("status") != "ok":
            continue
        if b["q1_s"] > a["q3_s"]:
            verdict = "regression"
        elif b["q3_s"] < a["q1_s"]:
            verdict = "improvement"
        else:
            verdict = "within noise"
        changes.append(Change(point_of(b), a["median_s"], b["median_s"], verdict))
    return sorted(
        changes, key=lambda c: (c.point.group, c.point.dtype, c.point.data, c.point.flops)
    )


def summary_line(changes: list[Change]) -> str:
    count = {v: sum(c.verdict == v for c in changes) for v in ("regression", "improvement")}
    worst = max(changes, key=lambda c: c.ratio)
    return (
        f"{len(changes)} points compared: {count['regression']} regressions, "
        f"{count['improvement']} improvements, "
        f"{len(changes) - sum(count.values())} within noise; "
        f"largest slowdown {worst.ratio:.2f}x ({describe(worst.point)})"
    )


HEADER = (
    "group",
    "m",
    "k",
    "n",
    "dtype",
    "data",
    "A median (us)",
    "B median (us)",
    "B/A",
    "verdict",
)


def _cells(change: Change) -> tuple:
    p = change.point
    return (
        *(p.group, p.m, p.k, p.n, p.dtype, p.data),
        f"{change.median_a_s * 1e6:,.2f}",
        f"{change.median_b_s * 1e6:,.2f}",
        f"{change.ratio:.3f}",
        change.verdict,
    )


def markdown(changes: list[Change], run_a, run_b) -> str:
    lines = [
        f"# {run_b} vs {run_a}",
        "",
        summary_line(changes),
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    lines += ["| " + " | ".join(str(c) for c in _cells(change)) + " |" for change in changes]
    return "\n".join(lines) + "\n"


def to_csv(changes: list[Change]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["point_id", *HEADER[:6], "median_a_s", "median_b_s", "ratio", "verdict"])
    for change in changes:
        p = change.point
        writer.writerow(
            [
                p.point_id,
                p.group,
                p.m,
                p.k,
                p.n,
                p.dtype,
                p.data,
                change.median_a_s,
                change.median_b_s,
                f"{change.ratio:.6g}",
                change.verdict,
            ]
        )
    return buffer.getvalue()


def print_table(changes: list[Change], run_a, run_b) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{run_b} vs {run_a}")
    for column in HEADER:
        table.add_column(
            column, justify="right" if column[0].isupper() or column in "mkn" else "left"
        )
    colours = {"regression": "red", "improvement": "green"}
    for change in changes:
        style = colours.get(change.verdict)
        table.add_row(*(str(c) for c in _cells(change)), style=style)
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=160)
    console.print(table)
