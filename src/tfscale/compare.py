"""Two runs, point by point: did anything get slower or faster beyond both runs' noise?

A change is flagged only when the interquartile ranges of the two measurements do not
overlap: a 3% difference between two noisy points is not a regression.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Change:
    point_id: str
    group: str
    m: int
    k: int
    n: int
    dtype: str
    data: str
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
        changes.append(
            Change(
                b["point_id"],
                b["group"],
                b["m"],
                b["k"],
                b["n"],
                b["dtype"],
                b["data"],
                a["median_s"],
                b["median_s"],
                verdict,
            )
        )
    return sorted(changes, key=lambda c: (c.group, c.dtype, c.data, c.m * c.k * c.n))


def summary_line(changes: list[Change]) -> str:
    count = {v: sum(c.verdict == v for c in changes) for v in ("regression", "improvement")}
    worst = max(changes, key=lambda c: c.ratio)
    return (
        f"{len(changes)} points compared: {count['regression']} regressions, "
        f"{count['improvement']} improvements, "
        f"{len(changes) - sum(count.values())} within noise; "
        f"largest slowdown {worst.ratio:.2f}x ({worst.group} m={worst.m} k={worst.k} n={worst.n})"
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
    return (
        change.group,
        change.m,
        change.k,
        change.n,
        change.dtype,
        change.data,
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
    writer.writerow([*asdict(changes[0]), "ratio"])
    for change in changes:
        writer.writerow([*asdict(change).values(), f"{change.ratio:.6g}"])
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
