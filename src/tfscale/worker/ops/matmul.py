"""op: matmul — Y[m, n] = X[m, k] @ W[k, n], X split along m over the replicas, W on each.

Each replica runs its own loop wholly on its device: the replicas never communicate. With
data: host, X stays in host memory and every iteration copies X in, multiplies and copies Y
out, strictly in order (the loop runs one iteration at a time); the corner of Y that ends a
block is sliced on the host, where Y is.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfscale.plan import Point
from tfscale.worker.ops.base import (
    HEAD_COLS,
    HEAD_ROWS,
    Loaded,
    Op,
    matmul_tolerance,
    on_devices,
    operand,
    reference,
    relative_error,
)
from tfscale.worker.replicas import HOST, Replicas, on_device_loop


class MatMul(Op):
    name = "matmul"
    kernels = ("MatMul",)

    def load(self, point: Point, replicas: Replicas, variant: str) -> Loaded:
        rows = point.shard_rows()
        w = operand((point.k, point.n), "w", 0, point.dtype)
        ws = on_devices(replicas, lambda r: w)
        xs = on_devices(
            replicas,
            lambda r: operand((rows[r], point.k), "x", r, point.dtype),
            host=point.data == "host",
        )
        return Loaded((replicas.argument(xs), replicas.argument(ws)), {"xs": xs, "w": w})

    def loop(self, loaded: Loaded, replicas: Replicas, variant: str, host: bool):
        def replica(x, w, iters):
            if host:

                def step(_=None):
                    y = tf.matmul(tf.identity(x), w)  # X in: host -> this device
                    with tf.device(HOST):
                        return (tf.identity(y),)  # Y out: this device -> host

            else:
                x, w = tf.identity(x), tf.identity(w)  # loop invariants on this device

                def step(_=None):
                    return (tf.matmul(x, w),)

            (y,) = on_device_loop(step, step(), iters)
            if host:
                with tf.device(HOST):
                    return y[:HEAD_ROWS, :HEAD_COLS]
            return y[:HEAD_ROWS, :HEAD_COLS]

        return lambda x, w, iters: replicas.run(replica, (x, w, iters))

    def numerics(self, point: Point, loaded: Loaded, heads: list, replicas: Replicas):
        """Y's corner of every local replica against NumPy in float64."""
        w = loaded.check["w"][:, :HEAD_COLS].numpy().astype(np.float64)
        rows = point.shard_rows()
        worst = 0.0
        for replica, head in zip(replicas.ids(), heads, strict=True):
            if rows[replica] == 0:
                continue
            x = reference((min(rows[replica], HEAD_ROWS), point.k), "x", replica, point.dtype)
            worst = max(worst, relative_error(head, x @ w))
        return worst, matmul_tolerance(point.dtype, point.k), None
