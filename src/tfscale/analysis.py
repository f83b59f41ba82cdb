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
from tfscale.results import point_of


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
    """B against A at one point: speedup = time_A / time_B, and whether the IQRs separate.
    low..high: the speedups the two IQRs allow (A's q1 / B's q3 .. A's q3 / B's q1), drawn
    around the curve so noise is not read as signal."""

    x: float
    speedup: float
    certain: bool
    low: float
    high: float


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
        out.append(
            Comparison(
                row_b[axis],
                row_a["median_s"] / row_b["median_s"],
                separate,
                low=row_a["q1_s"] / row_b["q3_s"],
                high=row_a["q3_s"] / row_b["q1_s"],
            )
        )
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
    network_gbps: float | None = None  # set where B's network term alone keeps it behind A

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
        return text + self.prediction() + self.network()

    def network(self) -> str:
        if self.network_gbps is None:
            return ""
        return (
            f"; moving the data over the network (fitted {self.network_gbps:.3g} GB/s) costs "
            f"more than {self.b}'s compute saves: no size pays off"
        )

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
    models = cost_models(series)
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
            network_a, network_b = network_per_flop(series[key_a]), network_per_flop(series[key_b])
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
                        models[key_a],
                        models[key_b],
                        first["flops"] / first[axis],
                        network_a,
                        network_b,
                    ),
                    network_gbps=network_bound(models[key_a], models[key_b], network_a, network_b),
                )
            )
    return out


def network_bound(
    model_a: CostModel | None,
    model_b: CostModel | None,
    network_a: float | None,
    network_b: float | None,
) -> float | None:
    """B's fitted network bandwidth where B computes faster per flop than A but its network
    term makes it slower at every size (the answer to "what does the network cost"); else None."""
    if model_a is None or model_b is None or not (model_a.fits_well and model_b.fits_well):
        return None
    if network_a is None or not network_b or model_b.network_gbps is None:
        return None
    a = model_a.seconds_per_flop(network_a)
    if model_b.seconds_per_flop(0.0) < a <= model_b.seconds_per_flop(network_b):
        return model_b.network_gbps
    return None


def predicted_crossover(
    model_a: CostModel | None,
    model_b: CostModel | None,
    flops_per_x: float,
    network_a: float | None = 0.0,
    network_b: float | None = 0.0,
) -> float | None:
    """Where B's fitted time drops below A's (x units), if both models fit and they cross.
    `network_*`: network bytes per flop along each curve (None: not constant, no prediction)."""
    if model_a is None or model_b is None or not (model_a.fits_well and model_b.fits_well):
        return None
    if network_a is None or network_b is None:
        return None
    slower_per_flop = model_a.seconds_per_flop(network_a) - model_b.seconds_per_flop(network_b)
    if slower_per_flop <= 0 or model_b.t0_s <= model_a.t0_s:
        return None  # B never overtakes A, or is ahead everywhere
    crossing_flops = (model_b.t0_s - model_a.t0_s) / slower_per_flop
    return crossing_flops / flops_per_x


