"""The sampling protocol on a fake op and a fake clock: no sleeping, every number known.

Times are multiples of powers of two, so sums of them are exact and every stopping rule can be
checked to the block.
"""

from __future__ import annotations

import math

import pytest

from tfscale import timing
from tfscale.timing import MAX_INNER

PER_ITERATION = 2**-10  # s per iteration of the fake op (~1 ms)
MIN_BLOCK = 2**-4  # s: calibration aims 20% past it: inner = 77, a block of 77/1024 s
BLOCK = 77 * PER_ITERATION


class FakeOp:
    """A block of `inner` iterations takes `dispatch + inner * per_iteration` seconds (the
    first blocks `slower_first` times that, as fresh operands do), or `fixed` seconds whatever
    inner is (a loop that does not really run). The fake clock advances by each block."""

    def __init__(self, per_iteration=PER_ITERATION, dispatch=0.0, slower_first=(), fixed=None):
        self.per_iteration, self.dispatch, self.fixed = per_iteration, dispatch, fixed
        self.slower_first = list(slower_first)
        self.now = 0.0
        self.inners: list[int] = []

    def block(self, inner: int) -> float:
        took = self.fixed if self.fixed is not None else self.dispatch + inner * self.per_iteration
        if self.slower_first:
            took *= self.slower_first.pop(0)
        self.inners.append(inner)
        self.now += took
        return took

    def clock(self) -> float:
        return self.now


def settings(**overrides) -> dict:
    return {
        "warmup": 2,
        "min_repeats": 5,
        "min_time_s": 1.0,
        "max_time_s": 10.0,
        "min_block_s": MIN_BLOCK,
        **overrides,
    }


def test_calibration_grows_inner_until_one_block_lasts_min_block_s():
    op = FakeOp()
    inner, spent, _ = timing.calibrate(op.block, MIN_BLOCK)
    # 1 iteration: 1/1024 s, aim 20% past min_block_s: x76.8 -> 77 iterations, 77/1024 s;
    # then 154 iterations take twice as long: the loop fills the block
    assert op.inners == [1, 77, 154] and inner == 77
    assert PER_ITERATION < MIN_BLOCK <= inner * PER_ITERATION
    assert spent == (1 + 77 + 154) * PER_ITERATION  # calibration blocks are counted, not sampled


def test_calibration_grows_at_most_100x_a_step():
    op = FakeOp(per_iteration=2**-20)  # ~1 us: 1, 100, then aim at 1.2 x 1/128 s
    inner, _, _ = timing.calibrate(op.block, 2**-7)
    assert op.inners == [1, 100, 9831, 2 * 9831] and inner == 9831
    assert inner * 2**-20 >= 2**-7


def test_an_op_too_fast_to_time_stops_growing_at_max_inner():
    op = FakeOp(per_iteration=0.0)  # a block that takes no time at all
    inner, _, _ = timing.calibrate(op.block, MIN_BLOCK)
    assert inner == MAX_INNER and op.inners[-1] == MAX_INNER


def test_calibration_grows_inner_until_the_call_around_the_loop_is_a_small_part():
    # a call costs 1/16 s (a multi-worker function's dispatch); an iteration 1/16384 s
    op = FakeOp(per_iteration=2**-14, dispatch=MIN_BLOCK)
    inner, _, _ = timing.calibrate(op.block, MIN_BLOCK)
    # one block of 1 iteration already lasts min_block_s (the fastest of 3 calls says so too),
    # but nearly all of it is the call
    assert op.inners[:4] == [1, 1, 1, 2]
    loop, call = inner * 2**-14, MIN_BLOCK
    assert loop >= 5 * call  # the call is under ~15% of a block
    assert op.block(2 * inner) >= timing.LOOP_BOUND * op.block(inner)


def test_settle_waits_until_the_time_stops_falling():
    op = FakeOp(slower_first=[2.0, 1.8, 1.5])  # fresh operands: slower first blocks
    spent = timing.settle(op.block, 77, budget_s=10.0)
    # three slower blocks, then the first steady one sets the best, then three calm ones
    assert len(op.inners) == 3 + 1 + 3
    assert spent == pytest.approx(BLOCK * (2.0 + 1.8 + 1.5 + 4))


def test_settle_gives_up_at_its_budget_when_the_time_keeps_falling():
    op = FakeOp(slower_first=[1.0, 0.5, 0.25, 0.125, 0.0625])  # halves every block
    spent = timing.settle(op.block, 77, budget_s=1.5 * BLOCK)
    assert len(op.inners) == 2 and spent == 1.5 * BLOCK


