"""Scale of the driver's own work: planning 10^5 points (target < 1 s), analysis and report of
10^5 synthetic rows (target < 10 s), and the driver's peak memory while doing so.

Usage: python benchmarks/scale.py [--quick]   (quick: 10^4, for CI)
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from tfscale import config, plan
from tfscale.results import ok_row
from tfscale.store import RunStore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 10**4 if args.quick else 10**5
    groups = ["cpu", "gpu", "mirrored:2", "mirrored:4"]
    per_group = count // len(groups)
    experiment = config.loads(
        f"name: scale\nworkload: {{m: {list(range(1, per_group + 1))}, k: 64, n: 64}}\n"
        f"groups: {groups}\nemulate: missing\n"
    )
    started = time.perf_counter()
    points = plan.expand(experiment)
    planning = time.perf_counter() - started
    print(f"planning {len(points):,} points: {planning:.2f} s (target < 1 s)")

    rng = random.Random(0)
    rows = []
    for point in points:
        base = 1e-5 + point.flops / (1e9 * {"cpu": 50, "gpu": 500}.get(point.group, 800))
        samples = [base * (1 + 0.05 * rng.random()) for _ in range(5)]
        rows.append(ok_row(point, samples, emulated=point.group != "cpu", timing="graph_loop"))
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore.create(Path(tmp) / "run", experiment)
        for row in rows:
            store.append(row)
        store.close()
        from tfscale import report

        started = time.perf_counter()
        report.write_report(store, experiment)
        reporting = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"analysis and report of {len(rows):,} rows: {reporting:.1f} s (target < 10 s)")
    print(f"driver peak memory: {peak:.0f} MiB")
    print(
        json.dumps(
            {
                "points": len(points),
                "planning_s": planning,
                "report_s": reporting,
                "peak_rss_mib": peak,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
