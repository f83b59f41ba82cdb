"""Sweep efficiency, start-up and repeatability of the harness, measured on real runs.

- efficiency: time inside timed blocks / wall time of the whole `tfscale run` (target >= 0.6)
- start-up: from launching `tfscale run` to its first measurement, broken down into Ray's start,
  the actors' start (they start together: the longest, of which TF import and device set-up)
  and the first trace (target <= 12 s in all on 2 cores)
- driver overhead per point: round trip minus the worker's time on the point (target <= 10 ms)
- repeatability: the same config twice, median |log(time ratio)| over points >= 1 ms (target <= 5%)

Usage: python benchmarks/sweep.py [--quick]   (quick: smaller sweeps, for CI)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_SWEEP = """\
name: cpu-sweep
workload: {{m: {m}, k: 64, n: 64}}
groups: [cpu]
"""


def run(config: Path, out: Path, *extra: str) -> tuple[float, list[dict], dict]:
    started = time.perf_counter()
    launched = datetime.now(timezone.utc)
    result = subprocess.run(
        [sys.executable, "-m", "tfscale.cli", "run", str(config), "--out", str(out), *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode not in (0, 4):
        sys.exit(f"tfscale run failed:\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    environment = json.loads((out / "environment.json").read_text())
    return wall, rows, {**environment, "launched_at": launched.isoformat()}


def efficiency(name: str, wall: float, rows: list[dict], environment: dict) -> dict:
    ok = [r for r in rows if r["status"] == "ok"]
    timed = sum(r["timed_s"] for r in ok)
    workers = environment.get("workers", {}).values()
    actor_start = max((w.get("actor_start_s", 0) for w in workers), default=0.0)
    setup = max((w.get("setup_s", 0) for w in workers), default=0.0)
    first = min(ok, key=lambda r: r["started_at"])
    first_trace = first["warmup_s"]
    launched = datetime.fromisoformat(environment["launched_at"])
    startup = (datetime.fromisoformat(first["started_at"]) - launched).total_seconds()
    startup += first_trace  # the first point's warm-up, before its first timed block
    overhead = statistics.median(r["overhead_s"] for r in ok)
    figures = {
        "sweep": name,
        "points": len(rows),
        "wall_s": wall,
        "timed_s": timed,
        "timed_fraction": timed / wall,
        "measuring_fraction": sum(r["point_s"] for r in ok) / wall,
        "ray_start_s": environment["connect_s"],
        "actor_start_s": actor_start,
        "tf_import_and_setup_s": setup,
        "first_trace_s": first_trace,
        "startup_s": startup,
        "driver_overhead_per_point_ms": overhead * 1e3,
    }
    print(
        f"{name}: {len(rows)} points, wall {wall:.1f} s, inside timed blocks {timed:.1f} s "
        f"(ratio {timed / wall:.2f}, target >= 0.6); worker busy on points "
        f"{figures['measuring_fraction']:.2f} of wall\n"
        f"  start-up to the first timed block {startup:.1f} s (target <= 12): Ray "
        f"{environment['connect_s']:.1f} s, {len(workers)} actors together {actor_start:.1f} s "
        f"(TF import + devices {setup:.1f} s), first trace {first_trace:.2f} s\n"
        f"  driver overhead per point: median {overhead * 1e3:.1f} ms (target <= 10)"
    )
    return figures


def repeatability(first: list[dict], second: list[dict]) -> dict:
    before = {r["point_id"]: r for r in first if r["status"] == "ok"}
    logs = [
        abs(math.log(r["median_s"] / before[r["point_id"]]["median_s"]))
        for r in second
        if r["status"] == "ok" and r["point_id"] in before and r["median_s"] >= 1e-3
    ]
    value = statistics.median(logs) if logs else float("nan")
    print(
        f"repeatability: median |log ratio| over {len(logs)} points >= 1 ms: {value:.1%} (target <= 5%)"
    )
    return {"points": len(logs), "median_abs_log_ratio": value}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    figures = {"date": time.strftime("%Y-%m-%d")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # quick: 2 sizes x 2 ops x 3 groups, shorter sampling: the breakdown, not the figures
        quick = (
            ["--set", "workload.m=[64, 4096]", "--set", "timing.min_time_s=0.05"]
            if args.quick
            else []
        )
        quickstart = ROOT / "configs/quickstart.yaml"
        first = run(quickstart, tmp / "q1", *quick)
        figures["quickstart"] = efficiency("quickstart", *first)
        if not args.quick:  # quick: the breakdown only, from one run
            second = run(quickstart, tmp / "q2", *quick)
            figures["repeatability"] = repeatability(first[1], second[1])
        points = 10 if args.quick else 200
        sweep = tmp / "cpu.yaml"
        sweep.write_text(CPU_SWEEP.format(m=list(range(1, points + 1))))
        figures["cpu_sweep"] = efficiency(f"{points}-point cpu sweep", *run(sweep, tmp / "c"))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