def test_sampling_stops_once_min_time_s_is_spent_when_it_takes_more_than_min_repeats():
    op = FakeOp()
    sampled = timing.sample(op.block, settings(min_repeats=5, min_time_s=1.0), clock=op.clock)
    blocks = 14  # 14 x 77/1024 s = 1.05 s >= 1 s > 13 x 77/1024 s
    assert sampled.inner == 77
    assert sampled.samples == [PER_ITERATION] * (blocks + 1)  # + the block of 2 x inner
    assert sampled.timed_s == (blocks + 2) * BLOCK
    assert sampled.warnings == []


def test_sampling_takes_min_repeats_when_min_time_s_comes_first():
    op = FakeOp()
    sampled = timing.sample(op.block, settings(min_repeats=30, min_time_s=0.1), clock=op.clock)
    assert len(sampled.samples) == 30 + 1


def test_sampling_stops_at_max_time_s_and_says_how_many_samples_it_got():
    op = FakeOp()
    rules = settings(min_repeats=100, min_time_s=0.1, max_time_s=0.5)
    sampled = timing.sample(op.block, rules, clock=op.clock)
    blocks = 7  # 7 x 77/1024 s = 0.53 s >= 0.5 s > 6 x 77/1024 s
    assert len(sampled.samples) == blocks + 1
    assert sampled.warnings == [f"only {blocks} samples within max_time_s"]


def test_time_between_blocks_counts_towards_min_time_s():
    op = FakeOp()

    def slow_clock() -> float:  # the host spends as long again between blocks
        return 2 * op.now

    sampled = timing.sample(op.block, settings(min_repeats=5, min_time_s=1.0), clock=slow_clock)
    assert len(sampled.samples) == 7 + 1  # 7 x 2 x 77/1024 s >= 1 s


def test_loop_scaling_is_two_when_the_loop_really_runs():
    op = FakeOp()
    sampled = timing.sample(op.block, settings(), clock=op.clock)
    assert sampled.loop_scaling == 2.0
    assert op.inners.count(2 * 77) == 2  # calibration's check, and loop scaling's


def test_a_loop_that_does_not_run_is_caught_by_loop_scaling():
    op = FakeOp(fixed=MIN_BLOCK)  # the same time whatever inner is: the loop was pruned
    sampled = timing.sample(op.block, settings(), clock=op.clock)
    # calibration grows inner looking for the loop (100x a round), never finds it
    assert sampled.inner == MAX_INNER // 2 and sampled.loop_scaling == 1.0
    assert sampled.warnings == ["loop scaling 1.00 (expected ~2): timing may be off"]


def test_dispatch_overhead_lowers_loop_scaling_below_two():
    op = FakeOp(dispatch=8 * PER_ITERATION)  # each block: 8/1024 s of overhead + the loop
    sampled = timing.sample(op.block, settings(), clock=op.clock)
    block = 8 + sampled.inner  # in 1/1024 s
    assert sampled.loop_scaling == pytest.approx((8 + 2 * sampled.inner) / block)
    assert 1.5 <= sampled.loop_scaling < 2 and sampled.warnings == []


def test_blocks_far_over_min_block_s_are_not_doubled(monkeypatch):
    monkeypatch.setattr(timing, "ONE_CALL_S", math.inf)  # the 2x check itself
    op = FakeOp(per_iteration=5 * MIN_BLOCK)  # one iteration already lasts 5 min_block_s
    sampled = timing.sample(op.block, settings(min_time_s=2.0), clock=op.clock)
    # calibration's check (2 iterations take twice 1) proves the loop: no extra block
    assert sampled.inner == 1 and sampled.loop_scaling == 2.0
    assert op.inners.count(2) == 1
    assert len(sampled.samples) == 7  # 7 x 5/16 s >= 2 s


def test_call_s_is_one_whole_call_of_one_iteration_dispatch_included():
    op = FakeOp(dispatch=8 * PER_ITERATION)
    sampled = timing.sample(op.block, settings(), clock=op.clock)
    assert op.inners.count(1) == 1 + 5  # calibration's first block, then 5 whole calls
    assert sampled.call_s == 9 * PER_ITERATION
    # a sample is per iteration of a long block: dispatch spread over `inner` iterations
    assert sampled.samples[0] == (8 + sampled.inner) * PER_ITERATION / sampled.inner


def test_call_s_of_an_op_timed_one_call_a_block_is_its_median_sample(monkeypatch):
    monkeypatch.setattr(timing, "ONE_CALL_S", math.inf)  # the 2x check itself
    op = FakeOp(per_iteration=5 * MIN_BLOCK)
    sampled = timing.sample(op.block, settings(), clock=op.clock)
    assert sampled.inner == 1 and sampled.call_s == 5 * MIN_BLOCK
    # calibration 2 blocks, settling 4, sampling 5 (min_repeats): no extra calls for call_s
    assert len(op.inners) == 2 + 4 + 5


