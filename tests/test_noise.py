"""Which verdicts rest on noisy points, and which timing settings would tighten them, on rows
with planted noise and answers worked out by hand."""

from __future__ import annotations

import pytest

from tfscale import analysis, noise
from tfscale.plan import Point
from tfscale.results import ok_row

DEFAULT_TIMING = {"min_repeats": 5, "min_time_s": 0.2, "max_time_s": 10.0, "min_block_s": 0.01}


def row(group: str, m: int, time_s: float, spread: float, inner: int) -> dict:
    """Samples t(1-s), t, t(1+s): the IQR is s of the median; blocks last inner x t."""
    samples = [time_s * (1 - spread), time_s, time_s * (1 + spread)]
    point = Point(group, m, 64, 64, "float32", "device")
    return ok_row(point, samples, emulated=False, inner=inner)


def test_a_verdict_rests_on_both_groups_points_it_compares():
    cpu = [row("cpu", m, 1e-3, 0.4 if m == 10000 else 0.01, 10) for m in (1, 10, 100, 10000)]
    gpu = [row("gpu", m, 9e-4, 0.3 if m == 100 else 0.01, 10) for m in (1, 10, 100)]
    (verdict,) = analysis.verdicts(cpu + gpu, ["cpu", "gpu"], "cpu")
    (noisy,) = noise.noisy_verdicts(cpu + gpu, [verdict])
    # cpu's noisy m = 10000 has no gpu point beside it: no verdict rests on it
    assert noisy.points == 6 and [(r["group"], r["m"]) for r in noisy.noisy] == [("gpu", 100)]
    assert noisy.sentence() == (
        "gpu vs cpu (float32, device): 1 of 6 points noisy, worst gpu m = 100 "
        "(IQR 30% of the median)"
    )


def test_quiet_verdicts_are_not_listed():
    rows = [row(g, m, 1e-3, 0.05, 10) for g in ("cpu", "gpu") for m in (1, 10, 100)]
    assert noise.noisy_verdicts(rows, analysis.verdicts(rows, ["cpu", "gpu"], "cpu")) == []


def test_short_noisy_blocks_get_a_longer_min_block_s_and_enough_repeats():
    tighter = noise.tighter_timing([row("gpu", 100, 9e-4, 0.3, 10)], DEFAULT_TIMING)
    # 0.009 s blocks at 30%: 0.009 x 3^2 = 0.081 s -> 0.1 s; then 30% x sqrt(0.09) = 9%, and
    # the median within 2.5%: (sqrt(pi/2) / 1.349 x 9% / 2.5%)^2 = 11.2 -> 12 samples
    assert tighter.settings == {"min_block_s": 0.1, "min_repeats": 12}
    assert tighter.expected_iqr == pytest.approx(0.09)
    assert not tighter.capped and tighter.point_s == pytest.approx(1.2)
    assert tighter.command() == "--set timing.min_block_s=0.1 --set timing.min_repeats=12"


def test_blocks_are_not_lengthened_past_one_second():
    tighter = noise.tighter_timing([row("cpu", 100, 0.5, 0.4, 1)], DEFAULT_TIMING)
    # 0.5 s blocks at 40% would want 0.5 x 4^2 = 8 s: 1 s at most, leaving 40% x sqrt(0.5)
    # = 28%; (0.929 x 28.3% / 2.5%)^2 = 110.5 -> 111 samples of 1 s: max_time_s 2 x 111 -> 500
    assert tighter.settings == {"min_block_s": 1.0, "min_repeats": 111, "max_time_s": 500.0}
    assert tighter.capped and tighter.expected_iqr == pytest.approx(0.4 * 0.5**0.5)


def test_a_point_whose_blocks_are_already_long_only_gets_more_repeats():
    tighter = noise.tighter_timing([row("cpu", 100, 2.0, 0.12, 1)], DEFAULT_TIMING)
    # a 1 s min_block_s would not change a 2 s block: 12% stays; (0.929 x 12% / 2.5%)^2
    # = 19.9 -> 20 samples of 2 s: 40 s, over max_time_s: 2 x 40 -> 100
    assert tighter.settings == {"min_repeats": 20, "max_time_s": 100.0}
    assert tighter.min_block_s == 0.01 and tighter.capped


def test_settings_that_already_suffice_are_not_suggested():
    timing = {**DEFAULT_TIMING, "min_block_s": 0.1, "min_repeats": 12}
    assert noise.tighter_timing([row("gpu", 100, 9e-4, 0.3, 10)], timing) is None
