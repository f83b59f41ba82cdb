"""Cluster scaling of the sweep itself: the same sweep on a 1-node and a 3-node local Ray
cluster (CPU nodes of 1 CPU each, started with `ray start` on this machine), wall time of
`tfscale run --address` on each. Groups go to different nodes and run at the same time, so
the 3-node sweep should take less time; on a 2-core machine at most ~2x less.

Usage: python benchmarks/cluster_scaling.py [--quick]
Stops every Ray process of this machine (`ray stop --force`) before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
CONFIG = """\
name: cluster-scaling
workload: {{m: {m}, k: 256, n: 256}}
groups: [{{group: cpu, threads: 1}}, {{group: gpu, emulate: true, threads: 1}},
         {{group: mirrored:2, emulate: true, threads: 1}}]
timing: {{min_time_s: 0.3}}
"""


def sweep(nodes: int, config: Path, out: Path, env: dict) -> float:
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, check=False)
    port = 6400
    subprocess.run(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    for _ in range(nodes - 1):
        subprocess.run(
            [RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--disable-usage-stats"],
            env=env,
            check=True,
            capture_output=True,
        )
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfscale.cli",
            "run",
            str(config),
            "--out",
            str(out),
            "--address",
            f"127.0.0.1:{port}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, check=False)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    return wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
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
