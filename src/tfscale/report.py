"""What a person reads: summary.md, report.html (self-contained) and results.csv, made from
results.jsonl alone, so runs fetched from a cluster can be redrawn anywhere."""

from __future__ import annotations

import base64
import csv
import html
import itertools
import json
from collections import Counter

from tfscale import analysis, noise, plots, tables
from tfscale.config import Timing
from tfscale.progress import describe
from tfscale.results import point_of

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
    timing = experiment.timing.model_dump()
    per_group = tables.group_rows(rows, declared)  # fitted once, written twice
    store.write_text(
        "summary.md", summary(rows, verdicts, experiment.name, notes, declared, timing, per_group)
    )
    store.write_text(
        "report.html", page(rows, verdicts, experiment, notes, pictures, store, per_group)
    )
    store.write_text("results.csv", table_csv(rows))
    return notes


def _verdict_rows(verdicts, noisy_verdicts=()) -> list[tuple]:
    noisy = {n.verdict: n for n in noisy_verdicts}
    return [(v.a, v.b, v.dtype, v.data, v.sentence() + _rests_on(noisy.get(v))) for v in verdicts]


def _rests_on(noisy) -> str:
    if noisy is None:
        return ""
    return (
        f" — rests on {len(noisy.noisy)} of {noisy.points} points with an IQR over "
        f"{noise.NOISY_IQR:.0%} of the median (see Noise)"
    )


def _noise_lines(noisy, verdicts, timing=None) -> list[str]:
    """The Noise section: which verdicts rest on noisy points, and what would tighten them."""
    if not noisy:
        return []
    lines = [
        f"{len(noisy)} of {len(verdicts)} verdicts rest on points whose IQR is over "
        f"{noise.NOISY_IQR:.0%} of the median: there, a difference may be noise.",
        *(f"- {n.sentence()}" for n in noisy),
    ]
    tighter = noise.tighter_timing(
        [r for n in noisy for r in n.noisy], timing or Timing().model_dump()
    )
    if tighter is not None:
        lines += ["", f"To tighten them, rerun with `{tighter.command()}`: {_why(tighter)}"]
    return lines


def _why(tighter) -> str:
    text = (
        f"the noisiest point, timed in blocks of {tighter.from_block_s:.2g} s, had an IQR of "
        f"{tighter.from_iqr:.0%}; "
    )
    if tighter.min_block_s > tighter.from_block_s:
        text += (
            "timing jitter averages out as 1/sqrt(block time), so blocks of "
            f"{tighter.min_block_s:g} s should bring it to about {tighter.expected_iqr:.0%}"
        )
    else:
        text += f"its blocks are already {tighter.from_block_s:.2g} s long"
    if "min_repeats" in tighter.settings:
        text += (
            f", and {tighter.settings['min_repeats']:g} samples know the median within "
            f"±{noise.MEDIAN_PRECISION:.1%}"
        )
    text += f"; such a point then samples for at least {tighter.point_s:.2g} s"
    if tighter.capped:
        text += (
            f". Blocks longer than {noise.MAX_BLOCK_S:g} s are not suggested: noise that "
            "persists over such blocks comes from the machine (other processes, frequency "
            "scaling); measure on an idle node"
        )
    return text + "."


def _warnings(rows, notes) -> list[str]:
    reasons = Counter(
        (r["group"], r["status"], r.get("reason")) for r in rows if r["status"] != "ok"
    )
    return [
        *notes,
        *(f"{g}: {n} point(s) {s}: {why}" for (g, s, why), n in reasons.items()),
        *(
            f"{describe(point_of(r))}: {'; '.join(r['warnings'])}"
            for r in rows
            if r.get("warnings")
        ),
    ]


EMULATED_NOTE = (
    "Emulated groups ran on logical CPU devices standing in for GPUs: their numbers "
    "say nothing about real GPUs."
)


