"""op: allreduce — every replica holds an [m, n] buffer; one iteration sums them over all the
group's replicas through the strategy (nccl-tests' all_reduce_perf, with TensorFlow's stack).

Iterations are chained: each one starts after the previous one's result exists (its corner
is the carry), so no two all-reduces overlap. One replica has nothing to all-reduce.
"""

from __future__ import annotations

import tensorflow as tf

from tfscale.plan import Point
from tfscale.worker.ops.base import (
    EPS,
    HEAD_COLS,
    HEAD_ROWS,
    Loaded,
    Op,
    accumulation_eps,
    on_devices,
    operand,
    reference,
    relative_error,
)
from tfscale.worker.replicas import Replicas, all_reduce_sum, replica_steps


class AllReduce(Op):
    name = "allreduce"
    # where the reduction ran: collectives and NCCL on every device; the copy-based
    # implementations add on one device (so no per-replica expectation is checked)
    kernels = ("CollectiveReduceV2", "NcclAllReduce", "AddN")
    per_replica = 0

    def skip(self, point: Point, replicas: Replicas) -> str | None:
        if not replicas.communicate:
            return "one replica: nothing to all-reduce"
        return None

    def load(self, point: Point, replicas: Replicas, variant: str) -> Loaded:
        buffers = on_devices(
            replicas, lambda r: operand((point.m, point.n), "buffer", r, point.dtype)
        )
        return Loaded((replicas.argument(buffers),))

    def loop(self, loaded: Loaded, replicas: Replicas, variant: str, host: bool):
        def step(buffer, previous):
            # an identity (no copy) places the buffer on this replica's device, which a
            # multi-worker all-reduce needs, and orders it after the previous iteration
            with tf.control_dependencies([] if previous is None else [previous]):
                buffer = tf.identity(buffer)
            return all_reduce_sum(buffer)[:HEAD_ROWS, :HEAD_COLS]

        return lambda buffer, iters: replica_steps(replicas, step, (buffer,), iters)

    def numerics(self, point: Point, loaded: Loaded, heads: list, replicas: Replicas):
        """The sum's corner against NumPy: every replica's buffer regenerated from its seed."""
        rows = min(point.m, HEAD_ROWS)
        expected = sum(
            reference((rows, point.n), "buffer", r, point.dtype, HEAD_COLS)
            for r in range(replicas.total)
        )
        worst = max(relative_error(head, expected) for head in heads)
        r = replicas.total
        return worst, 8 * EPS[point.dtype] + 4 * accumulation_eps(point.dtype) * r, None
