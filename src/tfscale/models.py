"""Cost models of the curves: time ~= t0 + flops / peak, plus a network term where data crosses
between nodes and a communication term for training steps that all-reduce their gradient.

Pure functions over result rows; no Ray, no TensorFlow. Fitted in relative error (small and
large sizes count alike) and robustly (Huber weights), so one noisy point cannot drag a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tfscale.collectives import LinkModel, communication_s
from tfscale.results import point_of


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
    if slower_per_flop <= 0 or model_b.fixed_s <= model_a.fixed_s:
        return None  # B never overtakes A, or is ahead everywhere
    crossing_flops = (model_b.fixed_s - model_a.fixed_s) / slower_per_flop
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
    comm_s: float = 0.0  # a training step's all-reduce of dW, the same at every size
    comm_source: str | None = None  # "allreduce sweep", or None: inside t0 where fitted

    POOR_FIT = 0.25  # a residual over 25% of the measured time: say so, predict nothing

    @property
    def fits_well(self) -> bool:
        return self.max_rel_residual <= self.POOR_FIT

    def seconds_per_flop(self, network_per_flop: float = 0.0) -> float:
        network = network_per_flop / (self.network_gbps * 1e9) if self.network_gbps else 0.0
        return 1 / (self.peak_gflops * 1e9) + network

    @property
    def fixed_s(self) -> float:
        """What every step costs whatever its size: t0 and the all-reduce of dW."""
        return self.t0_s + self.comm_s

    def predict(self, flops: float, network_bytes: float = 0.0) -> float:
        network = network_bytes / (self.network_gbps * 1e9) if self.network_gbps else 0.0
        return self.fixed_s + flops / (self.peak_gflops * 1e9) + network


def cost_models(
    series: dict[tuple, list[dict]], links: dict[tuple[str, str], LinkModel] | None = None
) -> dict[tuple, CostModel | None]:
    """One model per curve (as from `analysis.curves`, keyed group, dtype, data); data: device
    curves first, so a data: host curve of the same group can take its compute part from
    them. `links`: the run's allreduce models, for training steps' communication term."""
    models: dict[tuple, CostModel | None] = {}
    for key in sorted(series, key=lambda key: key[2] != "device"):
        group, dtype, data = key
        comm = communication(series[key], links or {})
        models[key] = fit_cost_model(series[key], models.get((group, dtype, "device")), comm)
    return models


def communication(rows: list[dict], links: dict[tuple[str, str], LinkModel]) -> float | None:
    """The all-reduce time of a training-step curve's dW, from the same run's allreduce sweep
    of that group (when it covers dW's size and dW is the same size along the curve); None
    otherwise: the fit then keeps it inside t0, and the summary says "fitted"."""
    if not rows or rows[0].get("op") != "train_step" or rows[0].get("replicas", 1) < 2:
        return None
    if len({r.get("grad_bytes") for r in rows}) != 1:
        return None
    seconds, source = communication_s(rows[0], links)
    return seconds if source == "allreduce sweep" else None


def fit_cost_model(
    rows: list[dict], compute: CostModel | None = None, comm: float | None = None
) -> CostModel | None:
    """Fit the cost model to one curve; `compute`: the same group's data: device model;
    `comm`: a training step's all-reduce time taken from the allreduce sweep (then only t0
    and the peak are fitted, to what is left of the step). None with fewer than 3 rows."""
    if len(rows) < 3:
        return None
    work = np.array([r["flops"] for r in rows], dtype=float)
    network = np.array([_network_bytes(r) for r in rows], dtype=float)
    time = np.array([r["median_s"] for r in rows], dtype=float)
    ones = np.ones_like(work)
    if comm is not None:
        (t0, inverse_peak), residual = _robust_fit([ones, work], comm, time)
        model = _model(t0, 1 / max(inverse_peak, 1e-30), 0.0, residual)
        return CostModel(**{**model.__dict__, "comm_s": comm, "comm_source": "allreduce sweep"})
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
    """The row's own field (readers fill it in for rows written before it existed), else
    counted from the coordinates."""
    value = row.get("network_bytes")
    return point_of(row).network_bytes if value is None else value
