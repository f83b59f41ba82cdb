"""One point on one device group: operands, the timed tf.function, samples (worker side).

How a sample is taken, and why:
- Operands are made on their devices once per point, outside every timed region.
- The op runs `inner` times inside one graph call (a while loop), so a small op is not buried
  under the 230-540 us a tf.function call costs in Python dispatch. Each iteration carries a
  control dependency on the previous result, so TF can neither hoist the matmul out of the loop
  nor run iterations concurrently; that the loop is really executed is checked per point where
  it is cheap (`loop_scaling`: the time of 2*inner iterations over that of inner, ~2).
- A block ends by fetching a few entries of the last result to the host, which waits for every
  device the block used. `inner` grows until a block lasts `min_block_s`.
- The first calls (tracing, allocation) and the blocks until the time stops falling are
  warm-up and never timed. `call_s`, the median time of
  one whole Python-level call of one iteration, is reported separately.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import numpy as np
import tensorflow as tf

from tfscale.devices import DeviceSet
from tfscale.plan import Point

HEAD_ROWS, HEAD_COLS = 4, 8  # the corner of Y fetched to sync, and checked against NumPy
MAX_INNER = 1 << 24
HOST = "/device:CPU:0"
_EPS = {"float16": 2**-10, "bfloat16": 2**-7, "float32": 2**-23, "float64": 2**-52}


def short_device(name: str) -> str:
    """'/job:localhost/replica:0/task:0/device:GPU:1' -> 'GPU:1'."""
    return name.rsplit("device:", 1)[-1] if name else "?"


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


class Measurer:
    """Measures points on one DeviceSet; keeps its tf.functions (traced once per shape family)."""

    def __init__(self, devices: DeviceSet):
        self.devices = devices
        self.strategy = None
        if devices.kind == "mirrored":
            self.strategy = tf.distribute.MirroredStrategy(devices=list(devices.names))
        self._functions: dict[str, Any] = {}

    # ---- operands --------------------------------------------------------------------------

    def operands(self, point: Point) -> tuple[list, list]:
        """X shards (on the devices, or on the host for data: host) and one W per device."""
        dtype = tf.as_dtype(point.dtype)
        names = self.devices.names
        with tf.device(names[0]):
            w = tf.random.stateless_normal((point.k, point.n), seed=[2, 0], dtype=dtype)
        ws = [w]
        for name in names[1:]:
            with tf.device(name):
                ws.append(tf.identity(w))
        xs = []
        for i, rows in enumerate(point.shard_rows()):
            with tf.device(names[i] if point.data == "device" else HOST):
                xs.append(tf.random.stateless_normal((rows, point.k), seed=[1, i], dtype=dtype))
        return xs, ws

    def _function(self, data: str):
        if data not in self._functions:
            host = HOST if data == "host" else None
            if self.strategy is None:
                device = self.devices.names[0]

                def single(x, w, iters):
                    with tf.device(device):
                        return replica_loop(x, w, iters, device, host)

                self._functions[data] = tf.function(single, reduce_retracing=True)
            else:
                strategy = self.strategy

                def mirrored(x, w, iters):
                    return strategy.run(replica_loop, args=(x, w, iters, None, host))

                self._functions[data] = tf.function(mirrored, reduce_retracing=True)
        return self._functions[data]

    def _args(self, xs: list, ws: list) -> tuple:
        if self.strategy is None:
            return xs[0], ws[0]
        per_replica = self.strategy.experimental_distribute_values_from_function
        return (
            per_replica(lambda ctx: xs[ctx.replica_id_in_sync_group]),
            per_replica(lambda ctx: ws[ctx.replica_id_in_sync_group]),
        )

    def _heads(self, out) -> list[np.ndarray]:
        """Fetch each replica's corner of Y to the host: this waits for all devices."""
        if self.strategy is None:
            return [out.numpy()]
        return [t.numpy() for t in self.strategy.experimental_local_results(out)]

    # ---- one point -------------------------------------------------------------------------

    def run(self, point: Point, timing: dict) -> dict:
        """Measure one point; return raw samples and evidence (status 'ok'), or oom/failed."""
        try:
            return self._run(point, timing)
        except tf.errors.ResourceExhaustedError as exc:
            return {"status": "oom", "reason": _first_line(exc.message)}
        except (tf.errors.OpError, ValueError, RuntimeError) as exc:
            text = exc.message if isinstance(exc, tf.errors.OpError) else str(exc)
            return {"status": "failed", "reason": f"{type(exc).__name__}: {_first_line(text)}"}

    def _run(self, point: Point, timing: dict) -> dict:
        entered = time.perf_counter()
        xs, ws = self.operands(point)
        fn = self._function(point.data)
        x, w = self._args(xs, ws)
        one = tf.constant(1)

        warm = time.perf_counter()
        for _ in range(timing["warmup"]):  # tracing and first allocations happen here
            out = fn(x, w, one)
            heads = self._heads(out)
        warmup_s = time.perf_counter() - warm
        placed = self._placement(fn, x, w, one)
        expected = sorted(short_device(n) for n in self.devices.names)
        if placed != expected:
            return _failed(f"matmuls were placed on {placed}, expected {expected}")
        error = numerical_error(xs, ws[0], heads)
        tolerance = numerical_tolerance(point.dtype, point.k)
        if error > tolerance:
            return _failed(f"numerical check failed: error {error:.3g} > tolerance {tolerance:.3g}")

        def block(inner: int) -> float:
            iters = tf.constant(inner)
            start = time.perf_counter()
            self._heads(fn(x, w, iters))
            return time.perf_counter() - start

        inner, elapsed = self._calibrate(block, timing["min_block_s"])
        elapsed += self._settle(block, inner, timing["min_time_s"])
        blocks = []
        started = time.perf_counter()
        while True:
            blocks.append(block(inner))
            spent = time.perf_counter() - started
            enough = len(blocks) >= timing["min_repeats"] and spent >= timing["min_time_s"]
            if enough or spent >= timing["max_time_s"]:
                break
        samples = [t / inner for t in blocks]
        timed_s = sum(blocks)
        loop_scaling = None
        if _median(blocks) <= 4 * timing["min_block_s"] and inner <= MAX_INNER // 2:
            double = block(2 * inner)  # proves the loop runs: ~2x the time of `inner`
            loop_scaling = double / _median(blocks)
            samples.append(double / (2 * inner))
            timed_s += double

        call_s = _median([block(1) for _ in range(5)]) if inner > 1 else _median(samples)
        warnings = []
        if loop_scaling is not None and not 1.5 <= loop_scaling <= 2.6:
            warnings.append(f"loop scaling {loop_scaling:.2f} (expected ~2): timing may be off")
        if len(samples) < timing["min_repeats"]:
            warnings.append(f"only {len(samples)} samples within max_time_s")
        return {
            "status": "ok",
            "samples": samples,
            "timing": "graph_loop",
            "inner": inner,
            "call_s": call_s,
            "loop_scaling": loop_scaling,
            "calibration_s": elapsed,
            "devices": placed,
            "output_devices": self._output_devices(out),
            "numerics_error": error,
            "warnings": warnings,
            "warmup_s": warmup_s,
            "timed_s": timed_s,
            "point_s": time.perf_counter() - entered,
        }

    @staticmethod
    def _calibrate(block, min_block_s: float) -> tuple[int, float]:
        """Grow `inner` until one block lasts `min_block_s` (like blocked_autorange)."""
        inner, spent = 1, 0.0
        while True:
            took = block(inner)
            spent += took
            if took >= min_block_s or inner >= MAX_INNER:
                return inner, spent
            grow = min_block_s * 1.2 / max(took, 1e-7)
            inner = min(MAX_INNER, max(2 * inner, math.ceil(inner * min(grow, 100.0))))

    @staticmethod
    def _settle(block, inner: int, budget_s: float) -> float:
        """Run untimed blocks until the time stops falling, within budget_s.

        Fresh operands can run a memory-bound op 2x slower for its first ~100 ms (measured
        here: [1,1e6]@[1e6,1] at 1.7 ms, then 0.86 ms); samples start in the steady state.
        Steady means three blocks in a row no faster than 95% of the best so far.
        """
        best, calm, spent = math.inf, 0, 0.0
        while calm < 3 and spent < budget_s:
            took = block(inner)
            spent += took
            calm = calm + 1 if took >= 0.95 * best else 0
            best = min(best, took)
        return spent

    def _placement(self, fn, x, w, iters) -> list[str]:
        """Devices the traced graph pins the matmuls to (soft placement is off, so binding)."""
        graph = fn.get_concrete_function(x, w, iters).graph
        return sorted(
            short_device(op.device) for op in graph.get_operations() if op.type == "MatMul"
        )

    def _output_devices(self, out) -> list[str]:
        results = [out] if self.strategy is None else self.strategy.experimental_local_results(out)
        return [short_device(t.device) for t in results]


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


def _median(values: list[float]) -> float:
    return float(np.median(values))


def _failed(reason: str) -> dict:
    return {"status": "failed", "reason": reason}


def _first_line(text: str) -> str:
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return lines[0][:500] if lines else "unknown error"
