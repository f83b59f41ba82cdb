"""multiworker:2x0 against cpu on an emulated 2-node cluster (two `ray start` nodes of 1 CPU
each on this machine, so the "network" is loopback and the rows say emulated: true), for
data: device (compute only) and data: host (X starts in worker 0's memory, shards cross to the
other worker and Y comes back, every iteration). Prints the curves side by side, the cost
models (with the network term fitted on the data: host curve) and the verdicts.

Usage: python benchmarks/multiworker.py [--quick]
The cluster's nodes run in sessions of their own and are stopped by them: no other Ray is touched.
"""

from __future__ import annotations

import argparse
import json
import sys

from _cluster import duration, sweep_on_cluster

from tfscale import analysis, models

CONFIG = """\
name: multiworker
workload: {{m: {m}, k: 512, n: 512, data: [device, host]}}
groups: [{{group: cpu, threads: 1}}, {{group: "multiworker:2x0", threads: 1}}]
baseline: cpu
timing: {{min_time_s: {min_time}, min_block_s: 0.02}}
"""
GROUPS = ["cpu", "multiworker:2x0"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [64, 1024, 16384] if args.quick else [64, 256, 1024, 4096, 16384, 65536]
    wall, rows = sweep_on_cluster(CONFIG.format(m=sizes, min_time=0.05 if args.quick else 0.5))
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        sys.exit(f"{len(bad)} point(s) not ok: {bad[0]['reason']}")
    series = analysis.curves(rows)
    print(f"{len(rows)} points in {wall:.1f} s; k = n = 512, float32, 1 thread per worker\n")
    print("| m | data | cpu | multiworker:2x0 (emulated) | speedup | network MB/iteration |")
    print("|---|---|---|---|---|---|")
    for data in ("device", "host"):
        cpu = {r["m"]: r for r in series[("cpu", "float32", data)]}
        for row in series[("multiworker:2x0", "float32", data)]:
            base = cpu[row["m"]]
            print(
                f"| {row['m']:,} | {data} | {duration(base['median_s'])} | {duration(row['median_s'])} "
                f"| {base['median_s'] / row['median_s']:.2f}x "
                f"| {row['network_bytes'] / 1e6:.2f} |"
            )
    fitted = models.cost_models(series)
    print("\ncost models (time = t0 + flops / peak [+ network bytes / bandwidth]):")
    for (group, _, data), model in sorted(fitted.items()):
        network = f", network {model.network_gbps:.3g} GB/s" if model.network_gbps else ""
        print(
            f"- {group} {data}: t0 {model.t0_s * 1e6:.1f} us, {model.peak_gflops:.0f} GFLOP/s"
            f"{network}, max residual {model.max_rel_residual:.0%}"
        )
    print("\nverdicts:")
    for verdict in analysis.verdicts(rows, GROUPS, "cpu"):
        print(f"- {verdict.data}: {verdict.sentence()}")
    speedups = {
        data: [c.speedup for c in analysis.compare(rows, "cpu", GROUPS[1], "float32", data)]
        for data in ("device", "host")
    }
    network = fitted[(GROUPS[1], "float32", "host")]
    print(json.dumps({"speedup": speedups, "network_gbps": network and network.network_gbps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
