"""What a person reads: summary.md, report.html (self-contained) and results.csv, made from
results.jsonl alone, so runs fetched from a cluster can be redrawn anywhere."""

from __future__ import annotations

import base64
import csv
import html
import json
from collections import Counter

from tfscale import analysis, plots

CSV_LISTS = ("samples_s", "devices", "output_devices", "warnings")


def write_report(store, experiment) -> list[str]:
    """Redraw everything of a run folder from its rows; return the load warnings."""
    rows, notes = store.rows()
    groups = [entry.group for entry in experiment.groups]
    baseline = experiment.baseline_group
    verdicts = analysis.verdicts(rows, groups, baseline)
    pngs = plots.save(plots.figures(rows, baseline, verdicts), store.path / "plots")
    pictures = {title: base64.b64encode(data).decode() for title, data in pngs.items()}
    declared = {group: peak.model_dump() for group, peak in experiment.peaks.items()}
    store.write_text("summary.md", summary(rows, verdicts, experiment.name, notes, declared))
    store.write_text("report.html", page(rows, verdicts, experiment, notes, pictures, store))
    store.write_text("results.csv", table_csv(rows))
    return notes


def _verdict_rows(verdicts) -> list[tuple]:
    return [(v.a, v.b, v.dtype, v.data, v.sentence()) for v in verdicts]


def _group_rows(rows, declared) -> list[tuple]:
    out = []
    series_by_key = analysis.curves(rows)
    models = analysis.cost_models(series_by_key)
    for key, series in series_by_key.items():
        peak = {"gflops": max(r["gflops"] for r in series), "gbps": max(r["gbps"] for r in series)}
        model = models[key]
        if model is None:
            fit = ("-", "-", "-", "-")
        else:
            poor = "" if model.fits_well else " (poor fit)"
            fit = (
                f"{model.t0_s * 1e6:,.1f}",
                f"{model.peak_gflops:,.1f}",
                f"{model.network_gbps:,.3g}" if model.network_gbps else "-",
                f"{model.max_rel_residual:.0%}{poor}",
            )
        share = declared.get(key[0], {})
        of_peak = []
        if share.get("tflops"):
            of_peak.append(
                f"{peak['gflops'] / (share['tflops'] * 1e3):.0%} of {share['tflops']:g} TFLOP/s"
            )
        if share.get("gbps"):
            of_peak.append(f"{peak['gbps'] / share['gbps']:.0%} of {share['gbps']:g} GB/s")
        group = analysis.label(key[0], any(r.get("emulated") for r in series))
        out.append(
            (
                group,
                key[1],
                key[2],
                len(series),
                f"{peak['gflops']:,.2f}",
                f"{peak['gbps']:,.2f}",
                *fit,
                "; ".join(of_peak) or "-",
            )
        )
    return out


GROUP_HEADER = (
    "group",
    "dtype",
    "data",
    "points",
    "peak GFLOP/s",
    "peak GB/s",
    "fit: t0 (us)",
    "fit: peak GFLOP/s",
    "fit: network GB/s",
    "fit: max residual",
    "of declared peak",
)


def _warnings(rows, notes) -> list[str]:
    reasons = Counter(
        (r["group"], r["status"], r.get("reason")) for r in rows if r["status"] != "ok"
    )
    return [
        *notes,
        *(f"{g}: {n} point(s) {s}: {why}" for (g, s, why), n in reasons.items()),
        *(
            f"{r['group']} m={r['m']} k={r['k']} n={r['n']} {r['dtype']} {r['data']}: "
            f"{'; '.join(r['warnings'])}"
            for r in rows
            if r.get("warnings")
        ),
    ]


EMULATED_NOTE = (
    "Emulated groups ran on logical CPU devices standing in for GPUs: their numbers "
    "say nothing about real GPUs."
)


def summary(rows, verdicts, name, notes, declared=None) -> str:
    """summary.md: verdicts first, then per-group peaks and cost models, then warnings."""
    counts = Counter(r["status"] for r in rows)
    lines = [
        f"# {name}",
        "",
        "Points: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())),
    ]
    if any(r.get("emulated") for r in rows):
        lines += ["", f"**{EMULATED_NOTE}**"]
    verdicts = _verdict_rows(verdicts)
    lines += ["", "## Verdicts", ""]
    if verdicts:
        lines += ["| A | B | dtype | data | verdict |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(v) + " |" for v in verdicts]
    else:
        lines.append("No pair of groups has measured points in common.")
    lines += [
        "",
        "## Per group",
        "",
        "| " + " | ".join(GROUP_HEADER) + " |",
        "|" + "---|" * len(GROUP_HEADER),
    ]
    lines += [
        "| " + " | ".join(str(c) for c in row) + " |" for row in _group_rows(rows, declared or {})
    ]
    warnings = _warnings(rows, notes)
    if warnings:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in warnings)]
    return "\n".join(lines) + "\n"


def _table(header, body) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"


def page(rows, verdicts, experiment, notes, pictures: dict[str, str], store) -> str:
    """report.html: one file, plots embedded, readable offline in any browser."""
    try:
        environment = json.loads((store.path / "environment.json").read_text())
    except (OSError, ValueError):
        environment = {}
    counts = Counter(r["status"] for r in rows)
    workers = environment.get("workers", {})
    context = [
        ("tfscale", environment.get("tfscale")),
        ("Ray", environment.get("ray")),
        ("Python", environment.get("python")),
        ("TensorFlow", next((w.get("tensorflow") for w in workers.values()), None)),
        ("CPU", next((w.get("cpu_model") for w in workers.values()), None)),
        ("nodes", len(environment.get("nodes", []))),
        ("git", environment.get("git_commit")),
    ]
    figures = "".join(
        f'<figure><img alt="{t}" src="data:image/png;base64,{data}"><figcaption>{t}</figcaption></figure>'
        for t, data in pictures.items()
    )
    emulated = (
        f'<p class="warn">{html.escape(EMULATED_NOTE)}</p>'
        if any(r.get("emulated") for r in rows)
        else ""
    )
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in _warnings(rows, notes))
    declared = {g: p.model_dump() for g, p in experiment.peaks.items()}
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tfscale: {html.escape(experiment.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
th {{ background: #f3f3f3; }} .warn {{ background: #fff4d6; padding: 0.6em; }}
figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 520px; }}
</style></head><body>
<h1>{html.escape(experiment.name)}</h1>
<p>{html.escape(experiment.description or "")}</p>
<p>Points: {html.escape(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))}</p>
{emulated}
<h2>Where distribution pays off</h2>
{_table(("A", "B", "dtype", "data", "verdict"), _verdict_rows(verdicts))}
{figures}
<h2>Per group</h2>
{_table(GROUP_HEADER, _group_rows(rows, declared))}
<h2>Warnings</h2><ul>{warnings or "<li>none</li>"}</ul>
<h2>Where it ran</h2>
{_table(("what", "value"), [(k, v) for k, v in context if v is not None])}
</body></html>
"""


def table_csv(rows: list[dict]) -> str:
    """results.csv for pandas and spreadsheets: one row per point, lists joined with ';'."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        flat = dict(row)
        for key in CSV_LISTS:
            if isinstance(flat.get(key), list):
                flat[key] = ";".join(str(v) for v in flat[key])
        writer.writerow(flat)
    return buffer.getvalue()
