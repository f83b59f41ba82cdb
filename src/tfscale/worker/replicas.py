"""Where a group's replicas live in this process and how a step runs on each (worker side).

A group is one device without a strategy (cpu, gpu), k devices of this process under
MirroredStrategy (mirrored:k), or this process's share of a MultiWorkerMirroredStrategy
(a member of multiworker:NxK, whose local replicas are global replicas `offset`...). Ops are
written once, as replica functions, and `Replicas` runs them on whichever layout the group has.

Two loop shapes, both driven by one `iters` argument:
- `on_device_loop`: each replica runs its own while loop, wholly on its device (the counter,
  the loop invariants and the body all live there: no host round trip per iteration). For ops
  that do not communicate inside the loop (matmul).
- `replica_steps`: a loop in cross-replica context whose body runs the step on every replica
  (`strategy.run`), as Keras's `steps_per_execution` does. Ops that all-reduce inside the loop
  need it: a replica-context all-reduce inside a replica's own while loop fails in TensorFlow.
  Its loop control lives on the host, as in Keras; one device without a strategy keeps the
  whole loop on its device.
Both run iterations strictly one after another (parallel_iterations=1, and each iteration's
carry feeds the next), so no iteration overlaps the one before it.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tfscale.worker.devices import DeviceSet

HOST = "/device:CPU:0"
# names of the implementations TensorFlow may run an all-reduce with, as a row states them
ALL_REDUCE_NAMES = {
    "NcclAllReduce": "nccl",
    "HierarchicalCopyAllReduce": "hierarchical_copy",
    "ReductionToOneDevice": "reduce_to_one_device",
    "CollectiveAllReduce": "collective",
}
MIRRORED_OPS = {
    "nccl": tf.distribute.NcclAllReduce,
    "hierarchical_copy": tf.distribute.HierarchicalCopyAllReduce,
    "reduce_to_one_device": tf.distribute.ReductionToOneDevice,
}


def mirrored_strategy(names: tuple[str, ...], all_reduce: str | None):
    """MirroredStrategy over these devices with the all-reduce asked for (None: TF's choice)."""
    cross = MIRRORED_OPS[all_reduce]() if all_reduce else None
    return tf.distribute.MirroredStrategy(devices=list(names), cross_device_ops=cross)


class Replicas:
    """The replicas of one group held by this process."""

    def __init__(self, devices: DeviceSet, strategy=None, offset: int = 0, total: int = 0):
        self.devices, self.strategy, self.offset = devices, strategy, offset
        self.names = devices.names
        self.total = total or len(self.names)

    @property
    def communicate(self) -> bool:
        return self.total > 1

    def ids(self) -> range:
        """Global replica ids held here (seeds follow them: every layout makes the same data)."""
        return range(self.offset, self.offset + len(self.names))

    def make(self, build: Callable[[int], tf.Tensor], host: bool = False) -> list:
        """One tensor per local replica, `build(global id)` run on its device (or the host)."""
        out = []
        for replica, name in zip(self.ids(), self.names, strict=True):
            with tf.device(HOST if host else name):
                out.append(build(replica))
        return out

    def variable(self, initial: tf.Tensor) -> tf.Variable:
        """A weight every replica holds a copy of (a MirroredVariable under a strategy)."""
        if self.strategy is None:
            with tf.device(self.names[0]):
                return tf.Variable(initial)
        with self.strategy.scope():
            return tf.Variable(initial)

    def argument(self, values: list):
        """Per-replica values as one function argument."""
        if self.strategy is None:
            return values[0]
        local = self.offset
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: values[ctx.replica_id_in_sync_group - local]
        )

    def run(self, fn: Callable, args: tuple = ()):
        """`fn` in replica context on every local replica (on the one device without one)."""
        if self.strategy is None:
            with tf.device(self.names[0]):
                return fn(*args)
        return self.strategy.run(fn, args=args)

    def local(self, value) -> list:
        """The local replicas' parts of a value a function returned."""
        if self.strategy is None:
            return [value]
        return list(self.strategy.experimental_local_results(value))

    def local_values(self, variable) -> list:
        if self.strategy is None:
            return [variable]
        return list(self.strategy.experimental_local_results(variable))

    def all_reduce_name(self) -> str | None:
        """The all-reduce implementation that really runs for a float tensor, read back from
        the strategy (None: one replica, nothing is reduced)."""
        if not self.communicate or self.strategy is None:
            return None
        extended = self.strategy.extended
        if isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy):
            implementation = extended._communication_options.implementation
            return f"collective:{implementation.name.lower()}"
        chosen = extended._get_cross_device_ops(tf.constant(1.0))
        name = type(chosen).__name__
        return ALL_REDUCE_NAMES.get(name, name)


def all_reduce_sum(value: tf.Tensor, options=None) -> tf.Tensor:
    """Sum over every replica of the group (call in replica context)."""
    context = tf.distribute.get_replica_context()
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value, options=options)


def apply_update(variable, delta: tf.Tensor):
    """variable -= delta on this replica's copy, without communication (call in replica
    context). Under a strategy the update goes through `extended.update` in a merge call, as
    Keras optimizers do, so each replica's copy takes its own (already reduced) delta."""
    context = tf.distribute.get_replica_context()
    if tf.distribute.has_strategy():

        def update(strategy, var, value):
            return strategy.extended.update(var, lambda v, d: v.assign_sub(d), args=(value,))

        return context.merge_call(update, args=(variable, delta))
    return variable.assign_sub(delta)


def on_device_loop(step: Callable, first: tuple, iters: tf.Tensor) -> tuple:
    """`first` is the carry of the first iteration (already computed); `step(*carry) ->
    carry` runs `iters - 1` more times, each iteration after the previous one, in a while loop
    whose counter is copied to this replica's device first (else the loop would be split
    between host and device, crossing between them every iteration)."""
    iters = tf.identity(iters)

    def body(i, *carry):
        with tf.control_dependencies(list(carry)):
            return (i + 1, *step(*carry))

    _, *carry = tf.while_loop(
        lambda i, *_: i < iters, body, (tf.constant(1), *first), parallel_iterations=1
    )
    return tuple(carry)


def replica_steps(replicas: Replicas, step: Callable, args: tuple, iters: tf.Tensor):
    """`replicas.run(step, (*args, carry)) -> carry`, `iters` times (the first with carry
    None), in cross-replica context; on one device without a strategy, wholly on it."""
    if replicas.strategy is None:
        with tf.device(replicas.names[0]):
            first = step(*args, None)
            return on_device_loop(lambda c: (step(*args, c),), (first,), iters)[0]
    carry = replicas.run(step, (*args, None))
    for _ in tf.range(iters - 1):
        tf.autograph.experimental.set_loop_options(parallel_iterations=1)
        carry = replicas.run(step, (*args, carry))
    return carry
