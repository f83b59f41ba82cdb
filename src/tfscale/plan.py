"""Experiment -> points; flops, minimum bytes, memory per device and whether a point fits.

Pure functions: no Ray, no TensorFlow, easy to test. The arithmetic of each op lives here (not
in the worker's op modules) because the driver writes it into every row, measured or not.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import asdict, dataclass

from tfscale.config import TIED, Experiment, expand_sizes
from tfscale.groups import parse_group, workers_of

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "tf32": 4, "float64": 8}
PRECISION = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32", "tf32": "tf32"}
PRECISION["float64"] = "fp64"


@dataclass(frozen=True)
class Point:
    """One cell of the sweep on one group. Every op is built on Y[m, n] = X[m, k] @ W[k, n]:
    `matmul` is that product, `train_step` one SGD step of that layer with dW all-reduced,
    `allreduce` the all-reduce of an [m, n] tensor per replica (k unused). Under `scaling:
    weak` m is the rows of every replica, else the global rows split over the replicas."""

    group: str
    m: int
    k: int
    n: int
    dtype: str
    data: str
    op: str = "matmul"
    scaling: str = "strong"

    @property
    def point_id(self) -> str:
        key = f"{self.group}|{self.m}|{self.k}|{self.n}|{self.dtype}|{self.data}"
        if (self.op, self.scaling) != ("matmul", "strong"):  # ids of earlier runs stay valid
            key += f"|{self.op}|{self.scaling}"
        return hashlib.sha1(key.encode()).hexdigest()[:12]

    @property
    def replicas(self) -> int:
        return parse_group(self.group)[1]

    @property
    def global_m(self) -> int:
        """Rows of X over all replicas (the global batch)."""
        return self.m * self.replicas if self.scaling == "weak" else self.m

    @property
    def itemsize(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def precision(self) -> str:
        return PRECISION[self.dtype]

    @property
    def flops(self) -> int:
        """Useful work: 2mkn for the product; forward, dW and dX for a training step; none
        for an all-reduce (its measure is bandwidth)."""
        if self.op == "allreduce":
            return 0
        product = 2 * self.global_m * self.k * self.n
        return 3 * product if self.op == "train_step" else product

    @property
    def bytes(self) -> int:
        """The minimum traffic: each product reads its operands and writes its result once
        (three products in a training step); for an all-reduce, one replica's buffer (the
        size nccl-tests reports)."""
        if self.op == "allreduce":
            return self.itemsize * self.m * self.n
        m = self.global_m
        product = self.itemsize * (m * self.k + self.k * self.n + m * self.n)
        return 3 * product if self.op == "train_step" else product

    @property
    def grad_bytes(self) -> int:
        """Bytes all-reduced per step: dW for a training step, the buffer for an all-reduce."""
        if self.op == "train_step":
            return self.itemsize * self.k * self.n
        return self.bytes if self.op == "allreduce" else 0

    @property
    def network_bytes(self) -> int:
        """Bytes that cross the network per iteration: with data: host in a multi-worker group,
        the X shards worker 0 sends and the Y shards it gets back (see worker/scatter.py);
        else 0 (collectives are measured by the allreduce op, not counted here)."""
        kind, replicas = parse_group(self.group)
        if kind != "multiworker" or self.data != "host" or self.op != "matmul":
            return 0
        local = replicas // workers_of(self.group)[0]
        remote_rows = self.global_m - sum(self.shard_rows()[:local])
        return self.itemsize * remote_rows * (self.k + self.n)

    def shard_rows(self) -> list[int]:
        """Rows of X per replica: weak scaling gives each m; strong splits m, the first
        replicas taking the remainder."""
        if self.scaling == "weak":
            return [self.m] * self.replicas
        base, extra = divmod(self.m, self.replicas)
        return [base + (1 if i < extra else 0) for i in range(self.replicas)]

    def coordinates(self) -> dict:
        return asdict(self)


def expand(experiment: Experiment) -> list[Point]:
    """All points, group by group (one actor each), then op, scaling, dtype, data mode, sizes
    ascending. An all-reduce has no k (0 in its rows), no host data and no scaling: those
    axes collapse for it."""
    workload = experiment.workload
    cells = set()
    for m in expand_sizes(workload.m):
        ks = [m] if workload.k == TIED else expand_sizes(workload.k)
        ns = [m] if workload.n == TIED else expand_sizes(workload.n)
        cells.update((m, k, n) for k in ks for n in ns)
    ordered = sorted(cells, key=lambda mkn: (mkn[0] * mkn[1] * mkn[2], mkn))
    points: list[Point] = []
    axes = itertools.product(
        _as_list(workload.op),
        _as_list(workload.scaling),
        _as_list(workload.dtype),
        _as_list(workload.data),
    )
    combos = list(dict.fromkeys(_collapse(*axis) for axis in axes))
    for entry in experiment.groups:
        for op, scaling, dtype, data in combos:
            if op == "allreduce":  # k is unused: 0 in the rows, one point per (m, n)
                cells_of_op = list(dict.fromkeys((m, 0, n) for m, _, n in ordered))
            else:
                cells_of_op = ordered
            points += [
                Point(entry.group, m, k, n, dtype, data, op, scaling) for m, k, n in cells_of_op
            ]
    return points


def _collapse(op: str, scaling: str, dtype: str, data: str) -> tuple[str, str, str, str]:
    if op == "allreduce":
        return op, "strong", dtype, "device"
    return op, scaling, dtype, data


def _as_list(value: str | list[str]) -> list[str]:
    return list(value) if isinstance(value, list) else [value]


def varying_dimension(cells: list) -> str:
    """The x axis of the curves: the one of m, k, n that varies, else flops. `cells` are
    Points or result rows (dicts)."""
    if not cells:
        return "flops"
    get = (lambda c, d: c[d]) if isinstance(cells[0], dict) else getattr
    first = {dim: get(cells[0], dim) for dim in "mkn"}
    varying: set[str] = set()
    for cell in cells:  # one pass: a report reads up to ~1e5 rows many times
        for dim in "mkn":
            if dim not in varying and get(cell, dim) != first[dim]:
                varying.add(dim)
        if len(varying) > 1:
            return "flops"
    return varying.pop() if varying else "flops"


@dataclass(frozen=True)
class Memory:
    """Bytes a point needs on its busiest device, in host memory, and (real GPUs, data:
    host) in TensorFlow's pinned host pool, which stages every host<->GPU copy."""

    per_device: int
    host: int
    pinned: int = 0


