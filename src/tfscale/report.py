"""Figures and summary.md of a run, made from its rows alone (so runs fetched from a cluster
can be redrawn anywhere). Emulated groups are dashed and labelled "(emulated)"."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from tfscale import analysis

AXIS_LABELS = {
    "m": "m (rows of X)",
    "k": "k (inner dimension)",
    "n": "n (columns of W)",
    "flops": "work (FLOP)",
}


def _style(rows: list[dict]) -> dict:
    emulated = any(r.get("emulated") for r in rows)
    return {"linestyle": "--" if emulated else "-", "marker": "o", "markersize": 3}


def _curve_label(key: tuple, rows: list[dict], modes: int) -> str:
    group, dtype, data = key
    text = analysis.label(group, any(r.get("emulated") for r in rows))
    return f"{text} {dtype} {data}" if modes > 1 else text


def plot_curves(rows: list[dict], plots: Path, baseline: str) -> list[Path]:
    """time, throughput, speedup (vs the baseline) and efficiency (mirrored:k vs gpu) figures."""
    curves = analysis.curves(rows)
    if not curves:
        return []
    axis = analysis.x_axis(analysis.ok_rows(rows))
    modes = len({(k[1], k[2]) for k in curves})
    written = []

    def save(fig, name: str) -> None:
        for ext in ("png", "svg"):
            path = plots / f"{name}.{ext}"
            fig.savefig(path, dpi=120, bbox_inches="tight")
            written.append(path)
        plt.close(fig)

    for name, field, ylabel in (
        ("time", "median_s", "time per matmul (s, median)"),
        ("throughput", "gflops", "throughput (GFLOP/s)"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key, series in curves.items():
            xs = [r[axis] for r in series]
            ys = [r[field] for r in series]
            line = ax.plot(xs, ys, label=_curve_label(key, series, modes), **_style(series))[0]
            if field == "median_s":
                ax.fill_between(
                    xs,
                    [r["q1_s"] for r in series],
                    [r["q3_s"] for r in series],
                    color=line.get_color(),
                    alpha=0.15,
                )
        _finish(ax, AXIS_LABELS[axis], ylabel, name)
        save(fig, name)
    _ratio_plots(rows, axis, baseline, save)
    return written


def _ratio_plots(rows, axis, baseline, save) -> None:
    groups = sorted({r["group"] for r in analysis.ok_rows(rows)})
    modes = sorted({(r["dtype"], r["data"]) for r in analysis.ok_rows(rows)})
    emulated = {r["group"] for r in rows if r.get("emulated")}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drew = False
    for group in groups:
        if group == baseline:
            continue
        for dtype, data in modes:
            points = analysis.compare(rows, baseline, group, dtype, data)
            if not points:
                continue
            text = analysis.label(group, group in emulated)
            text += f" {dtype} {data}" if len(modes) > 1 else ""
            ax.plot(
                [p.x for p in points],
                [p.speedup for p in points],
                label=text,
                linestyle="--" if group in emulated else "-",
                marker="o",
                markersize=3,
            )
            drew = True
    ax.axhline(1.0, color="grey", linewidth=0.8)
    _finish(ax, AXIS_LABELS[axis], f"speedup over {baseline} (x)", f"speedup over {baseline}")
    if drew:
        save(fig, "speedup")
    else:
        plt.close(fig)

    mirrored = [g for g in groups if g.startswith("mirrored:")]
    if "gpu" not in groups or not mirrored:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for group in mirrored:
        for dtype, data in modes:
            points = analysis.scaling_efficiency(rows, group, dtype, data)
            if points:
                text = analysis.label(group, bool({group, "gpu"} & emulated))
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    label=text,
                    linestyle="--" if {group, "gpu"} & emulated else "-",
                    marker="o",
                    markersize=3,
                )
    ax.axhline(1.0, color="grey", linewidth=0.8)
    _finish(
        ax,
        AXIS_LABELS[axis],
        "scaling efficiency (speedup over gpu / k)",
        "scaling efficiency",
        logy=False,
    )
    save(fig, "efficiency")


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


def summary(rows: list[dict], groups: list[str], baseline: str, name: str, notes: list[str]) -> str:
    """summary.md: verdicts first, then per-curve peaks and cost models, then warnings."""
    lines = [f"# {name}", ""]
    counts = Counter(r["status"] for r in rows)
    lines.append("Points: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    if any(r.get("emulated") for r in rows):
        lines += [
            "",
            "**Emulated groups** ran on logical CPU devices standing in for GPUs: their "
            "numbers say nothing about real GPUs.",
        ]
    verdicts = analysis.verdicts(rows, groups, baseline)
    lines += ["", "## Verdicts", ""]
    if verdicts:
        lines += ["| A | B | dtype | data | verdict |", "|---|---|---|---|---|"]
        lines += [f"| {v.a} | {v.b} | {v.dtype} | {v.data} | {v.sentence()} |" for v in verdicts]
    else:
        lines.append("No pair of groups has measured points in common.")
    lines += [
        "",
        "## Per group",
        "",
        "| group | dtype | data | points | peak GFLOP/s | peak GB/s | "
        "fit: t0 (us) | fit: peak GFLOP/s | fit: max residual |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, series in analysis.curves(rows).items():
        peak = analysis.peaks(series)[key]
        model = analysis.fit_cost_model(series)
        fit = (
            f"{model.t0_s * 1e6:,.1f} | {model.peak_gflops:,.1f} | {model.max_rel_residual:.0%}"
            if model
            else "- | - | -"
        )
        group = analysis.label(key[0], any(r.get("emulated") for r in series))
        lines.append(
            f"| {group} | {key[1]} | {key[2]} | {len(series)} | {peak['gflops']:,.2f} | "
            f"{peak['gbps']:,.2f} | {fit} |"
        )
    problems = [r for r in rows if r["status"] != "ok"]
    warned = [r for r in rows if r.get("warnings")]
    if problems or warned or notes:
        lines += ["", "## Warnings", ""]
        lines += [f"- {note}" for note in notes]
        reasons = Counter((r["group"], r["status"], r.get("reason")) for r in problems)
        lines += [f"- {g}: {n} point(s) {s}: {why}" for (g, s, why), n in reasons.items()]
        lines += [
            f"- {r['group']} m={r['m']} k={r['k']} n={r['n']}: {'; '.join(r['warnings'])}"
            for r in warned
        ]
    return "\n".join(lines) + "\n"
