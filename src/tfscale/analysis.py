"""From rows to answers: throughput, speedup, scaling efficiency, payoff points, cost models.

Pure functions over result rows (dicts as stored in results.jsonl); no Ray, no TensorFlow.
Definitions follow DESIGN.md "Analysis definitions".
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from tfscale.groups import parse_group, workers_of
from tfscale.plan import varying_dimension


def ok_rows(rows: list[dict]) -> list[dict]:
    return [row for row in rows if row.get("status") == "ok"]


def x_axis(rows: list[dict]) -> str:
    """The one of m, k, n that varies across the rows, else flops."""
    return varying_dimension(rows)


def series_key(row: dict) -> tuple:
    """Rows of one curve: same group, dtype and data mode (other coordinates vary)."""
    return (row["group"], row["dtype"], row["data"])


def curves(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Ok rows per curve, ordered by the x axis."""
    rows = ok_rows(rows)
    axis = x_axis(rows) if rows else "flops"
    out: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        out[series_key(row)].append(row)
    return {key: sorted(value, key=lambda r: (r[axis], r["flops"])) for key, value in out.items()}


def label(group: str, emulated: bool) -> str:
    return f"{group} (emulated)" if emulated else group


def _coordinates(row: dict) -> tuple:
    return (row["m"], row["k"], row["n"], row["dtype"], row["data"])


@dataclass(frozen=True)
class Comparison:
    """B against A at one point: speedup = time_A / time_B, and whether the IQRs separate."""

    x: float
    speedup: float
    certain: bool


def compare(rows: list[dict], a: str, b: str, dtype: str, data: str) -> list[Comparison]:
    rows = ok_rows(rows)
    series = curves(rows)
    axis = x_axis(rows) if rows else "flops"
    return _compare(series.get((a, dtype, data), []), series.get((b, dtype, data), []), axis)


def _compare(series_a: list[dict], series_b: list[dict], axis: str) -> list[Comparison]:
    by_a = {_coordinates(r): r for r in series_a}
    out = []
    for row_b in series_b:
        row_a = by_a.get(_coordinates(row_b))
        if row_a is None:
            continue
        separate = row_b["q3_s"] < row_a["q1_s"] or row_a["q3_s"] < row_b["q1_s"]
        out.append(Comparison(row_b[axis], row_a["median_s"] / row_b["median_s"], separate))
    return sorted(out, key=lambda c: c.x)


@dataclass(frozen=True)
class Verdict:
    """Does B pay off over A, from which swept size on, and how sure are we."""

    a: str
    b: str
    dtype: str
    data: str
    axis: str
    payoff_x: float | None
    lo: float
    hi: float
    speedup_at_hi: float
    certain: bool
    emulated: bool
    predicted_x: float | None = None  # where the two cost models cross, if they fit well

    def sentence(self) -> str:
        tag = " (emulated)" if self.emulated else ""
        if self.payoff_x is None:
            text = (
                f"{self.b}{tag} does not pay off over {self.a} in "
                f"{self.axis} = [{self.lo:,.0f}, {self.hi:,.0f}]"
            )
        else:
            sure = "" if self.certain else " (uncertain: IQRs overlap)"
            text = (
                f"{self.b}{tag} beats {self.a} from {self.axis} = {self.payoff_x:,.0f} on; "
                f"{self.speedup_at_hi:.2f}x at {self.hi:,.0f}{sure}"
            )
        return text + self.prediction()

    def prediction(self) -> str:
        if self.predicted_x is None:
            return ""
        where = "beyond the sweep" if self.predicted_x > self.hi else "between swept sizes"
        if self.predicted_x < self.lo:
            where = "below the sweep"
        return f"; models cross at {self.axis} ≈ {self.predicted_x:,.0f} (predicted, {where})"


def payoff(comparisons: list[Comparison]) -> tuple[float | None, bool]:
    """The smallest swept size from which B is faster at every larger size, and its certainty."""
    start = None
    for i in range(len(comparisons) - 1, -1, -1):
        if comparisons[i].speedup > 1:
            start = i
        else:
            break
    if start is None:
        return None, all(c.certain for c in comparisons)
    return comparisons[start].x, all(c.certain for c in comparisons[start:])


def pairs(groups: list[str], baseline: str) -> list[tuple[str, str]]:
    """Meaningful (A, B) pairs: each group vs the baseline; gpu vs cpu; mirrored:k vs gpu and vs
    mirrored:j for j < k; multiworker:NxK vs mirrored:K (cpu for K=0) and vs gpu."""
    out = [(baseline, g) for g in groups if g != baseline]
    kinds = {g: parse_group(g) for g in groups}
    if "gpu" in groups and "cpu" in groups:
        out.append(("cpu", "gpu"))
    for g, (kind, k) in kinds.items():
        if kind == "mirrored":
            if "gpu" in groups:
                out.append(("gpu", g))
            out += [(h, g) for h, (kind_h, j) in kinds.items() if kind_h == "mirrored" and j < k]
        elif kind == "multiworker":
            _, per_worker = workers_of(g)
            single = "cpu" if per_worker == 0 else f"mirrored:{per_worker}"
            out += [(h, g) for h in (single, "gpu") if h in groups]
    return list(dict.fromkeys(out))