def test_calibration_leaves_room_for_min_repeats_samples_within_max_time_s():
    # the call dominates (1/16 s a block), but blocks may only last max_time_s / (5 + 3)
    op = FakeOp(per_iteration=2**-14, dispatch=MIN_BLOCK)
    rules = settings(min_repeats=5, min_time_s=0.1, max_time_s=0.5)
    sampled = timing.sample(op.block, rules, clock=op.clock)
    assert sampled.inner == 1  # one block already lasts 0.5 / 8 s: no room to grow
    assert len(sampled.samples) >= 5 and "only" not in " ".join(sampled.warnings)


def test_one_noisy_block_does_not_pass_for_a_costly_call():
    # the block at inner = 77 is 30% slow once, so its double looks short of 2x; a call of one
    # iteration (which bounds the call's cost) shows the call is tiny: inner stays 77
    op = FakeOp(slower_first=[1.0, 1.3])
    inner, spent, scaling = timing.calibrate(op.block, MIN_BLOCK)
    assert op.inners == [1, 77, 154, 1, 1, 1] and inner == 77 and scaling is None
    assert spent == pytest.approx((1 + 1.3 * 77 + 154 + 3) * PER_ITERATION)
    # sampling then proves the loop on its median block
    op = FakeOp(slower_first=[1.0, 1.3])
    sampled = timing.sample(op.block, settings(), clock=op.clock)
    assert sampled.inner == 77 and sampled.loop_scaling == 2.0 and sampled.warnings == []


def test_one_noisy_block_of_one_iteration_is_measured_again_before_inner_grows(monkeypatch):
    monkeypatch.setattr(timing, "ONE_CALL_S", math.inf)  # the 2x check itself
    # one iteration fills a block (5 min_block_s); the first block is 20% slow, so its double
    # looks short of 2x
    op = FakeOp(per_iteration=5 * MIN_BLOCK, slower_first=[1.2])
    inner, _, scaling = timing.calibrate(op.block, MIN_BLOCK, max_block_s=4.0)
    assert op.inners == [1, 2, 1, 2] and inner == 1 and scaling == 2.0


def test_an_iteration_of_over_one_call_s_is_timed_one_call_a_block_without_a_2x_check():
    op = FakeOp(per_iteration=2 * timing.ONE_CALL_S, dispatch=PER_ITERATION)
    inner, spent, scaling = timing.calibrate(op.block, MIN_BLOCK)
    assert op.inners == [1] and inner == 1 and scaling is None  # one block, no doubling
    sampled = timing.sample(op.block, settings(), clock=op.clock)
    assert sampled.inner == 1 and sampled.loop_scaling is None and not sampled.warnings
    assert 2 not in op.inners


def test_the_call_around_the_loop_is_at_most_5_percent_of_a_sampled_block():
    # 8/1024 s a call: calibration's 2x check alone admits blocks where it is ~10%
    op = FakeOp(dispatch=8 * PER_ITERATION)
    inner, _, _ = timing.calibrate(op.block, MIN_BLOCK)
    assert 8 / (8 + inner) > 0.05
    sampled = timing.sample(op.block, settings(), clock=op.clock)
    assert 8 / (8 + sampled.inner) <= 0.05
    # the call's cost from a whole call of one iteration and a block: just what is needed
    assert sampled.inner == 8 * 19


def test_a_cheap_call_leaves_calibrations_inner_as_it_is():
    op = FakeOp()  # no call cost: a call of one iteration is one iteration
    sampled = timing.sample(op.block, settings(), clock=op.clock)
    assert sampled.inner == 77


def test_an_iteration_inside_the_one_iteration_call_is_not_taken_for_call_cost():
    # 4/1024 s an iteration, 1/1024 s a call: a call of one iteration is mostly the iteration
    op = FakeOp(per_iteration=4 * PER_ITERATION, dispatch=PER_ITERATION)
    sampled = timing.sample(op.block, settings(), clock=op.clock)
    assert sampled.inner == 16  # calibration's: the call is 1/65 of a block already


def test_one_slow_call_does_not_stop_calibration_at_one_iteration():
    # a call of one iteration is mostly dispatch (half min_block_s); the first is 2.5x slow
    op = FakeOp(per_iteration=2**-10, dispatch=MIN_BLOCK / 2 - 2**-10, slower_first=[2.5])
    inner, _, _ = timing.calibrate(op.block, MIN_BLOCK)
    assert op.inners[:3] == [1, 1, 1] and inner > 1
    assert op.block(inner) >= MIN_BLOCK


def test_a_block_measured_no_slower_than_one_call_still_bounds_the_call():
    # noise: the blocks at inner look no slower than a call of one iteration
    wider = timing.call_share_inner(inner=4, took=2.0e-3, one=2.1e-3, longest=1.0)
    # the upper bounds: the call is one whole call, an iteration a quarter of the block
    assert wider == math.ceil(2.1e-3 * 19 / (2.0e-3 / 4))
