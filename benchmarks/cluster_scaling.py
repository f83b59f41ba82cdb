"""Cluster scaling of the sweep itself: the same sweep on a 1-node and a 3-node local Ray
cluster (CPU nodes of 1 CPU each, started with `ray start` on this machine), wall time of
`tfscale run --address` on each. Groups go to different nodes and run at the same time, so
the 3-node sweep should take less time; on a 2-core machine at most ~2x less.

Usage: python benchmarks/cluster_scaling.py [--quick]
The cluster's nodes run in sessions of their own and are stopped by them: no other Ray is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from _cluster import local_cluster, tfscale_run, token_env

CONFIG = """\
name: cluster-scaling
workload: {{m: {m}, k: 256, n: 256}}
groups: [{{group: cpu, threads: 1}}, {{group: gpu, emulate: true, threads: 1}},
         {{group: mirrored:2, emulate: true, threads: 1}}]
timing: {{min_time_s: 0.3}}
"""


def sweep(nodes: int, config: Path, out: Path, env: dict) -> float:
    with local_cluster(nodes, env) as address:
        return tfscale_run(config, out, address, env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    env = token_env()
    sizes = [64, 256] if args.quick else [64, 256, 1024, 4096, 16384]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c.yaml"
        config.write_text(CONFIG.format(m=sizes))
        one = sweep(1, config, Path(tmp) / "one", env)
        three = sweep(3, config, Path(tmp) / "three", env)
    print(
        f"{3 * len(sizes)}-point sweep, 3 groups: 1 node {one:.1f} s, 3 nodes {three:.1f} s, "
        f"speedup {one / three:.2f}x (this machine has {os.cpu_count()} cores)"
    )
    print(json.dumps({"one_node_s": one, "three_nodes_s": three, "speedup": one / three}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
