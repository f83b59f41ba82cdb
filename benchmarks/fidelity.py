"""Fidelity: does tfscale report what the device does?

Side by side, in one process, alternating rounds so drift hits both alike:
- tfscale's median (the cpu group's measuring code, as a Ray worker runs it)
- an independent minimal TF loop: `for _ in tf.range(n): y = tf.matmul(x, w)` in one tf.function,
  per-iteration time (the reference)
- the blog's method: timeit around tf.random.normal + eager tf.matmul (small ops only)
- a per-call tf.function, timed from Python (small ops only)
- NumPy's BLAS on the same machine (large ops)

Prints one line per case with the ratios. Usage: python benchmarks/fidelity.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import timeit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfscale.worker import GroupWorker

THREADS = len(os.sched_getaffinity(0))
WORKER = GroupWorker("cpu", "cpu", 1, False, THREADS)  # sets TF's thread pools before TF starts

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

TIMING = {"warmup": 2, "min_repeats": 5, "min_time_s": 0.3, "max_time_s": 10, "min_block_s": 0.01}


@tf.function
def minimal_loop(x, w, n):
    y = tf.matmul(x, w)
    for _ in tf.range(n - 1):
        y = tf.matmul(x, w)
    return y[:1, :1]


@tf.function
def minimal_serial_loop(x, w, n):
    """The same, with iterations forbidden to overlap (as tfscale times one matmul at a time)."""
    _, y = tf.while_loop(
        lambda i, y: i < n,
        lambda i, y: (i + 1, tf.matmul(x, w)),
        (1, tf.matmul(x, w)),
        parallel_iterations=1,
    )
    return y[:1, :1]


@tf.function
def one_call(x, w):
    return tf.matmul(x, w)


def reference(m, k, n, loop=minimal_loop, target_s: float = 0.3, repeats: int = 5) -> float:
    """Per-iteration median of a minimal in-graph loop, blocks of about target_s."""
    x = tf.random.stateless_normal((m, k), seed=[1, 0])
    w = tf.random.stateless_normal((k, n), seed=[2, 0])
    loop(x, w, tf.constant(2)).numpy()
    start = time.perf_counter()
    loop(x, w, tf.constant(2)).numpy()
    iters = max(2, int(target_s / max((time.perf_counter() - start) / 2, 1e-7)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loop(x, w, tf.constant(iters)).numpy()
        times.append((time.perf_counter() - start) / iters)
    return statistics.median(times)


def tfscale_median(m: int, k: int, n: int) -> dict:
    point = {"group": "cpu", "m": m, "k": k, "n": n, "dtype": "float32", "data": "device"}
    row = WORKER.run_point(point, TIMING)
    assert row["status"] == "ok", row
    return {"median_s": statistics.median(row["samples"]), "call_s": row["call_s"]}


def blog_method(k: int, number: int = 200) -> float:
    """The blog's timeit: RNG and eager matmul timed together, no device sync."""
    return (
        min(
            timeit.repeat(
                lambda: tf.matmul(tf.random.normal([1, k]), tf.random.normal([k, 1])),
                number=number,
                repeat=5,
            )
        )
        / number
    )


def per_call(m: int, k: int, n: int, number: int = 200) -> float:
    x = tf.random.stateless_normal((m, k), seed=[1, 0])
    w = tf.random.stateless_normal((k, n), seed=[2, 0])
    one_call(x, w).numpy()
    return min(timeit.repeat(lambda: one_call(x, w).numpy(), number=number, repeat=5)) / number


def numpy_blas(m: int, k: int, n: int, repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((m, k), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((k, n), dtype=np.float32)
    a @ b
    return statistics.median(timeit.repeat(lambda: a @ b, number=1, repeat=repeats))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes, one round (CI)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    small = [100] if args.quick else [10, 100, 1000]
    large = [256] if args.quick else [512, 2048, 4096]
    print(
        f"# tf {tf.__version__}, numpy {np.__version__}, {THREADS} threads, {time.strftime('%Y-%m-%d')}"
    )
    results = []
    for k in small:
        ours, refs = [], []
        for _ in range(rounds):
            refs.append(reference(1, k, 1))
            ours.append(tfscale_median(1, k, 1)["median_s"])
        ref, mine = statistics.median(refs), statistics.median(ours)
        blog, call = blog_method(k), per_call(1, k, 1)
        results.append(
            {
                "case": f"[1,{k}]@[{k},1]",
                "tfscale_s": mine,
                "reference_s": ref,
                "ratio": mine / ref,
                "blog_s": blog,
                "per_call_s": call,
            }
        )
        print(
            f"[1,{k}]@[{k},1]: tfscale {mine * 1e6:.2f} us, in-graph reference {ref * 1e6:.2f} us, "
            f"ratio {mine / ref:.3f} (target <= 2); blog method {blog * 1e6:.1f} us, "
            f"per-call tf.function {call * 1e6:.1f} us"
        )
    for size in large:
        ours, refs, serial = [], [], []
        for _ in range(rounds):
            refs.append(reference(size, size, size))
            serial.append(reference(size, size, size, loop=minimal_serial_loop))
            ours.append(tfscale_median(size, size, size)["median_s"])
        ref, mine, ser = statistics.median(refs), statistics.median(ours), statistics.median(serial)
        blas = numpy_blas(size, size, size)
        results.append(
            {
                "case": f"{size}^3",
                "tfscale_s": mine,
                "reference_s": ref,
                "ratio": mine / ref,
                "serial_reference_s": ser,
                "serial_ratio": mine / ser,
                "numpy_s": blas,
                "tf_over_numpy_speed": blas / ref,
            }
        )
        print(
            f"{size}^3 fp32: tfscale {mine * 1e3:.3f} ms, minimal TF loop {ref * 1e3:.3f} ms "
            f"(ratio {mine / ref:.3f}), serial minimal loop {ser * 1e3:.3f} ms (ratio "
            f"{mine / ser:.3f}; target within 3%); NumPy BLAS {blas * 1e3:.3f} ms, "
            f"TF speed / NumPy speed {blas / ref:.2f}"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