def memory_needed(point: Point) -> Memory:
    """Operands, results and what the loop keeps alive (the previous result, gradients)."""
    size = point.itemsize
    rows = max(point.shard_rows())
    k, n, m = point.k, point.n, point.global_m
    if point.op == "allreduce":
        return Memory(size * 3 * point.m * n, 0)  # buffer, result, the implementation's copy
    if point.op == "train_step":
        # X, target, Y and dY, dX; W, dW, the reduced dW
        per_device = size * (2 * rows * k + 3 * rows * n + 3 * k * n)
        host = size * (m * k) if point.data == "host" else 0
        return Memory(per_device, host, host)
    per_device = size * (rows * k + k * n + 2 * rows * n)
    host = size * (m * k + 2 * m * n) if point.data == "host" else 0
    return Memory(per_device, host, host)


@dataclass(frozen=True)
class Capacity:
    """What a worker reported: its host memory and, for real GPUs, each device's memory and
    TensorFlow's pinned host pool (TF_GPU_HOST_MEM_LIMIT_IN_MB)."""

    host_bytes: int
    device_bytes: int | None  # None: the devices share host memory (CPU, emulated)
    pinned_bytes: int | None = None


def fits(point: Point, capacity: Capacity, fraction: float) -> str | None:
    """None if the point fits in `fraction` of memory, else the reason, with the numbers."""
    need = memory_needed(point)
    if capacity.device_bytes is None:
        total = need.per_device * point.replicas + need.host
        budget = capacity.host_bytes * fraction
        if total > budget:
            return f"needs {_gib(total)} of host memory, over {fraction:g} of {_gib(capacity.host_bytes)}"
        return None
    budget = capacity.device_bytes * fraction
    if need.per_device > budget:
        return f"needs {_gib(need.per_device)} per device, over {fraction:g} of {_gib(capacity.device_bytes)}"
    if need.host > capacity.host_bytes * fraction:
        return f"needs {_gib(need.host)} of host memory, over {fraction:g} of {_gib(capacity.host_bytes)}"
    if capacity.pinned_bytes is not None and need.pinned > capacity.pinned_bytes * fraction:
        return (
            f"needs {_gib(need.pinned)} of pinned host memory for the host<->GPU copies, over "
            f"{fraction:g} of TensorFlow's pool of {_gib(capacity.pinned_bytes)} "
            "(raise TF_GPU_HOST_MEM_LIMIT_IN_MB on the workers)"
        )
    return None


def _gib(value: float) -> str:
    return f"{value / 2**30:.3g} GiB" if value >= 2**20 else f"{math.ceil(value / 1024)} KiB"