def summary(rows, verdicts, name, notes, declared=None, timing=None, per_group=None) -> str:
    """summary.md: verdicts first, then how noisy they are, per-group peaks and cost models,
    then warnings. `timing`: the run's timing settings, that suggestions start from."""
    counts = Counter(r["status"] for r in rows)
    lines = [
        f"# {name}",
        "",
        "Points: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())),
    ]
    if any(r.get("emulated") for r in rows):
        lines += ["", f"**{EMULATED_NOTE}**"]
    noisy = noise.noisy_verdicts(rows, verdicts)
    table = _verdict_rows(verdicts, noisy)
    lines += ["", "## Verdicts", ""]
    if table:
        lines += ["| A | B | dtype | data | verdict |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(v) + " |" for v in table]
    else:
        lines.append("No pair of groups has measured points in common.")
    said = _noise_lines(noisy, verdicts, timing)
    if said:
        lines += ["", "## Noise", "", *said]
    lines += [
        "",
        "## Per group",
        "",
        *_markdown(tables.GROUP_HEADER, tables.group_rows(rows, declared or {})),
    ]
    lines += _communication_markdown(rows)
    warnings = _warnings(rows, notes)
    if warnings:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in warnings)]
    return "\n".join(lines) + "\n"


def _markdown(header, body) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(c) for c in row) + " |" for row in body),
    ]


COMMUNICATION = (
    "All-reduce bandwidth, nccl-tests style: algbw = bytes / time, busbw = algbw x 2(r-1)/r "
    "(what each link carries in a ring; comparable across replica counts)."
)
BREAKDOWN = (
    "Training steps broken down, each part timed alone at the same point: the step without "
    "its all-reduce, and the all-reduce of dW; what compute hides of the all-reduce is "
    "compute + all-reduce - step."
)


def _communication_markdown(rows) -> list[str]:
    lines = []
    reduced, split = tables.allreduce_rows(rows), tables.breakdown_rows(rows)
    if reduced:
        lines += ["", "## All-reduce", "", COMMUNICATION, ""]
        lines += _markdown(tables.ALLREDUCE_HEADER, reduced)
    if split:
        lines += ["", "## Training steps: compute and all-reduce", "", BREAKDOWN, ""]
        lines += _markdown(tables.BREAKDOWN_HEADER, split)
    return lines


def _communication_html(rows) -> str:
    out = ""
    reduced, split = tables.allreduce_rows(rows), tables.breakdown_rows(rows)
    if reduced:
        out += f"<h2>All-reduce</h2><p>{html.escape(COMMUNICATION)}</p>"
        out += _table(tables.ALLREDUCE_HEADER, reduced)
    if split:
        out += f"<h2>Training steps: compute and all-reduce</h2><p>{html.escape(BREAKDOWN)}</p>"
        out += _table(tables.BREAKDOWN_HEADER, split)
    return out


def _table(header, body) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in body
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"


def page(rows, verdicts, experiment, notes, pictures: dict[str, str], store, per_group=None) -> str:
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
    noisy = noise.noisy_verdicts(rows, verdicts)
    said = _noise_html(_noise_lines(noisy, verdicts, experiment.timing.model_dump()))
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
{_table(("A", "B", "dtype", "data", "verdict"), _verdict_rows(verdicts, noisy))}
{said}
{figures}
<h2>Per group</h2>
{_table(tables.GROUP_HEADER, per_group if per_group is not None else tables.group_rows(rows, declared))}
{_communication_html(rows)}
<h2>Warnings</h2><ul>{warnings or "<li>none</li>"}</ul>
<h2>Where it ran</h2>
{_table(("what", "value"), [(k, v) for k, v in context if v is not None])}
</body></html>
"""


def _noise_html(lines: list[str]) -> str:
    """The Noise section's lines as HTML: a paragraph, a list, a paragraph."""
    if not lines:
        return ""
    items = "".join(f"<li>{html.escape(line[2:])}</li>" for line in lines if line[:2] == "- ")
    prose = [f"<p>{html.escape(line)}</p>" for line in lines if line and line[:2] != "- "]
    return f'<h2>Noise</h2><div class="warn">{prose[0]}<ul>{items}</ul>{"".join(prose[1:])}</div>'


def table_csv(rows: list[dict]) -> str:
    """results.csv for pandas and spreadsheets: one row per point, lists joined with ';'."""
    columns = list(dict.fromkeys(itertools.chain.from_iterable(rows)))  # first seen, first
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
