"""Result rows: their statuses, their shape, and the statistics derived from raw samples.

Shared by the driver and the worker; imports neither Ray nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone

from tfscale.config import OPS, SCALINGS
from tfscale.errors import ConfigError
from tfscale.groups import parse_group
from tfscale.plan import PRECISION, Point

STATUSES = ("ok", "skipped", "oom", "failed", "timeout", "unavailable")
NOISY_IQR = 0.10  # torch.utils.benchmark warns beyond 10% of the median


@dataclass(frozen=True)
class Stats:
    median: float
    q1: float
    q3: float
    min: float
    count: int

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1


def summarize(samples: list[float]) -> Stats:
    """Median, quartiles and min of raw samples (one definition for worker and analysis)."""
    ordered = sorted(samples)
    if len(ordered) == 1:
        only = ordered[0]
        return Stats(only, only, only, only, 1)
    q1, median, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    return Stats(median, q1, q3, ordered[0], len(ordered))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def base_row(point: Point, **fields) -> dict:
    """The coordinates every row carries, whatever its status."""
    return {
        "point_id": point.point_id,
        **point.coordinates(),
        "replicas": point.replicas,
        "global_m": point.global_m,
        "flops": point.flops,
        "bytes": point.bytes,
        "grad_bytes": point.grad_bytes,
        "network_bytes": point.network_bytes,
        "precision": point.precision,
        **fields,
    }


def terminal_row(point: Point, status: str, reason: str, **fields) -> dict:
    assert status in STATUSES and status != "ok"
    return base_row(point, status=status, reason=reason, started_at=now(), **fields)


def ok_row(point: Point, samples: list[float], **fields) -> dict:
    """An ok row: raw samples kept, statistics from `summarize`, warnings in the row itself."""
    median = summarize(samples).median
    warnings = list(fields.pop("warnings", [])) + noise_warnings(samples)
    return base_row(
        point,
        status="ok",
        reason=None,
        samples_s=samples,
        median_s=median,
        **derived_statistics(samples, median, point.flops, point.bytes),
        warnings=warnings,
        **bandwidths(point.op, point.bytes, median, point.replicas),
        **fields,
    )


def derived_statistics(samples: list[float], median_s: float, flops: float, bytes_: float) -> dict:
    """The fields an ok row derives from its raw samples, median, flops and bytes: what the
    writer stores and what a reader fills in for rows that lack them."""
    stats = summarize(samples)
    return {
        "iqr_s": stats.iqr,
        "q1_s": stats.q1,
        "q3_s": stats.q3,
        "min_s": stats.min,
        "repeats": stats.count,
        "gflops": flops / median_s / 1e9,
        "gbps": bytes_ / median_s / 1e9,
    }


def noise_warnings(samples: list[float]) -> list[str]:
    """The warning an ok row carries when its IQR is over NOISY_IQR of its median."""
    stats = summarize(samples)
    if stats.count >= 3 and stats.iqr > NOISY_IQR * stats.median:
        return [f"noisy: IQR is {stats.iqr / stats.median:.0%} of the median"]
    return []


# ---- reading rows someone else wrote --------------------------------------------------------

DATA_MODES = ("device", "host")

# What every row must carry (DESIGN.md "Result row") and cannot be derived: the coordinates,
# the status, and for an ok row the raw timing; the rest is derived when absent (or null).
REQUIRED = ("point_id", "group", "m", "k", "n", "dtype", "data", "flops", "bytes", "status")
REQUIRED_NOT_OK = ("reason",)
REQUIRED_OK = ("emulated", "samples_s", "median_s")
QUANTILES, RATES, COUNTS = (
    ("q1_s", "q3_s", "min_s"),
    ("iqr_s", "gflops", "gbps"),
    ("repeats", "inner"),
)
DERIVED = (*QUANTILES, *RATES, "repeats")
DTYPES = ", ".join(PRECISION)


class RowError(ConfigError):
    """A results.jsonl row that lacks or garbles a field readers need (FILE:LINE: FIELD)."""


def normalize(row: dict) -> dict:
    """A row as readers need it, from any row with the contract's fields: derived statistics
    filled in (by the writer's own functions), defaults for what older releases did not write.
    Raises RowError (field and message; the store adds file and line) when a field readers
    need is missing or wrong."""
    ok = row.get("status") == "ok"
    _check(row, REQUIRED + (REQUIRED_OK if ok else REQUIRED_NOT_OK), OK_CHECKS if ok else NOT_OK)
    out = dict(row)
    _fill(out, "op", lambda: "matmul")  # the only op before the second design
    _fill(out, "scaling", lambda: "strong")
    _fill(out, "precision", lambda: PRECISION[row["dtype"]])
    _fill(out, "replicas", lambda: parse_group(row["group"])[1])
    _fill(out, "network_bytes", lambda: point_of(out).network_bytes)
    _fill(out, "grad_bytes", lambda: point_of(out).grad_bytes)
    _fill(out, "global_m", lambda: point_of(out).global_m)
    if ok:
        if any(row.get(key) is None for key in DERIVED):
            derived = derived_statistics(
                row["samples_s"], row["median_s"], row["flops"], row["bytes"]
            )
            out.update({key: value for key, value in derived.items() if row.get(key) is None})
        bandwidth = bandwidths(out["op"], row["bytes"], row["median_s"], out["replicas"])
        out.update({key: value for key, value in bandwidth.items() if row.get(key) is None})
        _fill(out, "warnings", lambda: noise_warnings(row["samples_s"]))
    return out


def point_of(row: dict) -> Point:
    """The Point a row measured: every coordinate Point has, read from the row."""
    return Point(**{field.name: row[field.name] for field in dataclasses.fields(Point)})


def _fill(row: dict, key: str, make) -> None:
    if row.get(key) is None:
        row[key] = make()


def _check(row: dict, required: tuple[str, ...], checks: dict) -> None:
    for field in required:
        if field not in row:
            raise RowError("missing", field=field)
    for field, (valid, expected) in checks.items():
        if field in row and not valid(row[field]):
            shown = repr(row[field])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise RowError(f"{expected}, got {shown}", field=field)


def _number(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type(): a bool is no number


def _positive(value) -> bool:
    return _number(value) and value > 0


def _optional(valid):
    return lambda value: value is None or valid(value)


def _group(value) -> bool:
    return isinstance(value, str) and _known_group(value)


@functools.lru_cache(maxsize=256)  # a run has a handful of groups and up to ~1e5 rows
def _known_group(name: str) -> bool:
    try:
        parse_group(name)
    except ValueError:
        return False
    return True


def _size(value) -> bool:
    return type(value) is int and value >= 1


def _count(value) -> bool:
    return _number(value) and value >= 0


# What a field must hold where a row has it; checked in this order, the first failure reported.
CHECKS = {
    "status": (lambda v: v in STATUSES, f"expected one of {', '.join(STATUSES)}"),
    "point_id": (lambda v: isinstance(v, str) and v != "", "expected text"),
    "group": (_group, "unknown group; expected cpu, gpu, mirrored:K or multiworker:NxK"),
    "m": (_size, "expected a size >= 1"),
    "k": (lambda v: type(v) is int and v >= 0, "expected a size >= 1 (0: an all-reduce's)"),
    "n": (_size, "expected a size >= 1"),
    "dtype": (lambda v: isinstance(v, str) and v in PRECISION, f"expected one of {DTYPES}"),
    "data": (lambda v: isinstance(v, str) and v in DATA_MODES, "expected device or host"),
    "op": (lambda v: v is None or v in OPS, f"expected one of {', '.join(OPS)}"),
    "scaling": (lambda v: v is None or v in SCALINGS, f"expected one of {', '.join(SCALINGS)}"),
    "flops": (_count, "expected a count"),
    "bytes": (_count, "expected a count"),
    "network_bytes": (_optional(_count), "expected a count"),
    "warnings": (
        lambda v: v is None or (isinstance(v, list) and all(isinstance(w, str) for w in v)),
        "expected a list of texts",
    ),
}
NOT_OK = {**CHECKS, "reason": (lambda v: isinstance(v, str), "expected text saying why")}
OK_CHECKS = {
    **CHECKS,
    "emulated": (lambda v: isinstance(v, bool), "expected true or false"),
    "samples_s": (
        lambda v: isinstance(v, list) and v != [] and all(_positive(s) for s in v),
        "expected a list of positive seconds",
    ),
    "median_s": (_positive, "expected positive seconds"),
    **{field: (_optional(_positive), "expected positive seconds") for field in QUANTILES},
    **{field: (_optional(_count), "expected a number >= 0") for field in RATES},
    **{field: (_optional(lambda v: _number(v) and v >= 1), "expected >= 1") for field in COUNTS},
}


def bandwidths(op: str, nbytes: float, seconds: float, replicas: int) -> dict:
    """nccl-tests' figures for an all-reduce: algbw = bytes / time, and busbw = algbw *
    2(r-1)/r, the rate each link must carry in a ring, comparable across replica counts."""
    if op != "allreduce":
        return {}
    algbw = nbytes / seconds / 1e9
    return {"algbw_gbps": algbw, "busbw_gbps": algbw * 2 * (replicas - 1) / replicas}


def breakdown_fields(variant: str, samples: list[float]) -> dict:
    """A breakdown variant of a point, timed like the point: `compute_s` (a training step
    without its all-reduce), `allreduce_s` (the all-reduce of dW alone), their IQRs and
    samples."""
    stats = summarize(samples)
    return {
        f"{variant}_s": stats.median,
        f"{variant}_iqr_s": stats.iqr,
        f"{variant}_samples_s": samples,
    }
