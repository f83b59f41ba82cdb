"""Verdicts and models on synthetic rows with known answers."""

from __future__ import annotations

import pytest

from tfscale import analysis, models
from tfscale.plan import Point
from tfscale.results import ok_row


def rows_for(
    group: str, times: dict[int, float], spread: float = 0.01, emulated=False, data="device"
) -> list[dict]:
    out = []
    for m, t in times.items():
        point = Point(group, m, 64, 64, "float32", data)
        samples = [t * (1 - spread), t, t * (1 + spread)]
        out.append(ok_row(point, samples, emulated=emulated))
    return out


SIZES = [1, 10, 100, 1000, 10000]


def test_planted_crossover_is_found_exactly():
    cpu = rows_for("cpu", {m: 1e-5 * m for m in SIZES})
    gpu = rows_for("gpu", {m: 1e-3 + 1e-7 * m for m in SIZES})  # crosses between 100 and 1000
    (verdict,) = analysis.verdicts(cpu + gpu, ["cpu", "gpu"], "cpu")
    assert verdict.payoff_x == 1000 and verdict.certain
    assert verdict.speedup_at_hi == pytest.approx(0.1 / (1e-3 + 1e-3))
    assert "from m = 1,000 on" in verdict.sentence()


def test_never_paying_off_says_so_with_the_range():
    cpu = rows_for("cpu", {m: 1e-6 for m in SIZES})
    gpu = rows_for("gpu", {m: 2e-6 for m in SIZES})
    (verdict,) = analysis.verdicts(cpu + gpu, ["cpu", "gpu"], "cpu")
    assert verdict.payoff_x is None
    assert "does not pay off" in verdict.sentence() and "10,000" in verdict.sentence()


def test_payoff_needs_every_larger_size_to_be_faster():
    cpu = rows_for("cpu", {1: 1.0, 10: 1.0, 100: 1.0, 1000: 1.0, 10000: 1.0})
    gpu = rows_for("gpu", {1: 2.0, 10: 0.5, 100: 2.0, 1000: 0.5, 10000: 0.5})
    (verdict,) = analysis.verdicts(cpu + gpu, ["cpu", "gpu"], "cpu")
    assert verdict.payoff_x == 1000


def test_overlapping_iqrs_make_the_verdict_uncertain():
    cpu = rows_for("cpu", {m: 1.00 for m in SIZES}, spread=0.2)
    gpu = rows_for("gpu", {m: 0.95 for m in SIZES}, spread=0.2)
    (verdict,) = analysis.verdicts(cpu + gpu, ["cpu", "gpu"], "cpu")
    assert verdict.payoff_x == 1 and not verdict.certain
    assert "uncertain" in verdict.sentence()


def test_emulated_groups_are_labelled_in_verdicts():
    cpu = rows_for("cpu", {m: 1.0 for m in SIZES})
    gpu = rows_for("gpu", {m: 0.5 for m in SIZES}, emulated=True)
    (verdict,) = analysis.verdicts(cpu + gpu, ["cpu", "gpu"], "cpu")
    assert "gpu (emulated)" in verdict.sentence()


def test_scaling_efficiency_is_speedup_over_gpu_per_replica():
    gpu = rows_for("gpu", {m: 1.0 for m in SIZES})
    mirrored = rows_for("mirrored:4", {m: 0.5 for m in SIZES})
    efficiency = analysis.scaling_efficiency(gpu + mirrored, "mirrored:4", "float32", "device")
    assert [e.efficiency for e in efficiency] == pytest.approx([0.5] * len(SIZES))


def test_pairs_cover_baseline_gpu_and_smaller_mirrored():
    pairs = analysis.pairs(["cpu", "gpu", "mirrored:2", "mirrored:4"], "cpu")
    assert ("cpu", "mirrored:4") in pairs and ("gpu", "mirrored:4") in pairs
    assert ("mirrored:2", "mirrored:4") in pairs and ("mirrored:4", "mirrored:2") not in pairs


def test_cost_model_recovers_known_overhead_and_peak():
    t0, peak = 50e-6, 200.0  # s, GFLOP/s
    rows = rows_for("cpu", {m: t0 + 2 * m * 64 * 64 / (peak * 1e9) for m in SIZES}, spread=0)
    model = models.fit_cost_model(rows)
    assert model.t0_s == pytest.approx(t0, rel=1e-6)
    assert model.peak_gflops == pytest.approx(peak, rel=1e-6)
    assert model.max_rel_residual < 1e-9


def test_noisy_rows_carry_a_warning():
    (row,) = rows_for("cpu", {10: 1.0}, spread=0.3)
    assert any("noisy" in w for w in row["warnings"])


def test_models_predict_a_crossover_between_swept_sizes():
    cpu = rows_for("cpu", {m: 2 * m * 64 * 64 / 10e9 for m in SIZES}, spread=0)  # t0 0, 10 GFLOP/s
    gpu = rows_for("gpu", {m: 1e-4 + 2 * m * 64 * 64 / 1e12 for m in SIZES}, spread=0)
    (verdict,) = analysis.verdicts(cpu + gpu, ["cpu", "gpu"], "cpu")
    # 1e-4 s = w (1/10 - 1/1000) / 1e9  ->  w = 1.0101e6 FLOP  ->  m = w / (2*64*64) = 123.3
    assert verdict.predicted_x == pytest.approx(123.3, rel=1e-3)
    assert verdict.payoff_x == 1000
    assert "between swept sizes" in verdict.sentence()


