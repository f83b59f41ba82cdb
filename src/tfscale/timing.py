"""How samples are taken from a timed block, whoever runs the block (no TensorFlow here).

`block(inner)` runs the op `inner` times and returns the seconds it took, devices synced.
A worker passes its own tf.function; the driver of a multi-worker group passes a function that
runs one block on every worker at once and returns the slowest worker's time.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_INNER = 1 << 24

Block = Callable[[int], float]


@dataclass(frozen=True)
class Sampled:
    samples: list[float]  # seconds per iteration, one per block
    inner: int
    timed_s: float  # seconds inside timed blocks
    calibration_s: float  # seconds spent choosing inner and reaching the steady state
    loop_scaling: float | None  # time of 2*inner / time of inner, ~2 when the loop really runs
    call_s: float  # median of one whole call of one iteration
    warnings: list[str]

    def fields(self) -> dict:
        """The measured fields of an ok result (statistics are derived later, from samples)."""
        return {
            "samples": self.samples,
            "timing": "graph_loop",
            "inner": self.inner,
            "call_s": self.call_s,
            "loop_scaling": self.loop_scaling,
            "calibration_s": self.calibration_s,
            "timed_s": self.timed_s,
            "warnings": self.warnings,
        }


def calibrate(block: Block, min_block_s: float) -> tuple[int, float]:
    """Grow `inner` until one block lasts `min_block_s` (like blocked_autorange)."""
    inner, spent = 1, 0.0
    while True:
        took = block(inner)
        spent += took
        if took >= min_block_s or inner >= MAX_INNER:
            return inner, spent
        grow = min_block_s * 1.2 / max(took, 1e-7)
        inner = min(MAX_INNER, max(2 * inner, math.ceil(inner * min(grow, 100.0))))


def settle(block: Block, inner: int, budget_s: float) -> float:
    """Run untimed blocks until the time stops falling, within budget_s.

    Fresh operands can run a memory-bound op 2x slower for its first ~100 ms (measured here:
    [1,1e6]@[1e6,1] at 1.7 ms, then 0.86 ms); samples start in the steady state. Steady means
    three blocks in a row no faster than 95% of the best so far.
    """
    best, calm, spent = math.inf, 0, 0.0
    while calm < 3 and spent < budget_s:
        took = block(inner)
        spent += took
        calm = calm + 1 if took >= 0.95 * best else 0
        best = min(best, took)
    return spent


def sample(block: Block, timing: dict, clock: Callable[[], float] = time.perf_counter) -> Sampled:
    """Calibrate, settle, then take samples until min_repeats and min_time_s (or max_time_s).

    `clock` measures the sampling phase's wall time (blocks plus what runs between them);
    tests pass a fake one that their fake block advances."""
    inner, calibration = calibrate(block, timing["min_block_s"])
    calibration += settle(block, inner, timing["min_time_s"])
    blocks: list[float] = []
    started = clock()
    while True:
        blocks.append(block(inner))
        spent = clock() - started
        enough = len(blocks) >= timing["min_repeats"] and spent >= timing["min_time_s"]
        if enough or spent >= timing["max_time_s"]:
            break
    samples = [t / inner for t in blocks]
    timed_s, loop_scaling = sum(blocks), None
    if statistics.median(blocks) <= 4 * timing["min_block_s"] and inner <= MAX_INNER // 2:
        double = block(2 * inner)  # proves the loop runs: ~2x the time of `inner`
        loop_scaling = double / statistics.median(blocks)
        samples.append(double / (2 * inner))
        timed_s += double
    call_s = (
        statistics.median([block(1) for _ in range(5)]) if inner > 1 else statistics.median(samples)
    )
    warnings = []
    if loop_scaling is not None and not 1.5 <= loop_scaling <= 2.6:
        warnings.append(f"loop scaling {loop_scaling:.2f} (expected ~2): timing may be off")
    if len(blocks) < timing["min_repeats"]:
        warnings.append(f"only {len(blocks)} samples within max_time_s")
    return Sampled(samples, inner, timed_s, calibration, loop_scaling, call_s, warnings)
