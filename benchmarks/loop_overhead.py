"""The timed loop's own cost per iteration on each kind of group, with the same threads: a
tiny op ([1,8]·[8,1] matmul) on cpu, emulated gpu and emulated mirrored:2, each group in its own
process as tfscale runs them. The loop lives wholly on each replica's device (no host round
trip per iteration), so a replica's iteration should cost about what a cpu group's does
(target: within 1.5x). Also prints the executed graph's in-loop transfers (0 expected).

Usage: python benchmarks/loop_overhead.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time

GROUPS = {"cpu": ("cpu", 1, False), "gpu": ("gpu", 1, True), "mirrored:2": ("mirrored", 2, True)}
CODE = """
import json, os
from tfscale.worker import GroupWorker
kind, replicas, emulated = {spec!r}
worker = GroupWorker({group!r}, kind, replicas, emulated, {threads})
timing = dict(warmup=2, min_repeats={repeats}, min_time_s={min_time}, max_time_s=10, min_block_s=0.02)
point = dict(group={group!r}, m={m}, k=8, n=1, dtype="float32", data="device")
row = worker.run_point(point, timing)
print(json.dumps(row))
"""


def measure(group: str, threads: int, quick: bool) -> dict:
    m = GROUPS[group][1]  # one row per replica
    code = CODE.format(
        spec=GROUPS[group],
        group=group,
        threads=threads,
        m=m,
        repeats=5 if quick else 15,
        min_time=0.2 if quick else 1.0,
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env
    )
    if result.returncode:
        sys.exit(result.stderr[-2000:])
    row = json.loads(result.stdout.strip().splitlines()[-1])
    if row["status"] != "ok":
        sys.exit(f"{group}: {row}")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    threads = len(os.sched_getaffinity(0))
    rounds = 1 if args.quick else args.rounds
    per_group: dict[str, list[float]] = {g: [] for g in GROUPS}
    executed = {}
    for _ in range(rounds):  # interleaved, so drift hits every group alike
        for group in GROUPS:
            row = measure(group, threads, args.quick)
            per_group[group].append(statistics.median(row["samples"]))
            executed[group] = row["executed"]
    cpu = statistics.median(per_group["cpu"])
    print(f"# {threads} threads per group, {rounds} round(s), {time.strftime('%Y-%m-%d')}")
    figures = {}
    for group, values in per_group.items():
        median = statistics.median(values)
        figures[group] = {"per_iteration_s": median, "over_cpu": median / cpu, **executed[group]}
        print(
            f"{group}: {median * 1e6:.2f} us per iteration, {median / cpu:.2f}x cpu "
            f"(target <= 1.5); in-loop transfers {executed[group]['loop_transfers']}, "
            f"partitions {executed[group]['partitions']}"
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