def test_models_predict_a_crossover_beyond_the_sweep():
    cpu = rows_for("cpu", {m: 2 * m * 64 * 64 / 10e9 for m in SIZES}, spread=0)
    gpu = rows_for("gpu", {m: 1.0 + 2 * m * 64 * 64 / 1e12 for m in SIZES}, spread=0)
    (verdict,) = analysis.verdicts(cpu + gpu, ["cpu", "gpu"], "cpu")
    assert verdict.payoff_x is None and verdict.predicted_x > 10000
    assert "does not pay off" in verdict.sentence() and "beyond the sweep" in verdict.sentence()


def test_a_poor_fit_predicts_nothing():
    cpu = rows_for("cpu", {1: 1.0, 10: 0.001, 100: 1.0, 1000: 0.001, 10000: 1.0}, spread=0)
    gpu = rows_for("gpu", {m: 1e-3 for m in SIZES}, spread=0)
    model = models.fit_cost_model(cpu)
    assert not model.fits_well
    (verdict,) = analysis.verdicts(cpu + gpu, ["cpu", "gpu"], "cpu")
    assert verdict.predicted_x is None


def test_multiworker_is_judged_against_one_node_and_one_device():
    assert ("cpu", "multiworker:2x0") in analysis.pairs(["cpu", "multiworker:2x0"], "cpu")
    pairs = analysis.pairs(["cpu", "gpu", "mirrored:4", "multiworker:2x4"], "cpu")
    assert ("mirrored:4", "multiworker:2x4") in pairs and ("gpu", "multiworker:2x4") in pairs
    cpu = rows_for("cpu", {m: 1.0 for m in SIZES})
    workers = rows_for("multiworker:2x0", {m: 0.8 for m in SIZES})
    efficiency = analysis.scaling_efficiency(cpu + workers, "multiworker:2x0", "float32", "device")
    assert [e.efficiency for e in efficiency] == pytest.approx([1.25 / 2] * len(SIZES))


def test_cost_model_is_not_dragged_by_one_noisy_point():
    t0, peak = 50e-6, 200.0
    times = {m: t0 + 2 * m * 64 * 64 / (peak * 1e9) for m in [1, 3, 10, 30, 100, 300, 1000, 3000]}
    times[100] *= 3  # one point hit by noise
    model = models.fit_cost_model(rows_for("cpu", times, spread=0))
    assert model.t0_s == pytest.approx(t0, rel=0.05)
    assert model.peak_gflops == pytest.approx(peak, rel=0.05)
    assert model.max_rel_residual == pytest.approx(2 / 3, rel=0.01)  # reported, not hidden


MW = "multiworker:2x0"


def network_rows(t0: float, peak: float, bandwidth: float, data: str) -> list[dict]:
    """multiworker:2x0 rows timed as t0 + flops / peak + network bytes / bandwidth."""
    out = []
    for m in SIZES:
        point = Point(MW, m, 64, 64, "float32", data)
        t = t0 + point.flops / peak + point.network_bytes / bandwidth
        out += rows_for(MW, {m: t}, spread=0, data=data)
    return out


def test_network_bytes_count_the_shards_that_leave_worker_0():
    assert Point(MW, 5, 64, 32, "float32", "host").network_bytes == 4 * 2 * (64 + 32)  # [3, 2]
    assert Point("multiworker:2x4", 8, 64, 32, "float32", "host").network_bytes == 4 * 4 * 96
    assert Point(MW, 5, 64, 32, "float32", "device").network_bytes == 0
    assert Point("mirrored:2", 5, 64, 32, "float32", "host").network_bytes == 0


def test_network_term_is_fitted_against_the_same_groups_device_curve():
    device = network_rows(20e-6, 400e9, 1e9, "device")  # no network bytes in device mode
    host = network_rows(500e-6, 400e9, 1e9, "host")
    fitted = models.cost_models(analysis.curves(device + host))
    assert fitted[(MW, "float32", "device")].network_gbps is None
    model = fitted[(MW, "float32", "host")]
    assert model.network_gbps == pytest.approx(1.0, rel=1e-3)
    assert model.t0_s == pytest.approx(500e-6, rel=1e-3)
    assert model.peak_gflops == pytest.approx(400, rel=1e-6)


def test_network_term_is_not_invented_where_bytes_grow_with_flops():
    """Along an m sweep network bytes are proportional to flops: without the device curve the
    two terms cannot be told apart, so the model has none (compute absorbs it)."""
    model = models.cost_models(analysis.curves(network_rows(500e-6, 400e9, 1e9, "host")))[
        (MW, "float32", "host")
    ]
    assert model.network_gbps is None and model.fits_well


def test_a_network_bound_group_says_what_the_network_costs():
    cpu = rows_for("cpu", {m: 2 * m * 64 * 64 / 200e9 for m in SIZES}, spread=0, data="host")
    rows = (
        cpu + network_rows(20e-6, 400e9, 1e9, "device") + network_rows(500e-6, 400e9, 1e9, "host")
    )
    rows += rows_for("cpu", {m: 2 * m * 64 * 64 / 200e9 for m in SIZES}, spread=0)
    by_mode = {v.data: v for v in analysis.verdicts(rows, ["cpu", MW], "cpu")}
    assert by_mode["host"].payoff_x is None and by_mode["host"].network_gbps == pytest.approx(1)
    assert "network (fitted 1 GB/s) costs more than multiworker:2x0's compute saves" in (
        by_mode["host"].sentence()
    )
    assert by_mode["device"].network_gbps is None
