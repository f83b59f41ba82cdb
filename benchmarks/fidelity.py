"""Fidelity: does tfscale, run as users run it, report what a bare process measures?

Interleaved rounds in one invocation; every column is a fresh process of its own:
- tfscale run: `tfscale run` of a one-point cpu-group config (its private local Ray, its
  measuring actor), one run per shape; the row's samples
- bare loop: the same op in a bare TF process (no Ray), a while loop of matmuls run one at a
  time, written independently of tfscale: with TensorFlow's defaults (malloc on the host: the
  reference the ratios are taken against, and what tfscale's workers keep), and with
  TensorFlow's BFC host allocator (opt-in: TF_CPU_ALLOCATOR_USE_BFC)
- Measurer, bare process: tfscale's measuring code without Ray: separates the actor from
  tfscale's code
- Session.run(Y): TF1 style, one `Session.run(y)` per iteration fetching all of Y
- NumPy: `a @ b`, and `np.matmul(a, b, out=y)` into one reused Y
(see benchmarks/_references.py). Every column samples with the same timing settings; the
columns run in reverse order every other round, so drift hits all alike. Beside them, once:
the blog's timeit method and a per-call tf.function for [1,k]@[k,1].

`--beside SRC` adds a column: `tfscale run` with another checkout's src/ on PYTHONPATH (its
driver and its actor), e.g. the code before a change, interleaved with the rest.

Prints each round (with the load average), then a table of medians over rounds, each round's
IQR (% of its median) and the median ratio to the bare loop, then one JSON line.
Usage: python benchmarks/fidelity.py [--quick] [--rounds N] [--shapes ...] [--beside SRC]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tfscale.results import summarize

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = str(ROOT / "benchmarks" / "_references.py")
SHAPES = {"2048^3": (2048, 2048, 2048), "[200,20]@[20,20000]": (200, 20, 20000)}
SHAPES["[1024,1]@[1,1024]"] = (1024, 1, 1024)
TIMING = {"warmup": 2, "min_repeats": 5, "min_time_s": 0.2, "max_time_s": 10, "min_block_s": 0.01}
QUICK = {**TIMING, "min_time_s": 0.05, "max_time_s": 2}  # CI: that every column runs
TF_DEFAULTS = {"TF_CPU_ALLOCATOR_USE_BFC": "false"}  # TF default: malloc, or oneDNN's where on
BFC = {"TF_CPU_ALLOCATOR_USE_BFC": "true"}  # TensorFlow's BFC allocator: opt-in on CPUs
REFERENCE_STEPS = {  # column: (reference kind, its environment)
    "loop": ("loop", TF_DEFAULTS),
    "loop bfc": ("loop", BFC),
    "measurer": ("measurer", TF_DEFAULTS),
    "session": ("session", TF_DEFAULTS),
    "numpy": ("numpy", {}),
}
TITLES = {
    "loop": "bare loop, TF defaults",
    "loop bfc": "bare loop, BFC allocator",
    "tfscale": "tfscale run",
    "beside": "tfscale run, --beside",
    "measurer": "Measurer, bare process",
    "session": "Session.run(Y)",
    "numpy": "NumPy a@b",
    "numpy out=": "NumPy out=",
}
CONFIG = """\
name: fidelity
workload: {{m: {m}, k: {k}, n: {n}, dtype: float32, data: device}}
groups: [cpu]
timing: {timing}
"""


def key(shape: tuple[int, int, int]) -> str:
    return "x".join(map(str, shape))


def reference(kind: str, shapes: list, timing: dict, env: dict | None = None) -> dict:
    """One fresh process measuring every shape one way."""
    result = subprocess.run(
        [sys.executable, REFERENCES, kind, json.dumps(shapes), json.dumps(timing)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if result.returncode != 0:
        sys.exit(f"reference {kind} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def tfscale_run(shape: tuple, timing: dict, scratch: Path, src: str | None = None) -> dict:
    """`tfscale run` of a one-point cpu config, as a user runs it (with `src` first on
    PYTHONPATH, for the driver and, through Ray, the actor); what the row says."""
    m, k, n = shape
    out = Path(tempfile.mkdtemp(dir=scratch))
    config = out / "fidelity.yaml"
    config.write_text(CONFIG.format(m=m, k=k, n=n, timing=json.dumps(timing)))
    env = {**os.environ, **TF_DEFAULTS}  # like the loop it is compared with (the actor inherits it)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "tfscale.cli", "run", str(config), "--out", str(out / "run")],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        sys.exit(f"tfscale run failed:\n{result.stderr[-3000:]}")
    [row] = [json.loads(line) for line in (out / "run" / "results.jsonl").read_text().splitlines()]
    fields = ("inner", "loop_scaling", "measured_with")
    return {
        "samples": row["samples_s"],
        **{f: row[f] for f in fields if f in row},
        "wall_s": time.perf_counter() - started,
    }


def one_round(shapes: list, timing: dict, reverse: bool, scratch: Path, beside: str | None):
    """key(shape) -> column -> {samples, ...}, every column measured once."""
    steps = ["loop", "tfscale", "measurer", "loop bfc", "session", "numpy"]
    if beside:
        steps.insert(2, "beside")
    measured: dict[str, dict] = {key(s): {} for s in shapes}
    for step in reversed(steps) if reverse else steps:
        if step in ("tfscale", "beside"):
            for shape in shapes:
                src = beside if step == "beside" else None
                measured[key(shape)][step] = tfscale_run(shape, timing, scratch, src)
            continue
        kind, env = REFERENCE_STEPS[step]
        for name, values in reference(kind, shapes, timing, env).items():
            shape, _, variant = name.partition(" ")
            measured[shape][f"{step} {variant}".strip()] = values
    return measured


def stats(values: dict) -> tuple[float, float]:
    """(median, IQR as a fraction of the median)."""
    summary = summarize(values["samples"])
    return summary.median, summary.iqr / summary.median


def show(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"


def report_round(index: int, load: tuple[float, float], measured: dict) -> None:
    print(f"# round {index + 1}, load average {load[0]:.2f} -> {load[1]:.2f}", flush=True)
    for shape, columns in measured.items():
        base = stats(columns["loop"])[0]
        cells = []
        for column in TITLES:
            if column in columns:
                median, iqr = stats(columns[column])
                faults = columns[column].get("faults_per_iter")
                more = f", {faults:.0f} faults/iter" if faults is not None else ""
                cells.append(f"{column} {show(median)} ({median / base:.3f}x, IQR {iqr:.0%}{more})")
        print(f"{shape}: " + "; ".join(cells), flush=True)


def summary(rounds: list[dict], names: dict) -> list[dict]:
    """Per shape and column: the median over rounds of the rounds' medians, each round's IQR,
    and each round's ratio to the same round's bare loop."""
    figures = []
    for label, shape in names.items():
        k = key(shape)
        entry = {"case": label, "shape": shape}
        for column in TITLES:
            per_round = [r[k][column] for r in rounds if column in r[k]]
            if not per_round:
                continue
            medians = [stats(v)[0] for v in per_round]
            bases = [stats(r[k]["loop"])[0] for r in rounds]
            entry[column] = {
                "median_s": statistics.median(medians),
                "iqr": [stats(v)[1] for v in per_round],
                "ratio": [m / b for m, b in zip(medians, bases, strict=True)],
            }
            for field in ("faults_per_iter", "loop_scaling", "inner"):
                values = [v.get(field) for v in per_round]
                if any(value is not None for value in values):
                    entry[column][field] = values
            if "measured_with" in per_round[0]:
                entry[column]["measured_with"] = per_round[0]["measured_with"]
        figures.append(entry)
    return figures


def table(figures: list[dict]) -> str:
    columns = [c for c in TITLES if any(c in entry for entry in figures)]
    lines = ["| case | " + " | ".join(TITLES[c] for c in columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for entry in figures:
        cells = []
        for column in columns:
            value = entry.get(column)
            if value is None:
                cells.append("")
                continue
            iqr = "/".join(f"{i * 100:.0f}" for i in value["iqr"]) + "%"
            text = f"{show(value['median_s'])}, IQR {iqr}"
            if column != "loop":
                ratio = f"{statistics.median(value['ratio']):.2f}x"
                text += f", **{ratio}**" if column == "tfscale" else f", {ratio}"
            cells.append(text)
        lines.append(f"| {entry['case']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one shape, one round (CI)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapes", nargs="*", choices=list(SHAPES), help="default: all")
    parser.add_argument("--beside", metavar="SRC", help="another checkout's src/ to run beside")
    args = parser.parse_args()
    chosen = ["[200,20]@[20,20000]"] if args.quick else (args.shapes or list(SHAPES))
    names = {label: SHAPES[label] for label in chosen}
    shapes = list(names.values())
    rounds = 1 if args.quick else args.rounds
    timing = QUICK if args.quick else TIMING
    beside = str(Path(args.beside).resolve()) if args.beside else None
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, timing {json.dumps(timing)}"
    )
    measured = []
    with tempfile.TemporaryDirectory(prefix="tfscale-fidelity-") as scratch:
        for index in range(rounds):
            before = os.getloadavg()[0]
            measured.append(one_round(shapes, timing, index % 2 == 1, Path(scratch), beside))
            report_round(index, (before, os.getloadavg()[0]), measured[-1])
    figures = summary(measured, names)
    print(f"\n# medians of {rounds} interleaved rounds; IQR of each round; ratio to bare loop")
    print(table(figures))
    blog = reference("blog", [[1, k, 1] for k in ([100] if args.quick else [10, 100, 1000])], {})
    for name, values in blog.items():
        print(
            f"{name} (blog's shape): blog's timeit {show(values['blog_s'])}, "
            f"per-call tf.function {show(values['per_call_s'])}"
        )
    print(json.dumps({"cases": figures, "blog": blog, "beside": beside}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
