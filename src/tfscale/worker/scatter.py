"""`data: host` in a multi-worker group: X starts in worker 0's host memory (worker side).

The question this answers is "what does it cost to feed the matmul from one machine's memory
across the network and get Y back there": in every iteration worker 0 sends each remote
replica's shard of X to that replica's worker (over the network), every replica copies its
shard to its device, multiplies and copies Y back to its host, and each remote shard of Y is
sent back to worker 0's host. Worker 0's own replicas only copy between its host and devices,
as in a single-node group. Worker 0's clock therefore covers every transfer and every replica.

Why worker 0 and not the tfscale driver: the driver runs no TensorFlow (and may sit on a node
outside the group), so the chief's host stands in for "the host that holds the data".

Transfers are collective broadcasts inside a group of two (worker 0's host CPU and worker j's
host CPU), so they run on MultiWorkerMirroredStrategy's own collective runtime. They carry no
timeout: TensorFlow implements a collective's timeout with a thread that sleeps for all of it,
one per collective, which inside a timed loop costs time and threads (the driver's
point_timeout_s bounds a hung point instead). Each point gets fresh instance keys (every
member counts points in the same order).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import collective_ops  # the V2 send/recv have no public alias

from tfscale.plan import Point
from tfscale.worker.graph import short_device
from tfscale.worker.ops.base import (
    HEAD_COLS,
    HEAD_ROWS,
    Loaded,
    matmul_tolerance,
    operand,
    reference,
    relative_error,
)
from tfscale.worker.replicas import Replicas

GROUP_KEY = 1_000_000  # pair groups: far above MultiWorkerMirroredStrategy's own (from 1)
INSTANCE_KEY = 1_000_000


def host_of(task: int) -> str:
    return f"/job:worker/replica:0/task:{task}/device:CPU:0"


class HostScatter:
    """Builds and feeds the host-mode loop of one member of a multi-worker group."""

    def __init__(self, task: int, local: tuple[str, ...]):
        self.task, self.local = task, local
        self._points = 0
        self._functions: dict[int, object] = {}

    def owner(self, replica: int) -> int:
        return replica // len(self.local)

    def load(self, point: Point, replicas: Replicas) -> tuple[object, Loaded]:
        """Worker 0 makes every shard of X in its host memory (seeded by global replica, as in
        device mode); the others make none. W on every local device. Returns the traced loop
        of this member and its operands."""
        rows = point.shard_rows()
        w = operand((point.k, point.n), "w", 0, point.dtype)
        ws = []
        for name in self.local:
            with tf.device(name):
                ws.append(tf.identity(w))
        xs = []
        if self.task == 0:
            with tf.device(host_of(0)):
                xs = [
                    tf.identity(operand((r, point.k), "x", i, point.dtype))
                    for i, r in enumerate(rows)
                ]
        self._points += 1
        key = INSTANCE_KEY + 2 * len(rows) * self._points
        shapes = tf.constant([[r, point.k, point.n] for r in rows], dtype=tf.int32)
        args = (xs, ws, shapes, tf.constant(key, dtype=tf.int32))
        return self.function(point.replicas), Loaded(args, {"w": w})

    def fetch(self, out) -> list:
        """Worker 0: every replica's corner of Y (gathered on its host); the others: nothing
        (their sends complete when worker 0 has received)."""
        values = [t.numpy() for t in out]
        return values if self.task == 0 else []

    def outputs(self, out) -> list[str]:
        return [short_device(t.device) for t in out] if self.task == 0 else []

    def numerics(self, point: Point, loaded: Loaded, heads: list, replicas: Replicas):
        """Worker 0 checks every replica's corner, the gathered ones too (so the transport is
        checked); the others hold no X."""
        w = loaded.check["w"][:, :HEAD_COLS].numpy().astype(np.float64)
        rows = point.shard_rows()
        worst = 0.0
        for replica, head in enumerate(heads):
            if rows[replica]:
                x = reference((min(rows[replica], HEAD_ROWS), point.k), "x", replica, point.dtype)
                worst = max(worst, relative_error(head, x @ w))
        return worst, matmul_tolerance(point.dtype, point.k), None

    def function(self, replicas: int):
        """The traced loop of this member for a group of `replicas` replicas."""
        if replicas not in self._functions:
            step = self._source if self.task == 0 else self._sink

            def host_loop(xs, ws, shapes, key, iters):
                return _repeat(lambda: step(replicas, xs, ws, shapes, key), iters)

            self._functions[replicas] = tf.function(host_loop, reduce_retracing=True)
        return self._functions[replicas]

    def _pair(self, replica: int, key, gather: bool) -> dict:
        return {
            "group_size": 2,
            "group_key": GROUP_KEY + self.owner(replica),
            "instance_key": key + 2 * replica + int(gather),
        }

    def _source(self, replicas, xs, ws, shapes, key) -> list:
        """Worker 0: send remote shards, compute its own, receive remote Y; in replica order."""
        local = len(self.local)
        host = host_of(0)
        sent, ys = [], []
        with tf.device(host):
            for r in range(local, replicas):
                sent.append(collective_ops.broadcast_send_v2(xs[r], **self._pair(r, key, False)))
        for r, device in enumerate(self.local):
            ys.append(_on_device(xs[r], ws[r], device, host))
        with tf.device(host):
            for r in range(local, replicas):
                shape = tf.stack([shapes[r, 0], shapes[r, 2]])
                ys.append(
                    collective_ops.broadcast_recv_v2(shape, ws[0].dtype, **self._pair(r, key, True))
                )
            with tf.control_dependencies(sent):  # keep the sends: nothing reads their outputs
                return [tf.identity(y) for y in ys]

    def _sink(self, replicas, xs, ws, shapes, key) -> list:
        """Worker j > 0: receive each local shard, compute, send Y back to worker 0."""
        host = host_of(self.task)
        first = self.task * len(self.local)
        out = []
        for i, device in enumerate(self.local):
            r = first + i
            with tf.device(host):
                x = collective_ops.broadcast_recv_v2(
                    shapes[r, :2], ws[i].dtype, **self._pair(r, key, False)
                )
            y = _on_device(x, ws[i], device, host)
            with tf.device(host):
                out.append(collective_ops.broadcast_send_v2(y, **self._pair(r, key, True)))
        return out


def _on_device(x, w, device: str, host: str):
    """Host X -> device, multiply, Y -> host (copies vanish where the device is the host)."""
    with tf.device(device):
        y = tf.matmul(tf.identity(x), w)
    with tf.device(host):
        return tf.identity(y)


def _repeat(step, iters) -> list:
    """`iters` dependent steps (the first outside the loop, as in measure.replica_loop)."""
    ys = step()

    def body(i, *ys):
        with tf.control_dependencies(list(ys)):
            return (i + 1, *step())

    _, *ys = tf.while_loop(
        lambda i, *_: i < iters, body, (tf.constant(1), *ys), parallel_iterations=1
    )
    return [y[:HEAD_ROWS, :HEAD_COLS] for y in ys]
