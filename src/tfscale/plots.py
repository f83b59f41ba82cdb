"""The figures of a run, as matplotlib objects (so tests can read labels and legends).

Log axes, units in labels; emulated groups dashed and labelled "(emulated)"; payoff points
marked on the speedup plot.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from tfscale import analysis

AXIS_LABELS = {
    "m": "m (rows of X)",
    "k": "k (inner dimension)",
    "n": "n (columns of W)",
    "flops": "work (FLOP)",
}


DENSE = 200  # past this many points a curve is drawn without markers (they would hide it)


def _line_style(emulated: bool, points: int = 0) -> dict:
    marker = {"marker": "o", "markersize": 3} if points <= DENSE else {}
    return {"linestyle": "--" if emulated else "-", **marker}


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
    """time, throughput, speedup, efficiency and roofline, each only where there is data."""
    ok = analysis.ok_rows(rows)
    if not ok:
        return {}
    axis = analysis.x_axis(ok)
    curves = analysis.curves(ok)
    modes = len({key[1:] for key in curves})
    emulated = {r["group"] for r in rows if r.get("emulated")}

    def name(group: str, dtype: str, data: str, extra: set[str] = frozenset()) -> str:
        text = analysis.label(group, group in emulated or bool(extra & emulated))
        return f"{text} {dtype} {data}" if modes > 1 else text

    out = {}
    for title, field, ylabel in (
        ("time", "median_s", "time per matmul (s, median, IQR shaded)"),
        ("throughput", "gflops", "throughput (GFLOP/s)"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for (group, dtype, data), series in curves.items():
            xs = [r[axis] for r in series]
            line = ax.plot(
                xs,
                [r[field] for r in series],
                label=name(group, dtype, data),
                **_line_style(group in emulated, len(series)),
            )[0]
            if field == "median_s":
                ax.fill_between(
                    xs,
                    [r["q1_s"] for r in series],
                    [r["q3_s"] for r in series],
                    color=line.get_color(),
                    alpha=0.15,
                )
        _finish(ax, AXIS_LABELS[axis], ylabel, title)
        out[title] = fig

    groups = sorted({r["group"] for r in ok})
    if verdicts is None:
        verdicts = analysis.verdicts(ok, groups, baseline)
    verdicts = {(v.b, v.dtype, v.data): v for v in verdicts if v.a == baseline}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group, dtype, data in curves:
        if group == baseline:
            continue
        points = analysis.compare(ok, baseline, group, dtype, data)
        if not points:
            continue
        line = ax.plot(
            [p.x for p in points],
            [p.speedup for p in points],
            label=name(group, dtype, data),
            **_line_style(group in emulated, len(points)),
        )[0]
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
            f"speedup over {baseline} (x, >1 is faster)",
            f"speedup over {baseline} (stars: payoff points)",
        )
        out["speedup"] = fig
    else:
        plt.close(fig)

    mirrored = [g for g in groups if g.startswith(("mirrored:", "multiworker:"))]
    if mirrored and ("gpu" in groups or "cpu" in groups):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for group, dtype, data in curves:
            points = (
                analysis.scaling_efficiency(ok, group, dtype, data) if group in mirrored else []
            )
            if points:
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    label=name(group, dtype, data, {"gpu"}),
                    **_line_style(bool({group, "gpu"} & emulated), len(points)),
                )
        if ax.lines:
            ax.axhline(1.0, color="grey", linewidth=0.8)
            _finish(
                ax,
                AXIS_LABELS[axis],
                "scaling efficiency (speedup over one device / replicas)",
                "scaling efficiency",
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
        _finish(ax, "arithmetic intensity (FLOP/byte)", "throughput (GFLOP/s)", "roofline")
        out["roofline"] = fig
    return out


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
