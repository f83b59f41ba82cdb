"""Fidelity references, each run in a fresh process of its own (no Ray), printing JSON.

    python benchmarks/_references.py KIND SHAPES_JSON TIMING_JSON

KIND is one of:
- loop: a bare-process TF loop, written the way a TF user would, not with tfscale's code: one
  tf.function whose while loop runs `iters` matmuls one at a time (parallel_iterations=1, as
  a row claims one matmul at a time) and returns a corner of the last Y; TF's default threads
- session: TF1 style, `tf.compat.v1.Session.run(y)` once per iteration, fetching all of Y to
  NumPy (a graph that fetched only `tf.group(y)` would let TensorFlow prune the matmul);
  X and W are variables (constants would be folded away by Grappler)
- numpy: `a @ b` (a new Y every iteration) and `np.matmul(a, b, out=y)` (one reused Y)
- measurer: tfscale's own measuring code (GroupWorker, as the actor runs it) in a bare process:
  separates "the actor" from "tfscale's code"
- blog: the blog's timeit (RNG + eager matmul, no sync) and a per-call tf.function, [1,k]@[k,1]

The references share one simple protocol, independent of tfscale.timing: two untimed calls,
`iters` doubled until a block lasts min_block_s, three untimed blocks, then blocks until
min_repeats and min_time_s. Each sample is a block's time / iters. Every reference also
reports the process's minor page faults and involuntary context switches per iteration (the
measurer does not: its warm-up and calibration run in the same calls).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import timeit

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def usage() -> tuple[int, int]:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_minflt, used.ru_nivcsw


def sample(block, timing: dict) -> dict:
    """`block(iters) -> seconds`: per-iteration samples and what the process paid for them."""
    block(1)
    block(1)
    iters = 1
    while (took := block(iters)) < timing["min_block_s"]:
        iters = max(2 * iters, int(iters * 1.2 * timing["min_block_s"] / max(took, 1e-7)))
    for _ in range(3):
        block(iters)
    faults, switches = usage()
    samples, started = [], time.perf_counter()
    while (
        len(samples) < timing["min_repeats"] or time.perf_counter() - started < timing["min_time_s"]
    ):
        samples.append(block(iters) / iters)
    done = len(samples) * iters
    faults_after, switches_after = usage()
    return {
        "samples": samples,
        "inner": iters,
        "faults_per_iter": (faults_after - faults) / done,
        "switches_per_iter": (switches_after - switches) / done,
    }


def tf_loop(shapes: list, timing: dict) -> dict:
    import tensorflow as tf

    @tf.function
    def loop(x, w, iters):
        _, y = tf.while_loop(
            lambda i, y: i < iters,
            lambda i, y: (i + 1, tf.matmul(x, w)),
            (tf.constant(1), tf.matmul(x, w)),
            parallel_iterations=1,
        )
        return y[:1, :1]

    out = {}
    for m, k, n in shapes:
        x = tf.random.stateless_normal((m, k), seed=[1, 0])
        w = tf.random.stateless_normal((k, n), seed=[2, 0])

        def block(iters, x=x, w=w):
            count = tf.constant(iters)
            start = time.perf_counter()
            loop(x, w, count).numpy()
            return time.perf_counter() - start

        out[f"{m}x{k}x{n}"] = sample(block, timing)
    return out


def tf_session(shapes: list, timing: dict) -> dict:
    import tensorflow as tf

    v1 = tf.compat.v1
    out = {}
    for m, k, n in shapes:
        graph = tf.Graph()
        with graph.as_default():
            x = v1.Variable(v1.random_normal((m, k), seed=1))
            w = v1.Variable(v1.random_normal((k, n), seed=2))
            y = tf.matmul(x, w)
            init = v1.global_variables_initializer()
        with v1.Session(graph=graph) as session:
            session.run(init)

            def block(iters, session=session, y=y):
                start = time.perf_counter()
                for _ in range(iters):
                    session.run(y)
                return time.perf_counter() - start

            out[f"{m}x{k}x{n}"] = sample(block, timing)
    return out


def numpy_matmul(shapes: list, timing: dict) -> dict:
    import numpy as np

    out = {}
    for m, k, n in shapes:
        a = np.random.default_rng(0).standard_normal((m, k), dtype=np.float32)
        b = np.random.default_rng(1).standard_normal((k, n), dtype=np.float32)
        y = np.empty((m, n), dtype=np.float32)

        def fresh(iters, a=a, b=b):
            start = time.perf_counter()
            for _ in range(iters):
                a @ b
            return time.perf_counter() - start

        def reused(iters, a=a, b=b, y=y):
            start = time.perf_counter()
            for _ in range(iters):
                np.matmul(a, b, out=y)
            return time.perf_counter() - start

        out[f"{m}x{k}x{n}"] = sample(fresh, timing)
        out[f"{m}x{k}x{n} out="] = sample(reused, timing)
    return out


def measurer(shapes: list, timing: dict) -> dict:
    from tfscale.worker import GroupWorker

    threads = len(os.sched_getaffinity(0))

    worker = GroupWorker("cpu", "cpu", 1, False, threads)
    out = {}
    for m, k, n in shapes:
        point = {"group": "cpu", "m": m, "k": k, "n": n, "dtype": "float32", "data": "device"}
        row = worker.run_point(point, timing)
        assert row["status"] == "ok", row
        out[f"{m}x{k}x{n}"] = {"samples": row["samples"], "inner": row["inner"]}
    return out


def blog(shapes: list, timing: dict) -> dict:
    """[1,k]@[k,1] the blog's way and per call: these time Python and TF dispatch."""
    import tensorflow as tf

    one_call = tf.function(tf.matmul)
    out = {}
    for _, k, _ in shapes:
        x = tf.random.stateless_normal((1, k), seed=[1, 0])
        w = tf.random.stateless_normal((k, 1), seed=[2, 0])
        one_call(x, w).numpy()
        out[f"1x{k}x1"] = {
            "blog_s": min(
                timeit.repeat(
                    lambda k=k: tf.matmul(tf.random.normal([1, k]), tf.random.normal([k, 1])),
                    number=200,
                    repeat=5,
                )
            )
            / 200,
            "per_call_s": min(
                timeit.repeat(lambda x=x, w=w: one_call(x, w).numpy(), number=200, repeat=5)
            )
            / 200,
        }
    return out


KINDS = {
    "loop": tf_loop,
    "session": tf_session,
    "numpy": numpy_matmul,
    "measurer": measurer,
    "blog": blog,
}


if __name__ == "__main__":
    kind, shapes, timing = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    print(json.dumps(KINDS[kind](shapes, timing)))
