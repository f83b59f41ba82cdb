"""The figures of a run, as matplotlib objects (so tests can read labels and legends).

Log axes, units in labels; emulated groups dashed and labelled "(emulated)"; payoff points
marked on the speedup plot. Every curve carries a shaded band of what its points' IQRs allow
(for speedup and efficiency, from both groups' IQRs), so noise is not read as signal.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from tfscale import analysis

matplotlib.rcParams["figure.max_open_warning"] = 0  # a run's figures are all made, then saved

AXIS_LABELS = {
    "m": "m (rows of X)",
    "k": "k (inner dimension)",
    "n": "n (columns of W)",
    "flops": "work (FLOP)",
    "bytes": "buffer per replica (bytes)",
}
PER = {"matmul": "matmul", "train_step": "training step", "allreduce": "all-reduce"}


DENSE = 200  # past this many points a curve is drawn without markers (they would hide it)


def _line_style(emulated: bool, points: int = 0) -> dict:
    marker = {"marker": "o", "markersize": 3} if points <= DENSE else {}
    return {"linestyle": "--" if emulated else "-", **marker}


BAND_POINTS = 1000  # past this, a band is drawn as the envelope of windows of its points


def _band(ax, xs, lows, highs, line, label: str) -> None:
    """The uncertainty around a curve, in its colour; gid names it after the curve. A band of
    a dense curve is drawn as the envelope (lowest low, highest high) of consecutive windows:
    it hides no noise, and 25,000-point polygons would take seconds to render."""
    if len(xs) > BAND_POINTS:
        step = -(-len(xs) // BAND_POINTS)
        windows = range(0, len(xs), step)
        xs, lows, highs = (
            [xs[i] for i in windows],
            [min(lows[i : i + step]) for i in windows],
            [max(highs[i : i + step]) for i in windows],
        )
    ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.15, gid=f"band: {label}")


def _finish(ax, xlabel: str, ylabel: str, title: str, logy: bool = True) -> None:
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def figures(rows: list[dict], baseline: str, verdicts=None) -> dict[str, Figure]:
    """Per section (op and scaling): time, throughput, speedup, efficiency and roofline, each
    only where there is data, named as before for matmul under strong scaling and prefixed
    (`train_step-time`, `matmul-weak-speedup`) for the others; then the communication figures
    (busbw, step breakdown, weak scaling)."""
    from tfscale import commfigures

    ok = analysis.ok_rows(rows)
    if verdicts is None:
        groups = sorted({r["group"] for r in ok})
        verdicts = analysis.verdicts(ok, groups, baseline)
    out = {}
    for (op, scaling), section in analysis.sections(ok).items():
        if op == "allreduce":
            continue
        prefix = (
            "" if (op, scaling) == analysis.MATMUL else f"{op}-{scaling}-".replace("-strong", "")
        )
        mine = [v for v in verdicts if (v.op, v.scaling) == (op, scaling)]
        title = analysis.section_title(op, scaling)
        for name, fig in _section_figures(section, baseline, mine, op, title).items():
            out[prefix + name] = fig
    out.update(commfigures.figures(ok))
    return out


def _section_figures(ok, baseline, verdicts, op: str, section: str) -> dict[str, Figure]:
    """The figures of one section's ok rows."""
    axis = analysis.x_axis(ok)
    curves = analysis.curves(ok)
    modes = len({key[1:] for key in curves})
    emulated = {r["group"] for r in ok if r.get("emulated")}

    def name(group: str, dtype: str, data: str, extra: set[str] = frozenset()) -> str:
        text = analysis.label(group, group in emulated or bool(extra & emulated))
        return f"{text} {dtype} {data}" if modes > 1 else text

    out = {}
    for title, value, low, high, ylabel in (
        (
            "time",
            lambda r: r["median_s"],
            lambda r: r["q1_s"],
            lambda r: r["q3_s"],
            f"time per {PER[op]} (s, median, IQR shaded)",
        ),
        (
            "throughput",
            lambda r: r["gflops"],
            lambda r: r["flops"] / r["q3_s"] / 1e9,
            lambda r: r["flops"] / r["q1_s"] / 1e9,
            "throughput (GFLOP/s, from the IQR shaded)",
        ),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (group, dtype, data), series in curves.items():
            xs = [r[axis] for r in series]
            label = name(group, dtype, data)
            line = ax.plot(
                xs,
                [value(r) for r in series],
                label=label,
                **_line_style(group in emulated, len(series)),
            )[0]
            _band(ax, xs, [low(r) for r in series], [high(r) for r in series], line, label)
        _finish(ax, AXIS_LABELS[axis], ylabel, _titled(title, section))
        out[title] = fig

    groups = sorted({r["group"] for r in ok})
    verdicts = {(v.b, v.dtype, v.data): v for v in verdicts if v.a == baseline}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group, dtype, data in curves:
        if group == baseline:
            continue
        points = analysis.compare(ok, baseline, group, dtype, data, curves)
        if not points:
            continue
        label = name(group, dtype, data)
        xs = [p.x for p in points]
        line = ax.plot(
            xs,
            [p.speedup for p in points],
            label=label,
            **_line_style(group in emulated, len(points)),
        )[0]
        _band(ax, xs, [p.low for p in points], [p.high for p in points], line, label)
        verdict = verdicts.get((group, dtype, data))
        if verdict and verdict.payoff_x is not None:
            at = next(p for p in points if p.x == verdict.payoff_x)
            ax.plot(
                [at.x],
                [at.speedup],
                marker="*",
                markersize=14,
                color=line.get_color(),
                linestyle="none",
                label=f"payoff: {name(group, dtype, data)}",
            )
    if ax.lines:
        ax.axhline(1.0, color="grey", linewidth=0.8)
        _finish(
            ax,
            AXIS_LABELS[axis],
            f"speedup over {baseline} (x, >1 is faster; both IQRs shaded)",
            _titled(f"speedup over {baseline} (stars: payoff points)", section),
        )
        out["speedup"] = fig
    else:
        plt.close(fig)

    mirrored = [g for g in groups if g.startswith(("mirrored:", "multiworker:"))]
    if mirrored and ("gpu" in groups or "cpu" in groups):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for group, dtype, data in curves:
            points = (
                analysis.scaling_efficiency(ok, group, dtype, data, curves)
                if group in mirrored
                else []
            )
            if points:
                label = name(group, dtype, data, {"gpu"})
                xs = [p.x for p in points]
                line = ax.plot(
                    xs,
                    [p.efficiency for p in points],
                    label=label,
                    **_line_style(bool({group, "gpu"} & emulated), len(points)),
                )[0]
                _band(ax, xs, [p.low for p in points], [p.high for p in points], line, label)
        if ax.lines:
            ax.axhline(1.0, color="grey", linewidth=0.8)
            _finish(
                ax,
                AXIS_LABELS[axis],
                "scaling efficiency (speedup over one device / replicas; IQRs shaded)",
                _titled("scaling efficiency", section),
                logy=False,
            )
            out["efficiency"] = fig
        else:
            plt.close(fig)

    intensities = [analysis.intensity(r) for r in ok]
    if max(intensities) >= 4 * min(intensities):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (group, dtype, data), series in curves.items():
            ax.plot(
                [analysis.intensity(r) for r in series],
                [r["gflops"] for r in series],
                label=name(group, dtype, data),
                **_line_style(group in emulated, len(series)),
            )
        _finish(
            ax,
            "arithmetic intensity (FLOP/byte)",
            "throughput (GFLOP/s)",
            _titled("roofline", section),
        )
        out["roofline"] = fig
    return out


def _titled(title: str, section: str) -> str:
    return f"{section}: {title}" if section else title


def save(figs: dict[str, Figure], plots: Path) -> dict[str, bytes]:
    """Write each figure as PNG and SVG; return the PNG bytes (report.html embeds them)."""
    plots.mkdir(parents=True, exist_ok=True)
    pngs = {}
    for title, fig in figs.items():
        fig.savefig(plots / f"{title}.svg", bbox_inches="tight")
        path = plots / f"{title}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        pngs[title] = path.read_bytes()
        plt.close(fig)
    return pngs
