"""What every op module provides, and what they share (worker side).

An op says, for one point: its operands (made once, outside every timed region), the loop
its iterations run in, the few entries of its result fetched to end a block (the fetch waits
for every device the block used), and its numerical check. The timing protocol, placement
evidence and synchronisation are the same for every op and live in `measure`.

Operands are generated on the host (stateless, seeded by global replica id) and copied to
their devices, so every layout of a group and every worker of a multi-worker group holds the
same numbers, and the NumPy reference can regenerate any shard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from tfscale.plan import Point
from tfscale.worker.replicas import HOST, Replicas

HEAD_ROWS, HEAD_COLS = 4, 8  # the corner of a result fetched to sync, and checked
EPS = {"float16": 2**-10, "bfloat16": 2**-7, "float32": 2**-23, "float64": 2**-52}
EPS["tf32"] = 2**-10  # float32 storage, inputs rounded to 10 mantissa bits by the matmul
SEEDS = {"x": 1, "w": 2, "target": 3, "buffer": 4}


def storage(dtype: str) -> tf.DType:
    """The tensor dtype of a point's precision (tf32 stores float32)."""
    return tf.float32 if dtype == "tf32" else tf.as_dtype(dtype)


def operand(shape: tuple[int, ...], what: str, replica: int, dtype: str) -> tf.Tensor:
    """A seeded standard-normal operand, made on the host (copy it where it belongs)."""
    with tf.device(HOST):
        return tf.random.stateless_normal(shape, seed=[SEEDS[what], replica], dtype=storage(dtype))


def on_devices(replicas: Replicas, build, host: bool = False) -> list:
    """`build(global replica) -> host tensor`, copied to each local replica's device (kept on
    the host for `host=True`)."""
    made = [build(r) for r in replicas.ids()]
    if host:
        return made
    out = []
    for tensor, name in zip(made, replicas.names, strict=True):
        with tf.device(name):
            out.append(tf.identity(tensor))
    return out


def reference(
    shape: tuple[int, ...], what: str, replica: int, dtype: str, columns: int | None = None
) -> np.ndarray:
    """The same operand (or its first rows, or its first `columns`) as float64 NumPy, for
    references."""
    return operand(shape, what, replica, dtype)[..., :columns].numpy().astype(np.float64)


def accumulation_eps(dtype: str) -> float:
    """Half types and TF32 accumulate in fp32."""
    return EPS["float32"] if dtype in ("float16", "bfloat16", "tf32") else EPS[dtype]


def matmul_tolerance(dtype: str, k: int) -> float:
    """Rounding of the output (and of TF32's inputs) plus accumulation over k terms."""
    return 8 * EPS[dtype] + 32 * accumulation_eps(dtype) * math.sqrt(k)


def relative_error(result: np.ndarray, expected: np.ndarray) -> float:
    """Max error relative to the RMS of the reference."""
    scale = max(float(np.sqrt(np.mean(expected**2))), 1e-30)
    return float(np.max(np.abs(result.astype(np.float64) - expected))) / scale


@dataclass
class Loaded:
    """A point's operands in this process: the traced function's arguments (per-replica
    values), and what its numerical check reads afterwards."""

    args: tuple
    check: dict[str, Any] = field(default_factory=dict)
    variables: list = field(default_factory=list)  # captured by the function: trace per point


class Op:
    """The interface of an op module (see the module docstring)."""

    name = ""
    kernels: tuple[str, ...] = ()  # op types whose devices inside the loop are the evidence
    per_replica = 1  # how many of them each replica runs per iteration

    def skip(self, point: Point, replicas: Replicas) -> str | None:
        """Why this point cannot be measured on this group (a `skipped` row), or None."""
        return None

    def variants(self, point: Point, replicas: Replicas) -> tuple[str, ...]:
        """What to time at the point: the op itself first, then its breakdown."""
        return ("step",)

    def load(self, point: Point, replicas: Replicas, variant: str) -> Loaded:
        raise NotImplementedError

    def loop(self, loaded: Loaded, replicas: Replicas, variant: str, host: bool):
        """The Python function to trace: (*loaded.args, iters) -> what to fetch."""
        raise NotImplementedError

    def fetch(self, out, replicas: Replicas) -> list[np.ndarray]:
        """Copy what the function returned to the host (this waits for every device the call
        used); the result corners, one per local replica."""
        return [t.numpy() for t in replicas.local(out)]

    def numerics(
        self, point: Point, loaded: Loaded, heads: list[np.ndarray], replicas: Replicas
    ) -> tuple[float | None, float, str | None]:
        """(error, tolerance, why not checked)."""
        raise NotImplementedError
