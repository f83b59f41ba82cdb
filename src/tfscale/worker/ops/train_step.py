"""op: train_step — one SGD step of the dense layer Y = X @ W as a hidden layer of a network
runs it, data parallel: forward Y = X W; the gradient of the mean squared error against a
fixed target T, dY; dW = X^T dY and dX = dY W^T (dX is what the layer below would receive;
it is carried into the next step, so TensorFlow cannot prune it); dW summed over every replica
through the strategy (each replica's part covers its rows of the global batch, so the sum is
the gradient of the mean loss); W <- W - lr dW on every replica's copy.

Iterations depend on each other through W. The breakdown variants time the same step without
the all-reduce (`compute`) and the all-reduce of a dW-sized buffer alone (`allreduce`).

The 1/M of the mean is split as 1/sqrt(M) in dY and 1/sqrt(M) in the update, so neither dY nor
dW leaves float16's range for large global batches M.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tfscale.plan import Point
from tfscale.worker.ops.allreduce import AllReduce
from tfscale.worker.ops.base import (
    EPS,
    HEAD_COLS,
    HEAD_ROWS,
    Loaded,
    Op,
    accumulation_eps,
    on_devices,
    operand,
    relative_error,
)
from tfscale.worker.replicas import Replicas, all_reduce_sum, apply_update, replica_steps

CHECK_LIMIT = 2**25  # elements of the global X up to which the NumPy reference runs


def learning_rate(global_m: int, k: int) -> float:
    """Small enough that the steps contract (X^T X / M has eigenvalues below about
    (sqrt(M) + sqrt(k))^2 / M), so W stays finite over millions of timed steps."""
    return min(0.1, 0.5 * global_m / (math.sqrt(global_m) + math.sqrt(k)) ** 2)


class TrainStep(Op):
    name = "train_step"
    kernels = ("MatMul",)
    per_replica = 3  # forward, dW, dX

    def variants(self, point: Point, replicas: Replicas) -> tuple[str, ...]:
        return ("step", "compute", "allreduce") if replicas.communicate else ("step",)

    def skip(self, point: Point, replicas: Replicas) -> str | None:
        return None

    def _allreduce(self, point: Point) -> tuple[AllReduce, Point]:
        """The breakdown's all-reduce: a buffer the size of dW."""
        return AllReduce(), dataclasses.replace(point, op="allreduce", m=point.k, k=0)

    def load(self, point: Point, replicas: Replicas, variant: str) -> Loaded:
        if variant == "allreduce":
            op, buffer = self._allreduce(point)
            return op.load(buffer, replicas, variant)
        rows = point.shard_rows()
        host = point.data == "host"
        w0 = operand((point.k, point.n), "w", 0, point.dtype)
        w = replicas.variable(w0)
        # the host operands are kept for the numerical check: regenerating X and T there
        # took longer than the point's warm-up (1.8 s at m = 65,536)
        made = {
            (what, r): operand((rows[r], width), what, r, point.dtype)
            for r in replicas.ids()
            for what, width in (("x", point.k), ("target", point.n))
        }
        xs = on_devices(replicas, lambda r: made["x", r], host=host)
        targets = on_devices(replicas, lambda r: made["target", r])
        if not _checkable(rows, point.k):  # no check to use them: host memory back now
            made = {}
        return Loaded(
            (replicas.argument(xs), replicas.argument(targets)),
            {"w0": w0, "w": w, "rows": rows, "made": made},
            [w],
        )

    def loop(self, loaded: Loaded, replicas: Replicas, variant: str, host: bool):
        if variant == "allreduce":
            return AllReduce().loop(loaded, replicas, variant, host)
        w = loaded.check["w"]
        rows = loaded.check["rows"]
        reduce = variant == "step" and replicas.communicate
        scale = 1 / math.sqrt(sum(rows))
        lr = learning_rate(sum(rows), w.shape[0])

        def step(x, target, previous):
            if previous is not None:  # after the previous step's update (and with data:
                with tf.control_dependencies([previous]):  # host, X copied in each step)
                    x = tf.identity(x)
            elif host:
                x = tf.identity(x)
            y = tf.matmul(x, w)
            dy = (y - target) * tf.constant(scale, y.dtype)  # a float64 stays float64
            dw = tf.matmul(x, dy, transpose_a=True)
            dx = tf.matmul(dy, w, transpose_b=True)
            if reduce:
                dw = all_reduce_sum(dw)
            update = apply_update(w, dw * tf.constant(lr * scale, dw.dtype))
            with tf.control_dependencies([update]):
                return tf.reduce_sum(tf.cast(dx, tf.float32))

        def corner():
            return w.read_value()[:HEAD_ROWS, :HEAD_COLS]

        def timed(x, target, iters):
            token = replica_steps(replicas, step, (x, target), iters)
            with tf.control_dependencies(replicas.local(token)):
                return replicas.run(corner), token

        return timed

    def fetch(self, out, replicas: Replicas) -> list[np.ndarray]:
        if isinstance(out, tuple):  # (W's corner, the dX token): both, so nothing is pruned
            heads, token = out
            for value in replicas.local(token):
                value.numpy()
            return [t.numpy() for t in replicas.local(heads)]
        return super().fetch(out, replicas)

    def numerics(self, point: Point, loaded: Loaded, heads: list, replicas: Replicas):
        """W's first columns after the steps run so far (`steps` in check) against NumPy in
        float64 running the same steps on the whole global batch."""
        if "w0" not in loaded.check:  # the all-reduce variant
            op, buffer = self._allreduce(point)
            return op.numerics(buffer, loaded, heads, replicas)
        rows = loaded.check["rows"]
        global_m = sum(rows)
        if not _checkable(rows, point.k):
            return (
                None,
                0.0,
                f"X has {global_m * point.k:,} elements (reference limit {CHECK_LIMIT:,})",
            )
        columns = min(point.n, HEAD_COLS)
        made = loaded.check["made"]

        def stored(what: str, r: int, shape: tuple[int, int], keep: int | None = None):
            """A shard as stored (this process's, or regenerated from its seed), as NumPy."""
            tensor = made.get((what, r))
            if tensor is None:  # another worker's replica
                tensor = operand(shape, what, r, point.dtype)
            return tensor[:, :keep].numpy()

        shards = [
            (
                stored("x", r, (n, point.k)),
                stored("target", r, (n, point.n), columns).astype(np.float64),
            )
            for r, n in enumerate(rows)
        ]
        w0 = loaded.check["w0"].numpy().astype(np.float64)[:, :columns]
        lr = learning_rate(global_m, point.k)
        w = w0.copy()
        for _ in range(loaded.check["steps"]):
            w -= lr / global_m * sum(_gradient(x, target, w) for x, target in shards)
        expected, start = w[:HEAD_ROWS], w0[:HEAD_ROWS]
        worst = max(relative_error(head - start, expected - start) for head in heads)
        steps = loaded.check["steps"]
        tolerance = steps * (
            16 * EPS[point.dtype] * _ratio(start, expected - start)
            + 32 * accumulation_eps(point.dtype) * math.sqrt(global_m + point.k)
        )
        return worst, tolerance, None


def _gradient(x: np.ndarray, target: np.ndarray, w: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """X^T (X W - T) in float64, a chunk of rows at a time: a float64 copy of a large X would
    cost more to write (page faults) than the products themselves."""
    total = np.zeros_like(w)
    for start in range(0, len(x), chunk):
        rows = x[start : start + chunk].astype(np.float64)
        total += rows.T @ (rows @ w - target[start : start + chunk])
    return total


def _ratio(w: np.ndarray, delta: np.ndarray) -> float:
    """How much larger W is than its change: rounding W shows up that much larger in it."""
    return float(np.sqrt(np.mean(w**2)) / max(np.sqrt(np.mean(delta**2)), 1e-30))


def _checkable(rows: list[int], k: int) -> bool:
    """Whether the NumPy reference runs: the global X (every replica's rows) is within
    CHECK_LIMIT elements. load() keeps the host operands only then."""
    return sum(rows) * k <= CHECK_LIMIT
