"""The timed loop's own cost per iteration on each kind of group, with the same threads: a
tiny op ([1,8]·[8,1] matmul) on cpu, emulated gpu and emulated mirrored:2, each group in its own
process as tfscale runs them. The loop lives wholly on each replica's device (no host round
trip per iteration), so a replica's iteration should cost about what a cpu group's does
(target: within 1.5x). Also prints the executed graph's in-loop transfers (0 expected).

On a shared 2-vCPU machine the ratio swings from round to round (cpu against the identical
emulated gpu group: 0.6x-1.7x), and mirrored:2 suffers most, as its two loops need both vCPUs at
once: the same-round ratios are printed beside their median, and the fastest block of each group
(the least disturbed one) shows what the loop itself costs.

Usage: python benchmarks/loop_overhead.py [--quick] [--rounds N]
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
    best: dict[str, float] = dict.fromkeys(GROUPS, float("inf"))
    executed = {}
    for round_ in range(rounds):  # interleaved, reversed every other round: drift and the
        # order hit every group alike
        for group in list(GROUPS)[:: -1 if round_ % 2 else 1]:
            row = measure(group, threads, args.quick)
            per_group[group].append(statistics.median(row["samples"]))
            # the sampled blocks only: the last sample of a looped point is the block of
            # 2 x inner that proves the loop, which spreads the call over twice the iterations
            sampled = row["samples"][:-1] if row["inner"] > 1 else row["samples"]
            best[group] = min(best[group], *sampled)
            executed[group] = row["executed"]
    print(f"# {threads} threads per group, {rounds} round(s), {time.strftime('%Y-%m-%d')}")
    figures = {}
    for group, values in per_group.items():
        # same-round ratios: the machine's swings between rounds exceed the effect
        ratios = [v / c for v, c in zip(values, per_group["cpu"], strict=True)]
        median, ratio = statistics.median(values), statistics.median(ratios)
        figures[group] = {
            "per_iteration_s": median,
            "over_cpu": ratio,
            "over_cpu_rounds": ratios,
            "best_s": best[group],
            "best_over_cpu": best[group] / best["cpu"],
            **executed[group],
        }
        print(
            f"{group}: {median * 1e6:.2f} us per iteration, {ratio:.2f}x cpu (median of "
            f"same-round ratios {', '.join(f'{r:.2f}' for r in ratios)}; target <= 1.5); "
            f"fastest block {best[group] * 1e6:.2f} us, {best[group] / best['cpu']:.2f}x cpu's; "
            f"in-loop transfers {executed[group]['loop_transfers']}, "
            f"partitions {executed[group]['partitions']}"
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