def network_per_flop(series: list[dict]) -> float | None:
    """Network bytes per flop along a curve: 0 without traffic, None where the ratio changes
    along the sweep (the time is then not linear in flops). Judged on the larger half, where
    every worker holds rows."""
    upper = series[len(series) // 2 :]
    ratios = [_network_bytes(r) / r["flops"] for r in upper]
    if not ratios or max(ratios) == 0:
        return 0.0
    return ratios[-1] if min(ratios) * 1.25 >= max(ratios) else None


@dataclass(frozen=True)
class Efficiency:
    """Speedup over one device / replicas at one point; low..high from the two IQRs."""

    x: float
    efficiency: float
    low: float
    high: float


def scaling_efficiency(rows: list[dict], group: str, dtype: str, data: str) -> list[Efficiency]:
    """Efficiency at each common point: mirrored:k over gpu, multiworker:NxK over gpu,
    multiworker:Nx0 over cpu."""
    kind, replicas = parse_group(group)
    if kind == "mirrored" or (kind == "multiworker" and workers_of(group)[1] > 0):
        single = "gpu"
    elif kind == "multiworker":
        single = "cpu"
    else:
        return []
    return [
        Efficiency(c.x, c.speedup / replicas, c.low / replicas, c.high / replicas)
        for c in compare(rows, single, group, dtype, data)
    ]


@dataclass(frozen=True)
class CostModel:
    """time ~= t0 + flops / peak [+ network_bytes / bandwidth], fitted to one curve's medians.

    The network term exists only where the data supports one: a curve that moves bytes
    between workers (data: host in a multi-worker group) and either the same group's
    data: device curve to take the compute part from, or a sweep along which bytes and flops
    do not grow together (else the two terms cannot be told apart)."""

    t0_s: float
    peak_gflops: float
    max_rel_residual: float
    points: int
    network_gbps: float | None = None  # effective GB/s of the network term, where fitted

    POOR_FIT = 0.25  # a residual over 25% of the measured time: say so, predict nothing

    @property
    def fits_well(self) -> bool:
        return self.max_rel_residual <= self.POOR_FIT

    def seconds_per_flop(self, network_per_flop: float = 0.0) -> float:
        network = network_per_flop / (self.network_gbps * 1e9) if self.network_gbps else 0.0
        return 1 / (self.peak_gflops * 1e9) + network

    def predict(self, flops: float, network_bytes: float = 0.0) -> float:
        network = network_bytes / (self.network_gbps * 1e9) if self.network_gbps else 0.0
        return self.t0_s + flops / (self.peak_gflops * 1e9) + network


def cost_models(series: dict[tuple, list[dict]]) -> dict[tuple, CostModel | None]:
    """One model per curve (as from `curves`); data: device curves first, so a data: host
    curve of the same group can take its compute part from them."""
    models: dict[tuple, CostModel | None] = {}
    for key in sorted(series, key=lambda key: key[2] != "device"):
        group, dtype, data = key
        models[key] = fit_cost_model(series[key], models.get((group, dtype, "device")))
    return models


def fit_cost_model(rows: list[dict], compute: CostModel | None = None) -> CostModel | None:
    """Fit the cost model to one curve; `compute`: the same group's data: device model.

    Fitted in relative error (small and large sizes count alike) and robustly: Huber weights,
    refitted a few times, so one noisy point cannot drag the model. None with fewer than 3
    rows."""
    if len(rows) < 3:
        return None
    work = np.array([r["flops"] for r in rows], dtype=float)
    network = np.array([_network_bytes(r) for r in rows], dtype=float)
    time = np.array([r["median_s"] for r in rows], dtype=float)
    ones = np.ones_like(work)
    if network.any() and compute is not None and compute.fits_well:
        known = work / (compute.peak_gflops * 1e9)  # the compute part, measured without traffic
        (t0, inverse_bw), residual = _robust_fit([ones, network], known, time)
        return _model(t0, compute.peak_gflops * 1e9, inverse_bw, residual)
    ratio = network[network > 0] / work[network > 0]
    if ratio.size >= 3 and ratio.max() >= 4 * ratio.min():
        (t0, inverse_peak, inverse_bw), residual = _robust_fit([ones, work, network], 0, time)
        return _model(t0, 1 / max(inverse_peak, 1e-30), inverse_bw, residual)
    (t0, inverse_peak), residual = _robust_fit([ones, work], 0, time)
    return _model(t0, 1 / max(inverse_peak, 1e-30), 0.0, residual)


def _model(t0: float, flops_per_s: float, inverse_bw: float, residual: np.ndarray) -> CostModel:
    bandwidth = 1 / inverse_bw / 1e9 if inverse_bw > 0 else None
    return CostModel(
        float(t0),
        float(flops_per_s / 1e9),
        float(np.abs(residual).max()),
        residual.size,
        bandwidth,
    )


def _robust_fit(columns: list, known, time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """time ~= known + sum(c_i * column_i) with every c_i >= 0, in relative error, Huber
    reweighted. Returns the coefficients and the relative residuals."""
    design = np.stack(columns, axis=1) / time[:, None]
    target = (time - known) / time
    weights = np.ones_like(time)
    for _ in range(5):
        coefficients, *_ = np.linalg.lstsq(design * weights[:, None], target * weights, rcond=None)
        coefficients = np.maximum(coefficients, 0.0)
        residual = (known + np.stack(columns, axis=1) @ coefficients - time) / time
        scale = 1.5 * max(float(np.median(np.abs(residual))), 1e-3)
        weights = np.sqrt(1 / np.maximum(1.0, np.abs(residual) / scale))
    return coefficients, residual


def _network_bytes(row: dict) -> int:
    """From the coordinates, so rows written before the field existed count too."""
    return point_of(row).network_bytes


def intensity(row: dict) -> float:
    """Arithmetic intensity: FLOP per byte of minimum traffic."""
    return row["flops"] / row["bytes"]
