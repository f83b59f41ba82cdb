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
LOOP_BOUND = 1.85  # t(2 inner) / t(inner) at or above this: the loop fills the block
ROUNDS = 6  # at most this many rounds of growing inner to get there
LONG_BLOCK_S = 1.0  # a block this long is long enough, whatever the ratio says (noise)
# a block of one iteration this long needs no loop: the call around it (0.2-3 ms of dispatch
# here, a few ms with a multi-worker group's closing all-reduce) is a few % of it, while
# checking 2 x inner against inner on a machine whose blocks swing +-25% took up to 6 blocks
ONE_CALL_S = 0.1
CALL_SHARE = 0.05  # at most this share of a sampled block is the call around the loop

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


def calibrate(
    block: Block, min_block_s: float, max_block_s: float = LONG_BLOCK_S
) -> tuple[int, float, float | None]:
    """Grow `inner` until one block lasts `min_block_s` (like blocked_autorange), then until
    the loop, not the call around it, fills the block: doubling `inner` must nearly double the
    time. A call can cost milliseconds (a multi-worker function's dispatch, a strategy's merge
    calls); a block of one iteration would then time the call, not the op. From a block and
    its double the call's cost and one iteration's are estimated, and inner jumps to where the
    call is at most ~15% of the block (growing at most 100x a round; the call's estimate is
    bounded by the fastest of 3 whole calls of one iteration, so a noisy block does not inflate
    it, and calibration stops where the call is already that small), stopping once a block
    lasts `max_block_s` (noise can make the ratio look short of 2 at any length, and the
    samples must still fit in the time a point may take), or at once where one iteration
    lasts ONE_CALL_S (the call is then a few % of the block; the row has no loop scaling).

    Returns inner, the seconds spent, and t(2 inner) / t(inner) where that was measured at
    the final inner (the loop filled the block), else None."""
    inner, spent, scaling, call_bound = 1, 0.0, None, None
    while True:
        took = block(inner)
        spent += took
        if inner == 1 and min_block_s <= took < 3 * min_block_s:
            # one call just fills a block: the fastest of 3, or one slow call (a busy
            # machine) would stop the growth, and every sample would be one call's dispatch
            again = [block(1) for _ in range(2)]
            spent += sum(again)
            took = min(took, *again)
        if took >= min_block_s or inner >= MAX_INNER:
            break
        grow = min_block_s * 1.2 / max(took, 1e-7)
        inner = min(MAX_INNER, max(2 * inner, math.ceil(inner * min(grow, 100.0))))
    for _ in range(ROUNDS):
        if inner > MAX_INNER // 2 or 2 * took > max_block_s:  # the double must fit too
            break
        if inner == 1 and took >= ONE_CALL_S:
            break
        double = block(2 * inner)
        spent += double
        if double < LOOP_BOUND * took and inner == 1 and call_bound is None:
            # one iteration fills a block: a second pair, the faster of each, before a short
            # ratio is taken for a costly call (one noisy block would make inner grow)
            again, again_double = block(1), block(2)
            spent += again + again_double
            took, double = min(took, again), min(double, again_double)
            call_bound = took
        if double >= LOOP_BOUND * took:
            scaling = double / took
            break
        # the call's cost is at most a whole call of one iteration: the fastest of 3 bounds
        # it, so one noisy block (2 x took - double) cannot pass for a costly call
        if call_bound is None:
            calls = [block(1) for _ in range(3)]
            spent += sum(calls)
            call_bound = min(calls)
        call = min(max(2 * took - double, 0.0), call_bound)
        # the slower of the two blocks' estimates: a slow `took` alone cannot make the call
        # look small either
        per_iteration = min(took - call, (double - call) / 2) / inner
        want = math.ceil(6 * call / per_iteration) if per_iteration > 0 else 100 * inner
        if want <= inner:  # the call is already under ~15% of a block: the double was noise
            break  # (sampling checks loop scaling on its median block)
        fits = math.floor(inner * max_block_s / took)  # blocks stay within max_block_s
        # at most half the cap, so loop scaling can still be checked on 2 x inner
        inner = min(MAX_INNER // 2, max(2 * inner, min(want, 100 * inner, fits)))
        took = block(inner)
        spent += took
    return inner, spent, scaling


def call_share_inner(inner: int, took: float, one: float, longest: float) -> int:
    """The inner at which the call around the loop is at most CALL_SHARE of a block, within
    blocks of `longest` seconds; `inner` if it already is. From a block of `inner` iterations
    (`took`) and a whole call of one (`one`: the call and one iteration), the call's cost and an
    iteration's follow. A sample is a block over its iterations, so the call's cost is spread
    over them: calibration's check of 2 x inner admits up to ~15%, this keeps it to 5%."""
    per_iteration = (took - one) / (inner - 1)
    call = one - per_iteration
    if call <= 0:  # no call cost to speak of
        return inner
    if per_iteration <= 0:  # noise (a block no slower than one call): the upper bounds
        call, per_iteration = one, took / inner
    want = math.ceil(call * (1 - CALL_SHARE) / CALL_SHARE / per_iteration)
    fits = math.floor(inner * longest / took)
    return max(inner, min(MAX_INNER // 2, want, fits))


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
    room = timing["max_time_s"] / (timing["min_repeats"] + 3)  # min_repeats blocks must fit
    longest = min(LONG_BLOCK_S, max(timing["min_block_s"], room))
    inner, calibration, checked = calibrate(block, timing["min_block_s"], longest)
    # whole calls of one iteration: call_s, and the bound on what one call adds to a block
    calls = [block(1) for _ in range(5)] if inner > 1 else []
    if calls:
        probes = [block(inner) for _ in range(2)]
        calibration += sum(calls) + sum(probes)
        wider = call_share_inner(inner, min(probes), min(calls), longest)
        if wider > inner:
            inner, checked = wider, None
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
    # prove the loop runs with a double block that stays short (half what calibration
    # allowed, or a few min_block_s) or within max_time_s; otherwise, and for a block of one
    # iteration, calibration's own check of 2 x inner against inner stands, where it made one
    median = statistics.median(blocks)
    short = median <= max(longest / 2, 4 * timing["min_block_s"])
    if 1 < inner <= MAX_INNER // 2 and (short or spent + 2 * median <= timing["max_time_s"]):
        double = block(2 * inner)  # proves the loop runs: ~2x the time of `inner`
        loop_scaling = double / median
        samples.append(double / (2 * inner))
        timed_s += double
    elif checked is not None:  # blocks too long to double again: calibration's own check
        loop_scaling = checked
    call_s = statistics.median(calls) if calls else statistics.median(samples)
    warnings = []
    if loop_scaling is not None and not 1.5 <= loop_scaling <= 2.6:
        warnings.append(f"loop scaling {loop_scaling:.2f} (expected ~2): timing may be off")
    if len(blocks) < timing["min_repeats"]:
        warnings.append(f"only {len(blocks)} samples within max_time_s")
    return Sampled(samples, inner, timed_s, calibration, loop_scaling, call_s, warnings)
