"""Training steps and all-reduces on an emulated 2-node cluster (two `ray start` nodes of 1 CPU
each on this machine, so every row says emulated: true): gpu and mirrored:2 (emulated, on one
node) and multiworker:2x0 (one CPU worker on each node). Prints the all-reduce bus bandwidth
curve of each group, the training-step breakdown (compute, all-reduce, hidden) and the
verdicts — what the issue asks a note to show. Emulated devices share one machine's cores and
loopback: the figures show the pipeline and the shape of the trade-off, not real GPUs or NICs.

Usage: python benchmarks/collectives.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys

from _cluster import duration, sweep_on_cluster

from tfscale import analysis, collectives, tables

CONFIG = """\
name: collectives
workload: {{op: [train_step, allreduce], m: {m}, k: 256, n: 256}}
groups:
  - {{group: gpu, emulate: true, threads: 1}}
  - {{group: mirrored:2, emulate: true, threads: 1}}
  - {{group: "multiworker:2x0", threads: 1}}
baseline: gpu
timing: {{min_time_s: {min_time}, min_block_s: 0.02}}
"""
GROUPS = ["gpu", "mirrored:2", "multiworker:2x0"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [64, 1024, 16384] if args.quick else [16, 64, 256, 1024, 4096, 16384, 65536]
    wall, rows = sweep_on_cluster(CONFIG.format(m=sizes, min_time=0.05 if args.quick else 0.4))
    ok = [r for r in rows if r["status"] == "ok"]
    bad = [r for r in rows if r["status"] not in ("ok", "skipped")]
    if bad:
        sys.exit(f"{len(bad)} point(s) not ok: {bad[0]['reason']}")
    print(f"{len(rows)} points in {wall:.1f} s; k = n = 256, float32, 1 thread per worker\n")
    print("all-reduce, busbw (GB/s) by buffer per replica:\n")
    curves = collectives.allreduce_rows(ok)
    print("| bytes | " + " | ".join(f"{g} (emulated)" for g, _ in curves) + " |")
    print("|---|" + "---|" * len(curves))
    for size in sorted({r["bytes"] for series in curves.values() for r in series}):
        cells = []
        for series in curves.values():
            row = next((r for r in series if r["bytes"] == size), None)
            cells.append(
                f"{collectives.busbw(row):.3g} ({duration(row['median_s'])})" if row else "-"
            )
        print(f"| {size:,} | " + " | ".join(cells) + " |")
    print("\nfit (time = alpha + bytes / algbw):")
    for row in tables.allreduce_rows(ok):
        print(f"- {row[0]}: alpha {row[5]} us, algbw {row[6]} GB/s, busbw {row[7]} GB/s")
    print("\ntraining steps broken down:\n")
    print("| " + " | ".join(tables.BREAKDOWN_HEADER) + " |")
    print("|" + "---|" * len(tables.BREAKDOWN_HEADER))
    for row in tables.breakdown_rows(ok):
        print("| " + " | ".join(row) + " |")
    print("\nverdicts:")
    verdicts = analysis.verdicts(ok, GROUPS, "gpu")
    for verdict in verdicts:
        print(f"- {verdict.sentence()}")
    figures = {
        "points": len(rows),
        "wall_s": wall,
        "busbw_gbps": {
            group: {r["bytes"]: collectives.busbw(r) for r in series}
            for (group, _), series in curves.items()
        },
        "breakdowns": len(tables.breakdown_rows(ok)),
        "verdicts": [v.sentence() for v in verdicts],
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
