"""From rows to answers: throughput, speedup, scaling efficiency, payoff points.

Pure functions over result rows (dicts as stored in results.jsonl); no Ray, no TensorFlow.
Definitions follow DESIGN.md "Analysis definitions". Rows are analysed per *section*: one op
under one scaling (matmul strong, train_step weak, ...), because their sizes mean different
things; within a section a curve is one group, dtype and data mode. Cost models are in
`models`, the communication of training steps and all-reduces in `collectives`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from tfscale import collectives, models
from tfscale.groups import parse_group, workers_of
from tfscale.plan import varying_dimension

MATMUL = ("matmul", "strong")  # the section of the first design: its names stay as they were


def ok_rows(rows: list[dict]) -> list[dict]:
    return [row for row in rows if row.get("status") == "ok"]


def section_of(row: dict) -> tuple[str, str]:
    return (row.get("op", "matmul"), row.get("scaling", "strong"))


def sections(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Ok rows per (op, scaling), matmul strong first."""
    out: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in ok_rows(rows):
        out[section_of(row)].append(row)
    return dict(sorted(out.items(), key=lambda item: (item[0] != MATMUL, item[0])))


def x_axis(rows: list[dict]) -> str:
    """The one of m, k, n that varies across the rows, else flops (bytes for all-reduces,
    which have no flops)."""
    if rows and all(r.get("op") == "allreduce" for r in rows):
        return "bytes"
    return varying_dimension(rows)


def series_key(row: dict) -> tuple:
    """Rows of one curve within a section: same group, dtype and data mode."""
    return (row["group"], row["dtype"], row["data"])


