"""The tables summary.md and report.html share: per curve (peaks, cost models, share of a
peak), all-reduce bandwidth per group, and training steps broken into compute and all-reduce.
Rows of cells, as strings; `report` lays them out as Markdown or HTML."""

from __future__ import annotations

from tfscale import analysis, collectives, models, peaks

GROUP_HEADER = (
    "group",
    "op",
    "dtype",
    "data",
    "points",
    "peak GFLOP/s",
    "peak GB/s",
    "fit: t0 (us)",
    "fit: peak GFLOP/s",
    "fit: network GB/s",
    "fit: all-reduce of dW (us)",
    "fit: max residual",
    "of peak",
)


def group_rows(rows: list[dict], declared: dict) -> list[tuple]:
    """One row per curve of every section but the all-reduce's (see `allreduce_rows`)."""
    links = collectives.link_models(rows)
    out = []
    for (op, scaling), section in analysis.sections(rows).items():
        if op == "allreduce":
            continue
        series_by_key = analysis.curves(section)
        fitted = models.cost_models(series_by_key, links)
        for key, series in series_by_key.items():
            group = analysis.label(key[0], any(r.get("emulated") for r in series))
            out.append(
                (
                    group,
                    op if scaling == "strong" else f"{op} (weak)",
                    key[1],
                    key[2],
                    len(series),
                    f"{max(r['gflops'] for r in series):,.2f}",
                    f"{max(r['gbps'] for r in series):,.2f}",
                    *_fit(fitted[key]),
                    of_peak(series, declared.get(key[0], {})),
                )
            )
    return out


def _fit(model) -> tuple[str, ...]:
    if model is None:
        return ("-",) * 5
    poor = "" if model.fits_well else " (poor fit)"
    comm = "-"
    if model.comm_source:
        comm = f"{model.comm_s * 1e6:,.1f} (from the {model.comm_source})"
    return (
        f"{model.t0_s * 1e6:,.1f}",
        f"{model.peak_gflops:,.1f}",
        f"{model.network_gbps:,.3g}" if model.network_gbps else "-",
        comm,
        f"{model.max_rel_residual:.0%}{poor}",
    )


def of_peak(series: list[dict], declared: dict) -> str:
    """The best point as a share of the group's peak: the config's `peaks` where it gives one,
    else the built-in datasheet table for the GPU model the rows name; says which."""
    gflops = max(r["gflops"] for r in series)
    gbps = max(r["gbps"] for r in series)
    first = series[0]
    tflops, bandwidth, source = declared.get("tflops"), declared.get("gbps"), "declared"
    if not (tflops or bandwidth) and not first.get("emulated") and first.get("device_model"):
        tflops, bandwidth = peaks.group_peak(
            first["device_model"], first.get("precision", ""), first.get("replicas", 1)
        )
        sheet = peaks.datasheet(first["device_model"])
        source = f"datasheet {sheet.model}" if sheet else ""
    shares = []
    if tflops:
        shares.append(f"{gflops / (tflops * 1e3):.0%} of {tflops:g} TFLOP/s")
    if bandwidth:
        shares.append(f"{gbps / bandwidth:.0%} of {bandwidth:g} GB/s")
    return f"{'; '.join(shares)} ({source})" if shares else "-"


ALLREDUCE_HEADER = (
    "group",
    "dtype",
    "sizes",
    "busbw at the largest (GB/s)",
    "largest buffer",
    "fit: latency alpha (us)",
    "fit: algbw (GB/s)",
    "fit: busbw (GB/s)",
    "fit: max residual",
)


def allreduce_rows(rows: list[dict]) -> list[tuple]:
    links = collectives.link_models(rows)
    out = []
    for key, series in collectives.allreduce_rows(rows).items():
        group = analysis.label(key[0], any(r.get("emulated") for r in series))
        link = links.get(key)
        fit = ("-",) * 4
        if link is not None:
            fit = (
                f"{link.alpha_s * 1e6:,.1f}",
                f"{link.algbw_gbps:,.3g}",
                f"{link.busbw_gbps:,.3g}",
                f"{link.max_rel_residual:.0%}",
            )
        last = series[-1]
        out.append(
            (
                group,
                key[1],
                len(series),
                f"{collectives.busbw(last):,.3g}",
                analysis.size_text(last["bytes"]),
                *fit,
            )
        )
    return out


BREAKDOWN_HEADER = (
    "group",
    "scaling",
    "dtype",
    "data",
    "m",
    "step (us)",
    "compute alone (us)",
    "all-reduce of dW alone (us)",
    "hidden behind compute (us)",
    "all-reduce share of the step",
)


def breakdown_rows(rows: list[dict]) -> list[tuple]:
    """Every training step that was broken down, by group and size."""
    out = []
    for row in analysis.ok_rows(rows):
        parts = collectives.breakdown(row)
        if parts is None:
            continue
        out.append(
            (
                analysis.label(row["group"], bool(row.get("emulated"))),
                row.get("scaling", "strong"),
                row["dtype"],
                row["data"],
                f"{row['m']:,}",
                f"{parts.step_s * 1e6:,.1f}",
                f"{parts.compute_s * 1e6:,.1f}",
                f"{parts.allreduce_s * 1e6:,.1f}",
                f"{parts.overlap_s * 1e6:,.1f}",
                f"{min(parts.allreduce_s / parts.step_s, 1):.0%}",
            )
        )
    return out
