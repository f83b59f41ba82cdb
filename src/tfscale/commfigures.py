"""The communication figures of a run (matplotlib objects, like `plots`): all-reduce bus
bandwidth against buffer size, training steps broken into compute and all-reduce, and weak
scaling (time per step against replicas at a fixed m per replica)."""

from __future__ import annotations

from collections import defaultdict

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from tfscale import analysis, collectives
from tfscale.groups import parse_group
from tfscale.plots import _band, _finish, _line_style

PARTS = (  # how a step's time splits, bottom to top; they add up to the measured step
    ("compute", "#4c72b0"),
    ("all-reduce hidden behind compute", "#8fb0d8"),
    ("all-reduce not hidden", "#dd8452"),
    ("other (neither alone)", "#bbbbbb"),
)


def figures(ok: list[dict]) -> dict[str, Figure]:
    out = {}
    busbw = busbw_figure(ok)
    if busbw is not None:
        out["allreduce-busbw"] = busbw
    for (op, scaling), section in analysis.sections(ok).items():
        suffix = "" if scaling == "strong" else "-weak"
        split = breakdown_figure(section, analysis.section_title(op, scaling))
        if split is not None:
            out[f"{op}{suffix}-breakdown"] = split
        if scaling == "weak":
            weak = weak_scaling_figure(section, analysis.section_title(op, scaling))
            if weak is not None:
                out[f"{op}-weak-scaling"] = weak
    return out


def busbw_figure(ok: list[dict]) -> Figure | None:
    """busbw against bytes per replica, log-log, one curve per group and dtype; the band is
    what the time's IQR allows."""
    curves = collectives.allreduce_rows(ok)
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (group, dtype), series in curves.items():
        emulated = any(r.get("emulated") for r in series)
        label = f"{analysis.label(group, emulated)} {dtype}"
        xs = [r["bytes"] for r in series]
        factor = [collectives.busbw_factor(r["replicas"]) / 1e9 for r in series]
        line = ax.plot(
            xs,
            [collectives.busbw(r) for r in series],
            label=label,
            **_line_style(emulated, len(series)),
        )[0]
        lows = [r["bytes"] / r["q3_s"] * f for r, f in zip(series, factor, strict=True)]
        highs = [r["bytes"] / r["q1_s"] * f for r, f in zip(series, factor, strict=True)]
        _band(ax, xs, lows, highs, line, label)
    _finish(
        ax,
        "buffer per replica (bytes)",
        "bus bandwidth (GB/s): bytes / time x 2(r-1)/r",
        "all-reduce bus bandwidth (nccl-tests' busbw)",
    )
    return fig


def breakdown_figure(section: list[dict], title: str) -> Figure | None:
    """Stacked bars per group at each size: compute, the all-reduce hidden behind it, the
    all-reduce not hidden, and what neither explains; each bar is the measured step."""
    bars = defaultdict(dict)
    axis = analysis.x_axis(section)
    for row in section:
        parts = collectives.breakdown(row)
        if parts is not None:
            bars[(row["group"], row["dtype"], row["data"])][row[axis]] = (row, parts)
    if not bars:
        return None
    sizes = sorted({x for series in bars.values() for x in series})
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(sizes) * len(bars)), 4.5))
    width = 0.8 / len(bars)
    for i, (key, series) in enumerate(sorted(bars.items())):
        positions = [sizes.index(x) + (i - (len(bars) - 1) / 2) * width for x in series]
        bottom = np.zeros(len(series))
        for (name, colour), heights in zip(PARTS, _stack(series.values()), strict=True):
            ax.bar(
                positions,
                heights,
                width * 0.9,
                bottom=bottom,
                color=colour,
                label=name if i == 0 else None,
                hatch="//" if any(r.get("emulated") for r, _ in series.values()) else None,
                edgecolor="white",
            )
            bottom += heights
        for position, total in zip(positions, bottom, strict=True):
            ax.annotate(
                key[0], (position, total), ha="center", va="bottom", fontsize=6, rotation=90
            )
    ax.set_xticks(range(len(sizes)), [f"{x:,}" for x in sizes], rotation=30)
    ax.set_xlabel(f"{axis} (one bar per group; hatched: emulated)")
    ax.set_ylabel("time per step (s)")
    ax.set_title(f"{title}: where the step's time goes")
    ax.legend(fontsize=8)
    return fig


def _stack(values) -> list[np.ndarray]:
    compute, hidden, exposed, other = [], [], [], []
    for _, parts in values:
        compute.append(parts.compute_s - parts.overlap_s)
        hidden.append(parts.overlap_s)
        exposed.append(parts.exposed_s)
        other.append(max(parts.step_s - parts.compute_s - parts.allreduce_s, 0.0))
    return [np.array(part) for part in (compute, hidden, exposed, other)]


def weak_scaling_figure(section: list[dict], title: str) -> Figure | None:
    """Time per step against replicas at each fixed m per replica: flat is perfect weak
    scaling. One family of groups per line (gpu with mirrored:k and multiworker:NxK; cpu with
    multiworker:Nx0), so a line never joins unlike devices."""
    lines = defaultdict(list)
    for row in section:
        single = analysis.single_device(row["group"]) or row["group"]
        if single not in ("cpu", "gpu"):
            continue
        lines[(single, row["dtype"], row["data"], row["m"], row["k"], row["n"])].append(row)
    lines = {key: rows for key, rows in lines.items() if len(rows) > 1}
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (family, dtype, data, m, _, _), rows in sorted(lines.items()):
        rows = sorted(rows, key=lambda r: parse_group(r["group"])[1])
        replicas = [parse_group(r["group"])[1] for r in rows]
        emulated = any(r.get("emulated") for r in rows)
        label = f"{family} family, m = {m:,} per replica, {dtype} {data}"
        line = ax.plot(
            replicas,
            [r["median_s"] for r in rows],
            label=label + (" (emulated)" if emulated else ""),
            **_line_style(emulated),
        )[0]
        _band(ax, replicas, [r["q1_s"] for r in rows], [r["q3_s"] for r in rows], line, label)
    _finish(ax, "replicas", "time per step (s; flat = perfect weak scaling)", f"{title}")
    ax.set_xscale("log", base=2)
    return fig
