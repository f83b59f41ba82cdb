"""Result rows: their statuses, their shape, and the statistics derived from raw samples.

Shared by the driver and the worker; imports neither Ray nor TensorFlow.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timezone

from tfscale.plan import Point

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
        "flops": point.flops,
        "bytes": point.bytes,
        "network_bytes": point.network_bytes,
        **fields,
    }


def terminal_row(point: Point, status: str, reason: str, **fields) -> dict:
    assert status in STATUSES and status != "ok"
    return base_row(point, status=status, reason=reason, started_at=now(), **fields)


def ok_row(point: Point, samples: list[float], **fields) -> dict:
    """An ok row: raw samples kept, statistics from `summarize`, warnings in the row itself."""
    stats = summarize(samples)
    warnings = list(fields.pop("warnings", []))
    if stats.count >= 3 and stats.iqr > NOISY_IQR * stats.median:
        warnings.append(f"noisy: IQR is {stats.iqr / stats.median:.0%} of the median")
    return base_row(
        point,
        status="ok",
        reason=None,
        samples_s=samples,
        median_s=stats.median,
        iqr_s=stats.iqr,
        q1_s=stats.q1,
        q3_s=stats.q3,
        min_s=stats.min,
        repeats=stats.count,
        gflops=point.flops / stats.median / 1e9,
        gbps=point.bytes / stats.median / 1e9,
        warnings=warnings,
        **fields,
    )
