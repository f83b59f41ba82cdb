"""One point on one device group: load the op, warm up, prove where it ran, check it, time it.

The protocol is the same for every op (see worker/ops for what differs):
- Operands are made on their devices once per point, outside every timed region.
- The op runs `inner` times inside one graph call (a while loop), so a small op is not buried
  under the 230-540 us a tf.function call costs in Python dispatch; `timing.sample` checks that
  time scales with `inner` (the loop is not optimised away).
- A block ends by fetching a few entries of the last result to the host, which waits for every
  device the block used. In a multi-worker group an all-reduce that depends on those entries
  ends the block too, so its time covers the slowest worker.
- The first calls (tracing, allocation) are warm-up and never timed. The first one records the
  executed graph: the devices of the kernels inside the timed loop (soft placement is off, so
  a GPU group's kernels cannot quietly run on a CPU) and the loop's transfers.
- float32 is true fp32: TF32 is off in the worker except for `dtype: tf32` points, which need a
  GPU that has it, and every row states the precision that ran.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from tfscale import timing
from tfscale.plan import Point
from tfscale.results import breakdown_fields
from tfscale.worker import graph
from tfscale.worker.devices import DeviceSet, measured_with, tensorflow_build
from tfscale.worker.gpus import supports_tf32
from tfscale.worker.ops import OPS
from tfscale.worker.ops.base import Loaded, Op
from tfscale.worker.replicas import Replicas, all_reduce_sum, mirrored_strategy


@dataclass(frozen=True)
class _Path:
    """One variant of a point as it runs here."""

    fn: Any  # the tf.function: (*loaded.args, iters) -> what fetch reads
    loaded: Loaded
    fetch: Callable  # out -> the result corners on the host (waits for the devices)
    kernels: tuple[str, ...]  # op types whose devices inside the loop are the evidence
    per_replica: int  # how many such kernels each replica runs per iteration
    checker: Any  # has numerics(point, loaded, heads, replicas)
    outputs: Callable  # out -> where each result ended up


class Measurer:
    """Measures points on one DeviceSet; keeps the tf.functions of ops without variables
    (traced once per shape family) and the executed-graph facts of each.

    `strategy` is a MultiWorkerMirroredStrategy for a member of a multi-worker group (its local
    replicas are global replicas `replica_offset`...), else None: MirroredStrategy for a
    mirrored group, no strategy for cpu and gpu.
    """

    def __init__(
        self,
        devices: DeviceSet,
        strategy=None,
        replica_offset: int = 0,
        total_replicas: int = 0,
        all_reduce: str | None = None,
        timeout_s: float = 0,
    ):
        self.devices = devices
        self.multiworker = strategy is not None
        if strategy is None and devices.kind == "mirrored":
            strategy = mirrored_strategy(devices.names, all_reduce)
        self.replicas = Replicas(devices, strategy, replica_offset, total_replicas)
        self.timeout_s = timeout_s
        self._scatter = None
        if self.multiworker:
            from tfscale.worker.scatter import HostScatter

            task = replica_offset // len(devices.names)
            self._scatter = HostScatter(task, devices.names)
        self._functions: dict[tuple, Any] = {}
        self._executed: dict[str, graph.Executed] = {}
        self._loaded: dict | None = None
        self._gpu = gpu_summary(devices)

    # ---- one variant of a point --------------------------------------------------------------

    def prepare(self, point: Point, settings: dict, variant: str = "step") -> dict:
        """Operands, trace and warm-up, placement and numerical checks of one variant of the
        point. Returns evidence (status 'ok') or a terminal status; the variant stays loaded
        for `block`."""
        self._loaded = None
        try:
            return self._prepare(point, settings, variant)
        except tf.errors.ResourceExhaustedError as exc:
            return {"status": "oom", "reason": _first_line(exc.message)}
        except (tf.errors.OpError, ValueError, RuntimeError, TypeError) as exc:
            text = exc.message if isinstance(exc, tf.errors.OpError) else str(exc)
            return {"status": "failed", "reason": f"{type(exc).__name__}: {_first_line(text)}"}

    def _prepare(self, point: Point, settings: dict, variant: str) -> dict:
        entered = time.perf_counter()
        op = OPS[point.op]
        why = self.skip(point, op)
        if why:
            return {"status": "skipped", "reason": why}
        tf.config.experimental.enable_tensor_float_32_execution(point.dtype == "tf32")
        path = self._path(op, point, variant)
        one = tf.constant(1)
        out, metadata = graph.call_recorded(path.fn, *path.loaded.args, one)
        heads = path.fetch(out)
        for _ in range(settings["warmup"] - 1):  # first allocations, caches
            heads = path.fetch(path.fn(*path.loaded.args, one))
        path.loaded.check["steps"] = settings["warmup"]
        executed = self._remember(path, metadata)
        placed = list(executed.kernels) if executed else []
        if path.kernels and path.per_replica:
            expected = sorted(
                [graph.short_device(n) for n in self.replicas.names] * path.per_replica
            )
            if placed != expected:
                return _failed(f"the timed loop ran its kernels on {placed}, expected {expected}")
        error, tolerance, unchecked = None, 0.0, None
        if variant != "compute" and heads:  # the compute variant's replicas diverge on purpose
            error, tolerance, unchecked = path.checker.numerics(
                point, path.loaded, heads, self.replicas
            )
            if error is not None and not error <= tolerance:
                return _failed(
                    f"numerical check failed: error {error:.3g} > tolerance {tolerance:.3g}"
                )
        self._loaded = {"fn": path.fn, "args": path.loaded.args, "fetch": path.fetch}
        outputs = path.outputs(out)
        evidence = {
            "status": "ok",
            "variants": list(op.variants(point, self.replicas)),
            "devices": sorted(set(placed)) or sorted(set(outputs)),
            "output_devices": outputs,
            "numerics_error": error,
            "precision": _precision(point.dtype),
            "all_reduce": self.replicas.all_reduce_name(),
            "executed": executed.fields() if executed else None,
            "device_model": self.devices.model,
            "gpu": self._gpu,
            "measured_with": measured_with(),
            "warmup_s": time.perf_counter() - entered,
        }
        if unchecked:
            evidence["warnings"] = [f"numerical check skipped: {unchecked}"]
        return evidence

    def _path(self, op: Op, point: Point, variant: str) -> _Path:
        """How this variant of the point runs here: its function, operands and checks."""
        if self._scatter is not None and point.data == "host":
            fn, loaded = self._scatter.load(point, self.replicas)
            scatter = self._scatter
            return _Path(fn, loaded, scatter.fetch, ("MatMul",), 1, scatter, scatter.outputs)
        loaded = op.load(point, self.replicas, variant)
        fn = self._function(op, loaded, variant, point.data == "host")
        kernels, per_replica = op.kernels, op.per_replica
        if variant == "allreduce":  # a training step's breakdown: the all-reduce alone
            kernels, per_replica = OPS["allreduce"].kernels, 0
        return _Path(fn, loaded, self._fetcher(op), kernels, per_replica, op, self._outputs)

    def skip(self, point: Point, op: Op) -> str | None:
        """Why the point is `skipped` on this group, or None."""
        if point.dtype == "tf32":
            if not self.devices.on_gpus:
                where = "emulated devices" if self.devices.emulated else "a CPU"
                return f"TF32 is a GPU math mode (Ampere and newer); {where} has no TF32"
            old = [g for g in self.devices.gpus if not supports_tf32(g.compute_capability)]
            if old:
                return (
                    f"TF32 needs compute capability 8.0 or newer; {old[0].name} has "
                    f"{old[0].compute_capability}"
                )
            if os.environ.get("NVIDIA_TF32_OVERRIDE") == "0":
                return "NVIDIA_TF32_OVERRIDE=0 turns TF32 off in this worker"
        if self.multiworker and point.data == "host" and point.op != "matmul":
            return f"data: host in a multi-worker group is measured for matmul only, not {point.op}"
        return op.skip(point, self.replicas)

    def block(self, inner: int) -> float:
        """One timed block of the loaded variant: `inner` iterations, devices synced. In a
        multi-worker group an untimed all-reduce first lines the workers up, so no worker's
        clock starts while it waits for another to receive the request."""
        loaded = self._loaded
        iters = tf.constant(inner)
        if self.multiworker:
            self._line_up()
        start = time.perf_counter()
        loaded["fetch"](loaded["fn"](*loaded["args"], iters))
        return time.perf_counter() - start

    def release(self) -> None:
        self._loaded = None

    def run(self, point: Point, settings: dict) -> dict:
        """Measure one point in this process: every variant prepared and sampled in turn; the
        first is the row's time, the others its breakdown (`compute_s`, `allreduce_s`)."""
        entered = time.perf_counter()
        evidence = self.prepare(point, settings)
        if evidence["status"] != "ok":
            return evidence
        try:
            sampled = timing.sample(self.block, settings)
            breakdown = {}
            for variant in evidence["variants"][1:]:
                extra = self.prepare(point, settings, variant)
                if extra["status"] != "ok":
                    return {**extra, "reason": f"{variant} variant: {extra['reason']}"}
                breakdown.update(
                    breakdown_fields(variant, timing.sample(self.block, settings).samples)
                )
        except tf.errors.ResourceExhaustedError as exc:
            return {"status": "oom", "reason": _first_line(exc.message)}
        finally:
            self.release()
        fields = sampled.fields()
        fields["warnings"] = [*evidence.pop("warnings", []), *fields["warnings"]]
        return {**evidence, **fields, **breakdown, "point_s": time.perf_counter() - entered}

    # ---- functions and evidence --------------------------------------------------------------

    def _function(self, op: Op, loaded: Loaded, variant: str, host: bool):
        """The traced function of (op, variant, data): reused across points unless the op's
        operands include variables (then it captures them and is traced per point)."""
        key = (op.name, variant, host)
        if loaded.variables or key not in self._functions:
            body = op.loop(loaded, self.replicas, variant, host)
            if self.multiworker:
                body = _ending_with_all_reduce(body, self.replicas)
            function = tf.function(body, reduce_retracing=True)
            if loaded.variables:
                return function
            self._functions[key] = function
        return self._functions[key]

    def _fetcher(self, op: Op):
        if not self.multiworker:
            return lambda out: op.fetch(out, self.replicas)

        def fetch(out):
            out, done = out
            self.replicas.local(done)[0].numpy()  # waits for every worker
            return op.fetch(out, self.replicas)

        return fetch

    def _remember(self, path: _Path, metadata) -> graph.Executed | None:
        """The executed-graph facts of the function just called: read now if this call
        instantiated it, else those recorded when it was."""
        concrete = path.fn.get_concrete_function(*path.loaded.args, tf.constant(1))
        name = (concrete.name.decode(), path.kernels)
        executed = graph.read(metadata, path.kernels)
        if executed is not None:
            self._executed[name] = executed
        return self._executed.get(name)

    def _outputs(self, out) -> list[str]:
        """Where each local replica's result ended up."""
        if self.multiworker:
            out = out[0]
        first = tf.nest.flatten(out)[0] if isinstance(out, tuple) else out
        return [graph.short_device(t.device) for t in self.replicas.local(first)]

    def _line_up(self) -> None:
        if "line_up" not in self._functions:
            replicas = self.replicas
            options = tf.distribute.experimental.CommunicationOptions(
                timeout_seconds=self.timeout_s or None
            )

            def line_up():
                return replicas.run(lambda: all_reduce_sum(tf.constant(1.0), options))

            self._functions["line_up"] = tf.function(line_up)
        self.replicas.local(self._functions["line_up"]())[0].numpy()


