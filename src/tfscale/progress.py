"""A live progress line on stderr: points done, the current point, elapsed and ETA.

On a terminal it redraws one line; elsewhere (CI, pipes, `ray submit` logs) it prints one line
per finished point. stdout stays free for the run folder's path.
"""

from __future__ import annotations

import sys
import time

from tfscale.plan import Point


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def describe(point: Point) -> str:
    op = "" if point.op == "matmul" else f" {point.op}"
    weak = " weak" if point.scaling == "weak" else ""
    sizes = (
        f"m={point.m} n={point.n}"
        if point.op == "allreduce"
        else (f"m={point.m} k={point.k} n={point.n}")
    )
    return f"{point.group}{op}{weak} {sizes} {point.dtype} {point.data}"


class Progress:
    def __init__(self, total: int, stream=None):
        self.total, self.done = total, 0
        self.stream = stream or sys.stderr
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()
        self.measured_s, self.measured = 0.0, 0

    def _eta(self) -> str:
        if not self.measured:
            return "?"
        left = self.total - self.done
        return _clock(self.measured_s / self.measured * left)

    def _bar(self) -> str:
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        return "[" + "#" * filled + "." * (width - filled) + f"] {self.done}/{self.total}"

    def start_point(self, point: Point) -> None:
        self._point_started = time.monotonic()
        if self.live:
            line = f"{self._bar()}  {describe(point)}  {_clock(time.monotonic() - self.started)} ETA {self._eta()}"
            self.stream.write("\r\033[K" + line[:160])
            self.stream.flush()

    def finish_point(self, point: Point, row: dict) -> None:
        self.done += 1
        if row["status"] == "ok":
            self.measured_s += time.monotonic() - getattr(self, "_point_started", time.monotonic())
            self.measured += 1
        result = row["status"]
        if result == "ok" and row.get("busbw_gbps") is not None:
            result = f"{row['median_s'] * 1e6:,.1f} us  busbw {row['busbw_gbps']:,.2f} GB/s"
        elif result == "ok":
            result = f"{row['median_s'] * 1e6:,.1f} us  {row['gflops']:,.2f} GFLOP/s"
        else:
            result = f"{result}: {row.get('reason') or ''}"[:120]
        line = f"{self._bar()}  {describe(point)}  {result}"
        if self.live:
            self.stream.write("\r\033[K" + line + "\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.live else "") + text + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.message(
            f"{self.done}/{self.total} points in {_clock(time.monotonic() - self.started)}"
        )