def verdicts(rows: list[dict], groups: list[str], baseline: str) -> list[Verdict]:
    rows = ok_rows(rows)
    if not rows:
        return []
    axis = x_axis(rows)
    series = curves(rows)
    models = {key: fit_cost_model(value) for key, value in series.items()}  # once per curve
    emulated = {r["group"] for r in rows if r.get("emulated")}
    modes = sorted({(r["dtype"], r["data"]) for r in rows})
    out = []
    for a, b in pairs(groups, baseline):
        for dtype, data in modes:
            key_a, key_b = (a, dtype, data), (b, dtype, data)
            comparisons = _compare(series.get(key_a, []), series.get(key_b, []), axis)
            if not comparisons:
                continue
            x, certain = payoff(comparisons)
            first = series[key_b][0]
            out.append(
                Verdict(
                    a=a,
                    b=b,
                    dtype=dtype,
                    data=data,
                    axis=axis,
                    payoff_x=x,
                    lo=comparisons[0].x,
                    hi=comparisons[-1].x,
                    speedup_at_hi=comparisons[-1].speedup,
                    certain=certain,
                    emulated=bool({a, b} & emulated),
                    # flops per unit of x, constant along a 1-D sweep
                    predicted_x=predicted_crossover(
                        models[key_a], models[key_b], first["flops"] / first[axis]
                    ),
                )
            )
    return out


def predicted_crossover(
    model_a: CostModel | None, model_b: CostModel | None, flops_per_x: float
) -> float | None:
    """Where B's fitted time drops below A's (x units), if both models fit and they cross."""
    if model_a is None or model_b is None or not (model_a.fits_well and model_b.fits_well):
        return None
    slower_per_gflop = 1 / model_a.peak_gflops - 1 / model_b.peak_gflops
    if slower_per_gflop <= 0 or model_b.t0_s <= model_a.t0_s:
        return None  # B never overtakes A, or is ahead everywhere
    crossing_flops = (model_b.t0_s - model_a.t0_s) / slower_per_gflop * 1e9
    return crossing_flops / flops_per_x


def scaling_efficiency(
    rows: list[dict], group: str, dtype: str, data: str
) -> list[tuple[float, float]]:
    """(x, speedup over one device / replicas) at each common point: mirrored:k over gpu,
    multiworker:NxK over gpu, multiworker:Nx0 over cpu."""
    kind, replicas = parse_group(group)
    if kind == "mirrored" or (kind == "multiworker" and workers_of(group)[1] > 0):
        single = "gpu"
    elif kind == "multiworker":
        single = "cpu"
    else:
        return []
    return [(c.x, c.speedup / replicas) for c in compare(rows, single, group, dtype, data)]


@dataclass(frozen=True)
class CostModel:
    """time ~= t0 + flops / peak, fitted to the medians of one curve."""

    t0_s: float
    peak_gflops: float
    max_rel_residual: float
    points: int

    POOR_FIT = 0.25  # a residual over 25% of the measured time: say so, predict nothing

    @property
    def fits_well(self) -> bool:
        return self.max_rel_residual <= self.POOR_FIT

    def predict(self, flops: float) -> float:
        return self.t0_s + flops / (self.peak_gflops * 1e9)


def fit_cost_model(rows: list[dict]) -> CostModel | None:
    """time = t0 + flops / peak, fitted in relative error (small and large sizes count alike)
    and robustly: Huber weights, refitted a few times, so one noisy point cannot drag the
    model. None with fewer than 3 rows."""
    if len(rows) < 3:
        return None
    work = np.array([r["flops"] for r in rows], dtype=float)
    time = np.array([r["median_s"] for r in rows], dtype=float)
    design = np.stack([np.ones_like(work), work], axis=1) / time[:, None]
    weights = np.ones_like(time)
    for _ in range(5):
        (t0, inverse_peak), *_ = np.linalg.lstsq(design * weights[:, None], weights, rcond=None)
        t0, inverse_peak = max(t0, 0.0), max(inverse_peak, 1e-30)
        residual = (t0 + work * inverse_peak - time) / time
        scale = 1.5 * max(float(np.median(np.abs(residual))), 1e-3)
        weights = np.sqrt(1 / np.maximum(1.0, np.abs(residual) / scale))
    return CostModel(
        float(t0), float(1 / inverse_peak / 1e9), float(np.abs(residual).max()), len(rows)
    )


def intensity(row: dict) -> float:
    """Arithmetic intensity: FLOP per byte of minimum traffic."""
    return row["flops"] / row["bytes"]