def _ending_with_all_reduce(body, replicas: Replicas):
    """The op's function followed by an all-reduce of what it returns: the block ends when the
    slowest worker has its result (the all-reduce depends on it)."""

    def ended(*args):
        out = body(*args)
        values = tf.nest.flatten(out, expand_composites=False)

        def total(*parts):
            summed = tf.add_n([tf.reduce_sum(tf.cast(p, tf.float32)) for p in parts])
            return all_reduce_sum(summed)

        return out, replicas.run(total, tuple(values))

    return ended


def gpu_summary(devices: DeviceSet) -> dict | None:
    """What every GPU row states: model, compute capability, driver, CUDA, cuDNN, NCCL."""
    if not devices.gpus:
        return None
    build = tensorflow_build()
    first = devices.gpus[0]
    return {
        "model": devices.model,
        "compute_capability": first.compute_capability,
        "driver": first.driver,
        **{key: build[key] for key in ("cuda", "cudnn", "nccl")},
    }


def _precision(dtype: str) -> str:
    """What ran, read back from TensorFlow: fp32 only while TF32 is really off."""
    if dtype in ("float32", "tf32"):
        return "tf32" if tf.config.experimental.tensor_float_32_execution_enabled() else "fp32"
    return {"float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}[dtype]


def _failed(reason: str) -> dict:
    return {"status": "failed", "reason": reason}


def _first_line(text: str) -> str:
    """The line that says what went wrong (for errors raised while tracing, the last one:
    the first only says "in user code:")."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    if not lines:
        return "unknown error"
    return (lines[-1] if lines[0].startswith("in user code") else lines[0])[:500]
