"""One point on one device group: operands, the timed tf.function, the checks (worker side).

How a block is run, and why:
- Operands are made on their devices once per point, outside every timed region.
- The op runs `inner` times inside one graph call (a while loop), so a small op is not buried
  under the 230-540 us a tf.function call costs in Python dispatch. Each iteration carries a
  control dependency on the previous result, so TF can neither hoist the matmul out of the loop
  nor run iterations concurrently; `timing.sample` checks that time scales with `inner`.
- A block ends by fetching a few entries of the last result to the host, which waits for every
  device the block used. In a multi-worker group an all-reduce across all replicas ends the
  block too, so its time covers the slowest worker (with data: host, worker 0 gathers every
  shard of Y, which does the same: see `scatter`).
- The first calls (tracing, allocation) are warm-up and never timed; `timing.sample` decides
  everything else (inner, steady state, samples).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np
import tensorflow as tf

from tfscale import timing
from tfscale.devices import DeviceSet
from tfscale.plan import Point

HEAD_ROWS, HEAD_COLS = 4, 8  # the corner of Y fetched to sync, and checked against NumPy
HOST = "/device:CPU:0"
_EPS = {"float16": 2**-10, "bfloat16": 2**-7, "float32": 2**-23, "float64": 2**-52}


def short_device(name: str) -> str:
    """'/job:localhost/replica:0/task:0/device:GPU:1' -> 'GPU:1'; other jobs keep the task:
    '/job:worker/replica:0/task:1/device:CPU:0' -> 'worker1/CPU:0'."""
    if not name:
        return "?"
    device = name.rsplit("device:", 1)[-1]
    if "/job:worker" in name and "/task:" in name:
        return f"worker{name.split('/task:')[1].split('/')[0]}/{device}"
    return device


def replica_loop(x, w, iters, device: str | None, host: str | None):
    """`iters` dependent matmuls; with `host`, X comes from and Y goes back to host memory."""
    place = (lambda: tf.device(device)) if device else contextlib.nullcontext

    def step():
        if host is None:
            return tf.matmul(x, w)
        with place():
            y = tf.matmul(tf.identity(x), w)
        with tf.device(host):
            return tf.identity(y)

    y = step()

    def body(i, y):
        with tf.control_dependencies([y]):
            return i + 1, step()

    _, y = tf.while_loop(lambda i, _: i < iters, body, (tf.constant(1), y))
    return y[:HEAD_ROWS, :HEAD_COLS]


def barrier_loop(x, w, iters):
    """The replica loop, then an all-reduce over every replica of every worker: the barrier."""
    head = replica_loop(x, w, iters, None, None)
    context = tf.distribute.get_replica_context()
    return head, context.all_reduce("sum", tf.reduce_sum(tf.cast(head, tf.float32)))


class Measurer:
    """Measures points on one DeviceSet; keeps its tf.functions (traced once per shape family).

    `strategy` is a MultiWorkerMirroredStrategy for a member of a multi-worker group (its local
    replicas are global replicas `replica_offset`...), else None: MirroredStrategy for a
    mirrored group, no strategy for cpu and gpu.
    """

    def __init__(
        self, devices: DeviceSet, strategy=None, replica_offset: int = 0, timeout_s: float = 0
    ):
        self.devices, self.replica_offset = devices, replica_offset
        self.collective = strategy is not None
        self.strategy = strategy
        self._scatter = None
        if self.collective:
            from tfscale.scatter import HostScatter

            task = replica_offset // len(devices.names)
            self._scatter = HostScatter(task, devices.names, timeout_s)
        if strategy is None and devices.kind == "mirrored":
            self.strategy = tf.distribute.MirroredStrategy(devices=list(devices.names))
        self._functions: dict[str, Any] = {}
        self._point: dict | None = None
        self._scattered = False  # the loaded point is data: host in a multi-worker group

    # ---- operands --------------------------------------------------------------------------

    def weights(self, point: Point) -> list:
        """One W per local device (the same values everywhere)."""
        names = self.devices.names
        with tf.device(names[0]):
            w = tf.random.stateless_normal(
                (point.k, point.n), seed=[2, 0], dtype=tf.as_dtype(point.dtype)
            )
        ws = [w]
        for name in names[1:]:
            with tf.device(name):
                ws.append(tf.identity(w))
        return ws

    def operands(self, point: Point) -> tuple[list, list]:
        """This process's X shards (on its devices, or on the host for data: host) and one W
        per device. Seeds follow the global replica id, so every layout makes the same data."""
        dtype = tf.as_dtype(point.dtype)
        names = self.devices.names
        ws = self.weights(point)
        rows = point.shard_rows()
        xs = []
        for i, name in enumerate(names):
            replica = self.replica_offset + i
            with tf.device(name if point.data == "device" else HOST):
                xs.append(
                    tf.random.stateless_normal(
                        (rows[replica], point.k), seed=[1, replica], dtype=dtype
                    )
                )
        return xs, ws

    def _function(self, data: str):
        if data not in self._functions:
            host = HOST if data == "host" else None
            strategy = self.strategy
            if strategy is None:
                device = self.devices.names[0]

                def single(x, w, iters):
                    with tf.device(device):
                        return replica_loop(x, w, iters, device, host)

                function = single
            elif self.collective:

                def collective(x, w, iters):
                    return strategy.run(barrier_loop, args=(x, w, iters))

                function = collective
            else:

                def mirrored(x, w, iters):
                    return strategy.run(replica_loop, args=(x, w, iters, None, host))

                function = mirrored
            self._functions[data] = tf.function(function, reduce_retracing=True)
        return self._functions[data]

    def _args(self, xs: list, ws: list) -> tuple:
        if self.strategy is None:
            return xs[0], ws[0]
        per_replica = self.strategy.experimental_distribute_values_from_function
        local = self.replica_offset
        return (
            per_replica(lambda ctx: xs[ctx.replica_id_in_sync_group - local]),
            per_replica(lambda ctx: ws[ctx.replica_id_in_sync_group - local]),
        )

    def _local(self, out) -> list:
        if self.strategy is None:
            return [out]
        return list(self.strategy.experimental_local_results(out))

    def _load(self, point: Point) -> tuple[Any, tuple, list, list]:
        """The function for the point, its arguments, the X shards held here and the Ws."""
        self._scattered = self.collective and point.data == "host"
        if self._scattered:
            ws = self.weights(point)
            xs, args = self._scatter.operands(point, ws)
            return self._scatter.function(point.replicas), args, xs, ws
        xs, ws = self.operands(point)
        return self._function(point.data), self._args(xs, ws), xs, ws

    def _outputs(self, out) -> list[str]:
        """Where Y ends up (with data: host in a multi-worker group: worker 0's host)."""
        if self._scattered:
            return [short_device(t.device) for t in out] if self._scatter.task == 0 else []
        return [short_device(t.device) for t in self._local(out[0] if self.collective else out)]

    def _heads(self, out) -> list[np.ndarray]:
        """Fetch each local replica's corner of Y to the host: this waits for its devices (and,
        in a multi-worker group, for the all-reduce, i.e. for every worker)."""
        if self._scattered:
            return [t.numpy() for t in out]
        if self.collective:
            heads, total = out
            self._local(total)[0].numpy()
            return [t.numpy() for t in self._local(heads)]
        return [t.numpy() for t in self._local(out)]

    # ---- one point -------------------------------------------------------------------------

    def prepare(self, point: Point, settings: dict) -> dict:
        """Operands, trace and warm-up, placement and numerical checks. Returns evidence
        (status 'ok') or a terminal status; the point stays loaded for `block`."""
        self._point = None
        try:
            return self._prepare(point, settings)
        except tf.errors.ResourceExhaustedError as exc:
            return {"status": "oom", "reason": _first_line(exc.message)}
        except (tf.errors.OpError, ValueError, RuntimeError) as exc:
            text = exc.message if isinstance(exc, tf.errors.OpError) else str(exc)
            return {"status": "failed", "reason": f"{type(exc).__name__}: {_first_line(text)}"}

    def _prepare(self, point: Point, settings: dict) -> dict:
        entered = time.perf_counter()
        fn, args, xs, ws = self._load(point)
        one = tf.constant(1)
        for _ in range(settings["warmup"]):  # tracing and first allocations happen here
            out = fn(*args, one)
            heads = self._heads(out)
        placed = self._placement(fn, args, one)
        expected = sorted(short_device(n) for n in self.devices.names)
        if placed != expected:
            return _failed(f"matmuls were placed on {placed}, expected {expected}")
        error = None  # a member that holds no X (data: host, worker j > 0): worker 0 checks
        if xs:
            error = numerical_error(xs, ws[0], heads)
            tolerance = numerical_tolerance(point.dtype, point.k)
            if error > tolerance:
                return _failed(
                    f"numerical check failed: error {error:.3g} > tolerance {tolerance:.3g}"
                )
        self._point = {"fn": fn, "args": args}
        return {
            "status": "ok",
            "devices": placed,
            "output_devices": self._outputs(out),
            "numerics_error": error,
            "warmup_s": time.perf_counter() - entered,
        }

    def block(self, inner: int) -> float:
        """One timed block of the loaded point: `inner` iterations, devices synced. In a
        multi-worker group an untimed all-reduce first lines the workers up, so no worker's
        clock starts while it waits for another to receive the request."""
        loaded = self._point
        iters = tf.constant(inner)
        if self.collective:
            self._line_up()
        start = time.perf_counter()
        self._heads(loaded["fn"](*loaded["args"], iters))
        return time.perf_counter() - start

    def release(self) -> None:
        self._point = None

    def _line_up(self) -> None:
        if "line_up" not in self._functions:
            strategy = self.strategy

            def line_up():
                return strategy.run(
                    lambda: tf.distribute.get_replica_context().all_reduce("sum", tf.constant(1.0))
                )

            self._functions["line_up"] = tf.function(line_up)
        self._local(self._functions["line_up"]())[0].numpy()

    def run(self, point: Point, settings: dict) -> dict:
        """Measure one point in this process: prepare, then `timing.sample` over its blocks."""
        entered = time.perf_counter()
        evidence = self.prepare(point, settings)
        if evidence["status"] != "ok":
            return evidence
        try:
            sampled = timing.sample(self.block, settings)
        except tf.errors.ResourceExhaustedError as exc:
            return {"status": "oom", "reason": _first_line(exc.message)}
        finally:
            self.release()
        return {**evidence, **sampled.fields(), "point_s": time.perf_counter() - entered}

    def _placement(self, fn, args: tuple, iters) -> list[str]:
        """Devices the traced graph pins the matmuls to (soft placement is off, so binding)."""
        graph = fn.get_concrete_function(*args, iters).graph
        return sorted(
            short_device(op.device) for op in graph.get_operations() if op.type == "MatMul"
        )


def numerical_error(xs: list, w, heads: list[np.ndarray]) -> float:
    """Max error of Y's corner against NumPy in float64, relative to the RMS of the reference."""
    w_corner = w[:, :HEAD_COLS].numpy().astype(np.float64)
    worst = 0.0
    for x, head in zip(xs, heads, strict=True):
        if x.shape[0] == 0:
            continue
        reference = x[:HEAD_ROWS].numpy().astype(np.float64) @ w_corner
        scale = max(float(np.sqrt(np.mean(reference**2))), 1e-30)
        worst = max(worst, float(np.max(np.abs(head.astype(np.float64) - reference))) / scale)
    return worst


def numerical_tolerance(dtype: str, k: int) -> float:
    """Rounding of the output plus accumulation over k terms (half types accumulate in fp32)."""
    accumulate = _EPS["float32"] if dtype in ("float16", "bfloat16") else _EPS[dtype]
    return 8 * _EPS[dtype] + 32 * accumulate * math.sqrt(k)


def _failed(reason: str) -> dict:
    return {"status": "failed", "reason": reason}


def _first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0][:500] if lines else "unknown error"