def curves(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Ok rows of one section per curve, ordered by the x axis."""
    rows = ok_rows(rows)
    axis = x_axis(rows) if rows else "flops"
    out: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        out[series_key(row)].append(row)
    return {key: sorted(value, key=lambda r: (r[axis], r["flops"])) for key, value in out.items()}


def label(group: str, emulated: bool) -> str:
    return f"{group} (emulated)" if emulated else group


def section_title(op: str, scaling: str) -> str:
    """'train_step, weak scaling'; empty for matmul under strong scaling."""
    if (op, scaling) == MATMUL:
        return ""
    return op if scaling == "strong" else f"{op}, weak scaling"


def _coordinates(row: dict) -> tuple:
    return (row["m"], row["k"], row["n"], row["dtype"], row["data"])


@dataclass(frozen=True)
class Comparison:
    """B against A at one point: speedup = throughput_B / throughput_A (time_A / time_B when
    both do the same work; under weak scaling B does replicas times more), and whether the
    IQRs separate. low..high: the speedups the two IQRs allow (A's q1 / B's q3 .. A's q3 /
    B's q1), drawn around the curve so noise is not read as signal."""

    x: float
    speedup: float
    certain: bool
    low: float
    high: float


def compare(
    rows: list[dict], a: str, b: str, dtype: str, data: str, series: dict | None = None
) -> list[Comparison]:
    """B against A in one section's rows (`series`: their `curves`, where already made)."""
    rows = ok_rows(rows)
    series = curves(rows) if series is None else series
    axis = x_axis(rows) if rows else "flops"
    return _compare(series.get((a, dtype, data), []), series.get((b, dtype, data), []), axis)


def _compare(series_a: list[dict], series_b: list[dict], axis: str) -> list[Comparison]:
    by_a = {_coordinates(r): r for r in series_a}
    out = []
    for row_b in series_b:
        row_a = by_a.get(_coordinates(row_b))
        if row_a is None:
            continue
        work = row_b["flops"] / row_a["flops"] if row_a["flops"] else 1.0
        separate = row_b["q3_s"] < row_a["q1_s"] or row_a["q3_s"] < row_b["q1_s"]
        out.append(
            Comparison(
                row_b[axis],
                work * row_a["median_s"] / row_b["median_s"],
                separate,
                low=work * row_a["q1_s"] / row_b["q3_s"],
                high=work * row_a["q3_s"] / row_b["q1_s"],
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
    op: str = "matmul"
    scaling: str = "strong"
    communication: str = ""  # what the all-reduce of dW costs B, for training steps

    def sentence(self) -> str:
        tag = " (emulated)" if self.emulated else ""
        title = section_title(self.op, self.scaling)
        prefix = f"{title}: " if title else ""
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
        return prefix + text + self.communication + self.prediction() + self.network()

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
    """Every meaningful pair, in every section but the all-reduce's (bandwidth, not speedup,
    is its answer: see `collectives`), per dtype and data mode."""
    links = collectives.link_models(rows)
    out = []
    for (op, scaling), section in sections(rows).items():
        if op != "allreduce":
            out += _section_verdicts(section, groups, baseline, op, scaling, links)
    return out


def _section_verdicts(rows, groups, baseline, op, scaling, links) -> list[Verdict]:
    axis = x_axis(rows)
    series = curves(rows)
    fitted = models.cost_models(series, links)
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
            network_a = models.network_per_flop(series[key_a])
            network_b = models.network_per_flop(series[key_b])
            # the flops of A per unit of x, constant along a 1-D sweep (under weak scaling B
            # does more work at the same x: the models are compared per unit of x)
            per_x_a = series[key_a][0]["flops"] / series[key_a][0][axis]
            per_x_b = first["flops"] / first[axis]
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
                    predicted_x=models.predicted_crossover(
                        fitted[key_a], fitted[key_b], per_x_b, network_a, network_b
                    )
                    if per_x_a == per_x_b
                    else None,
                    network_gbps=models.network_bound(
                        fitted[key_a], fitted[key_b], network_a, network_b
                    ),
                    op=op,
                    scaling=scaling,
                    communication=communication_clause(series[key_b], x, axis),
                )
            )
    return out


def communication_clause(series_b: list[dict], payoff_x: float | None, axis: str) -> str:
    """What the all-reduce of dW costs B's steps where B does not (yet) pay off: at the
    largest swept size below the payoff point, else at the largest size."""
    split = [(r, collectives.breakdown(r)) for r in series_b]
    split = [(r, b) for r, b in split if b is not None]
    if not split:
        return ""
    below = [(r, b) for r, b in split if payoff_x is None or r[axis] < payoff_x]
    row, parts = below[-1] if below else split[0]
    where = "below that" if payoff_x is not None and below else f"at {axis} = {row[axis]:,}"
    hidden = f", {parts.overlap_s / max(parts.allreduce_s, 1e-30):.0%} of it hidden behind compute"
    return (
        f"; {where} the all-reduce of dW ({size_text(row['grad_bytes'])}) takes "
        f"{min(parts.allreduce_s / parts.step_s, 1.0):.0%} of the step's time"
        + (hidden if parts.overlap_s > 0 else "")
    )


def size_text(nbytes: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes:.0f} B"


@dataclass(frozen=True)
class Efficiency:
    """Speedup over one device / replicas at one point; low..high from the two IQRs. Under
    weak scaling it is time on one device / time on k (ideal 1: k times the work, same time)."""

    x: float
    efficiency: float
    low: float
    high: float


def single_device(group: str) -> str | None:
    """What a group's scaling is measured against: gpu for mirrored:k and multiworker:NxK,
    cpu for multiworker:Nx0; None for cpu and gpu themselves."""
    kind, _ = parse_group(group)
    if kind == "mirrored" or (kind == "multiworker" and workers_of(group)[1] > 0):
        return "gpu"
    return "cpu" if kind == "multiworker" else None


def scaling_efficiency(
    rows: list[dict], group: str, dtype: str, data: str, series: dict | None = None
) -> list[Efficiency]:
    """Efficiency at each common point of one section's rows."""
    single = single_device(group)
    if single is None:
        return []
    replicas = parse_group(group)[1]
    return [
        Efficiency(c.x, c.speedup / replicas, c.low / replicas, c.high / replicas)
        for c in compare(rows, single, group, dtype, data, series)
    ]


def intensity(row: dict) -> float:
    """Arithmetic intensity: FLOP per byte of minimum traffic."""
    return row["flops"] / row["bytes"]
