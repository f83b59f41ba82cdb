"""The communication in a sweep: all-reduce bandwidth curves and what a training step spends
on its gradient all-reduce (driver side, pure functions over rows).

- An `allreduce` curve is summarised nccl-tests style (algbw = bytes / time, busbw = algbw *
  2(r-1)/r) and fitted with the latency-bandwidth model time ~= alpha + bytes / algbw.
- A `train_step` row of a group with more than one replica carries its breakdown, measured at
  the same point with the same protocol: `compute_s` (the step without its all-reduce) and
  `allreduce_s` (the all-reduce of dW alone). What the step would cost without overlap is
  their sum; the part of the all-reduce hidden behind compute is `compute_s + allreduce_s -
  median_s`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np


def busbw_factor(replicas: int) -> float:
    """busbw / algbw: the share of the buffer each link carries in a ring all-reduce."""
    return 2 * (replicas - 1) / replicas if replicas > 1 else 0.0


@dataclass(frozen=True)
class LinkModel:
    """time ~= alpha + bytes / (algbw * 1e9), fitted to one group's allreduce curve."""

    group: str
    dtype: str
    replicas: int
    alpha_s: float
    algbw_gbps: float
    max_rel_residual: float
    lo_bytes: int
    hi_bytes: int

    @property
    def busbw_gbps(self) -> float:
        return self.algbw_gbps * busbw_factor(self.replicas)

    def time(self, nbytes: float) -> float:
        return self.alpha_s + nbytes / (self.algbw_gbps * 1e9)


def allreduce_rows(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Ok allreduce rows per (group, dtype), by buffer size."""
    out: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        if row.get("status") == "ok" and row.get("op") == "allreduce":
            out[(row["group"], row["dtype"])].append(row)
    return {key: sorted(value, key=lambda r: r["bytes"]) for key, value in out.items()}


def busbw(row: dict) -> float:
    """A row's bus bandwidth in GB/s (derived when a row lacks the field)."""
    algbw = row["bytes"] / row["median_s"] / 1e9
    return algbw * busbw_factor(row["replicas"])


def fit_link(series: list[dict]) -> LinkModel | None:
    """The latency-bandwidth model of one allreduce curve, fitted in relative error (small
    and large buffers count alike); None with fewer than 3 sizes."""
    if len(series) < 3:
        return None
    size = np.array([r["bytes"] for r in series], dtype=float)
    time = np.array([r["median_s"] for r in series], dtype=float)
    design = np.stack([np.ones_like(size), size], axis=1) / time[:, None]
    (alpha, inverse), *_ = np.linalg.lstsq(design, np.ones_like(time), rcond=None)
    alpha, inverse = max(float(alpha), 0.0), max(float(inverse), 1e-30)
    residual = (alpha + inverse * size - time) / time
    first = series[0]
    return LinkModel(
        first["group"],
        first["dtype"],
        first["replicas"],
        alpha,
        1 / inverse / 1e9,
        float(np.abs(residual).max()),
        int(size.min()),
        int(size.max()),
    )


def link_models(rows: list[dict]) -> dict[tuple[str, str], LinkModel]:
    models = {key: fit_link(series) for key, series in allreduce_rows(rows).items()}
    return {key: model for key, model in models.items() if model is not None}


@dataclass(frozen=True)
class Breakdown:
    """One training step split into compute and all-reduce, both measured."""

    step_s: float
    compute_s: float
    allreduce_s: float

    @property
    def overlap_s(self) -> float:
        """The all-reduce time hidden behind compute: compute + all-reduce - step, between 0
        and the all-reduce itself (each part is a median of its own samples)."""
        return min(max(self.compute_s + self.allreduce_s - self.step_s, 0.0), self.allreduce_s)

    @property
    def allreduce_share(self) -> float:
        """The all-reduce's share of the step, counting only what compute did not hide."""
        return min(max(self.allreduce_s - self.overlap_s, 0.0) / self.step_s, 1.0)

    @property
    def exposed_s(self) -> float:
        return self.allreduce_s - self.overlap_s


def breakdown(row: dict) -> Breakdown | None:
    """The breakdown of an ok train_step row that has one (groups of several replicas)."""
    if row.get("status") != "ok" or row.get("compute_s") is None:
        return None
    if row.get("allreduce_s") is None:
        return None
    return Breakdown(row["median_s"], row["compute_s"], row["allreduce_s"])


def communication_s(row: dict, links: dict[tuple[str, str], LinkModel]) -> tuple[float | None, str]:
    """The all-reduce time of a training step's dW at this row, and where it came from: the
    same run's allreduce sweep of the group (its model at grad_bytes, when the sweep covers
    that size), else the row's own measured breakdown, else nothing."""
    link = links.get((row["group"], row["dtype"]))
    grad = row.get("grad_bytes") or 0
    if link is not None and link.lo_bytes <= grad <= link.hi_bytes:
        return link.time(grad), "allreduce sweep"
    if row.get("allreduce_s") is not None:
        return row["allreduce_s"], "measured breakdown"
    return None, "fitted"
