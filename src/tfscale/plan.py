"""Experiment -> points; flops, minimum bytes, memory per device and whether a point fits.

Pure functions: no Ray, no TensorFlow, easy to test.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import asdict, dataclass

from tfscale.config import TIED, Experiment, expand_sizes
from tfscale.groups import parse_group, workers_of

DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


@dataclass(frozen=True)
class Point:
    """One cell of the sweep: Y[m, n] = X[m, k] @ W[k, n] on one group."""

    group: str
    m: int
    k: int
    n: int
    dtype: str
    data: str

    @property
    def point_id(self) -> str:
        key = f"{self.group}|{self.m}|{self.k}|{self.n}|{self.dtype}|{self.data}"
        return hashlib.sha1(key.encode()).hexdigest()[:12]

    @property
    def replicas(self) -> int:
        return parse_group(self.group)[1]

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n

    @property
    def bytes(self) -> int:
        """The minimum traffic: read X and W once, write Y once."""
        return DTYPE_BYTES[self.dtype] * (self.m * self.k + self.k * self.n + self.m * self.n)

    @property
    def network_bytes(self) -> int:
        """Bytes that cross the network per iteration: with data: host in a multi-worker group,
        the X shards worker 0 sends and the Y shards it gets back (see scatter.py); else 0."""
        kind, replicas = parse_group(self.group)
        if kind != "multiworker" or self.data != "host":
            return 0
        local = replicas // workers_of(self.group)[0]
        remote_rows = self.m - sum(self.shard_rows()[:local])
        return DTYPE_BYTES[self.dtype] * remote_rows * (self.k + self.n)

    def shard_rows(self) -> list[int]:
        """Rows of X per replica: split along m, the first replicas take the remainder."""
        base, extra = divmod(self.m, self.replicas)
        return [base + (1 if i < extra else 0) for i in range(self.replicas)]

    def coordinates(self) -> dict:
        return asdict(self)


def expand(experiment: Experiment) -> list[Point]:
    """All points, group by group (one actor each), then dtype, data mode, sizes ascending."""
    workload = experiment.workload
    dtypes = _as_list(workload.dtype)
    modes = _as_list(workload.data)
    cells = set()
    for m in expand_sizes(workload.m):
        ks = [m] if workload.k == TIED else expand_sizes(workload.k)
        ns = [m] if workload.n == TIED else expand_sizes(workload.n)
        cells.update((m, k, n) for k in ks for n in ns)
    ordered = sorted(cells, key=lambda mkn: (mkn[0] * mkn[1] * mkn[2], mkn))
    points = []
    for entry in experiment.groups:
        for dtype, data in itertools.product(dtypes, modes):
            points += [Point(entry.group, m, k, n, dtype, data) for m, k, n in ordered]
    return points


def _as_list(value: str | list[str]) -> list[str]:
    return list(value) if isinstance(value, list) else [value]


def varying_dimension(cells: list) -> str:
    """The x axis of the curves: the one of m, k, n that varies, else flops. `cells` are
    Points or result rows (dicts)."""

    def values(dim: str) -> set[int]:
        return {cell[dim] if isinstance(cell, dict) else getattr(cell, dim) for cell in cells}

    varying = [dim for dim in "mkn" if len(values(dim)) > 1]
    return varying[0] if len(varying) == 1 else "flops"


@dataclass(frozen=True)
class Memory:
    """Bytes a point needs on its busiest device and in host memory."""

    per_device: int
    host: int


def memory_needed(point: Point) -> Memory:
    """Operands plus two copies of Y (the loop keeps the previous result alive)."""
    size = DTYPE_BYTES[point.dtype]
    rows = max(point.shard_rows())
    per_device = size * (rows * point.k + point.k * point.n + 2 * rows * point.n)
    host = size * (point.m * point.k + 2 * point.m * point.n) if point.data == "host" else 0
    return Memory(per_device, host)


@dataclass(frozen=True)
class Capacity:
    """What a worker reported: its host memory and, for real GPUs, each device's memory."""

    host_bytes: int
    device_bytes: int | None  # None: the devices share host memory (CPU, emulated)


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
    return None


def _gib(value: float) -> str:
    return f"{value / 2**30:.3g} GiB" if value >= 2**20 else f"{math.ceil(value / 1024)} KiB"
