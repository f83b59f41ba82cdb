"""Training steps and all-reduces in the analysis and the report, on planted rows."""

from __future__ import annotations

import pytest

from tfscale import analysis, collectives, models, plots, report
from tfscale.plan import Point
from tfscale.results import normalize, ok_row

K = N = 1024  # dW: 4 MiB in float32
SIZES = [1024, 4096, 16384, 65536]


def step_rows(group: str, seconds, scaling="strong", comm=None, emulated=False) -> list[dict]:
    """train_step rows of `group` taking seconds(m); with `comm` (compute_s, allreduce_s at m)
    the breakdown too."""
    out = []
    for m in SIZES:
        point = Point(group, m, K, N, "float32", "device", "train_step", scaling)
        t = seconds(m)
        extra = {}
        if comm is not None:
            compute_s, allreduce_s = comm(m)
            extra = {"compute_s": compute_s, "allreduce_s": allreduce_s}
        out.append(ok_row(point, [t * 0.99, t, t * 1.01], emulated=emulated, **extra))
    return out


def allreduce_rows(group: str, alpha: float, algbw: float) -> list[dict]:
    out = []
    for m in (256, 4096, 65536, 1048576, 4194304):
        point = Point(group, m, 0, 1, "float32", "device", "allreduce")
        t = alpha + point.bytes / (algbw * 1e9)
        out.append(ok_row(point, [t * 0.99, t, t * 1.01], emulated=False))
    return out


def test_busbw_is_algbw_times_the_ring_share():
    row = allreduce_rows("mirrored:4", 10e-6, 100.0)[-1]
    assert row["algbw_gbps"] == pytest.approx(row["bytes"] / row["median_s"] / 1e9)
    assert row["busbw_gbps"] == pytest.approx(row["algbw_gbps"] * 2 * 3 / 4)
    assert collectives.busbw_factor(2) == 1.0 and collectives.busbw_factor(8) == 1.75
    # a row of the contract without the fields gets them derived by readers
    bare = {k: v for k, v in row.items() if k not in ("algbw_gbps", "busbw_gbps")}
    assert normalize(bare)["busbw_gbps"] == pytest.approx(row["busbw_gbps"])


def test_the_latency_bandwidth_model_of_an_allreduce_curve_is_recovered():
    (link,) = collectives.link_models(allreduce_rows("mirrored:4", 25e-6, 80.0)).values()
    assert link.alpha_s == pytest.approx(25e-6, rel=0.02)
    assert link.algbw_gbps == pytest.approx(80.0, rel=0.02)
    assert link.busbw_gbps == pytest.approx(120.0, rel=0.02)


def test_a_verdict_names_the_allreduce_share_below_the_payoff_point():
    gpu = step_rows("gpu", lambda m: 6 * m * K * N / 10e12 + 50e-6)
    # 4 replicas compute 4x faster, but every step all-reduces dW: 2 ms, nothing hidden
    mirrored = step_rows(
        "mirrored:4",
        lambda m: 6 * m * K * N / 40e12 + 50e-6 + 2e-3,
        comm=lambda m: (6 * m * K * N / 40e12 + 50e-6, 2e-3),
    )
    verdict = next(v for v in analysis.verdicts(gpu + mirrored, ["gpu", "mirrored:4"], "gpu"))
    assert verdict.op == "train_step" and verdict.payoff_x == 16384
    sentence = verdict.sentence()
    assert sentence.startswith("train_step: mirrored:4 beats gpu from m = 16,384 on")
    # at m = 4,096 the step is 2.66 ms, of which the all-reduce alone is 2 ms
    step = 6 * 4096 * K * N / 40e12 + 50e-6 + 2e-3
    assert f"below that the all-reduce of dW (4 MiB) takes {2e-3 / step:.0%}" in sentence


def test_hidden_allreduce_is_what_compute_plus_allreduce_exceed_the_step_by():
    parts = collectives.Breakdown(step_s=3e-3, compute_s=2.5e-3, allreduce_s=1e-3)
    assert parts.overlap_s == pytest.approx(0.5e-3) and parts.exposed_s == pytest.approx(0.5e-3)
    noisy = collectives.Breakdown(step_s=1e-3, compute_s=2e-3, allreduce_s=0.5e-3)
    assert noisy.overlap_s == 0.5e-3  # never more than the all-reduce itself


def test_the_train_step_model_takes_its_allreduce_from_the_sweep_and_predicts_payoff():
    gpu = step_rows("gpu", lambda m: 6 * m * K * N / 10e12 + 50e-6)
    link_alpha, link_bw = 30e-6, 50.0
    comm = link_alpha + 4 * K * N / (link_bw * 1e9)
    mirrored = step_rows("mirrored:4", lambda m: 6 * m * K * N / 40e12 + 50e-6 + comm)
    rows = gpu + mirrored + allreduce_rows("mirrored:4", link_alpha, link_bw)
    links = collectives.link_models(rows)
    section = analysis.sections(rows)[("train_step", "strong")]
    fitted = models.cost_models(analysis.curves(section), links)
    model = fitted[("mirrored:4", "float32", "device")]
    assert model.comm_source == "allreduce sweep"
    assert model.comm_s == pytest.approx(comm, rel=0.02)
    assert model.peak_gflops == pytest.approx(40e3, rel=0.02)
    assert model.t0_s == pytest.approx(50e-6, rel=0.1)
    # where the models cross: comm = 6 m K N (1/10e12 - 1/40e12)
    verdict = next(v for v in analysis.verdicts(rows, ["gpu", "mirrored:4"], "gpu"))
    crossing = comm / (6 * K * N * (1 / 10e12 - 1 / 40e12))
    assert verdict.predicted_x == pytest.approx(crossing, rel=0.03)
    assert "(predicted," in verdict.sentence()


def test_weak_scaling_compares_throughput_and_efficiency_is_time_on_one_over_time_on_k():
    gpu = step_rows("gpu", lambda m: 1e-3 * m / 1024, scaling="weak")
    mirrored = step_rows("mirrored:4", lambda m: 1.25e-3 * m / 1024, scaling="weak")
    (verdict,) = analysis.verdicts(gpu + mirrored, ["gpu", "mirrored:4"], "gpu")
    assert verdict.scaling == "weak" and verdict.speedup_at_hi == pytest.approx(4 / 1.25)
    assert verdict.sentence().startswith("train_step, weak scaling: mirrored:4 beats gpu")
    section = analysis.sections(gpu + mirrored)[("train_step", "weak")]
    efficiency = analysis.scaling_efficiency(section, "mirrored:4", "float32", "device")
    assert [e.efficiency for e in efficiency] == pytest.approx([1 / 1.25] * len(SIZES))


def test_report_has_the_allreduce_and_breakdown_tables_and_figures(tmp_path):
    gpu = step_rows("gpu", lambda m: 6 * m * K * N / 10e12 + 50e-6, emulated=True)
    mirrored = step_rows(
        "mirrored:4",
        lambda m: 6 * m * K * N / 40e12 + 2e-3,
        comm=lambda m: (6 * m * K * N / 40e12, 2.5e-3),
        emulated=True,
    )
    weak = step_rows("gpu", lambda m: m * 1e-6, "weak") + step_rows(
        "mirrored:4", lambda m: m * 1.2e-6, "weak"
    )
    rows = gpu + mirrored + weak + allreduce_rows("mirrored:4", 20e-6, 60.0)
    verdicts = analysis.verdicts(rows, ["gpu", "mirrored:4"], "gpu")
    text = report.summary(rows, verdicts, "x", [])
    assert "## All-reduce" in text and "## Training steps: compute and all-reduce" in text
    assert "| mirrored:4 | float32 | 5 |" in text  # five buffer sizes
    assert "from the allreduce sweep" in text
    figs = plots.figures(rows, "gpu", verdicts)
    assert {"allreduce-busbw", "train_step-breakdown", "train_step-weak-scaling"} <= set(figs)
    assert {"train_step-time", "train_step-speedup", "train_step-weak-speedup"} <= set(figs)
    busbw = figs["allreduce-busbw"].axes[0]
    assert busbw.get_xscale() == "log" and busbw.get_yscale() == "log"
    assert "busbw" in busbw.get_title()
    bars = figs["train_step-breakdown"].axes[0]
    legend = [t.get_text() for t in bars.get_legend().get_texts()]
    assert legend[:3] == ["compute", "all-reduce hidden behind compute", "all-reduce not hidden"]
    # every bar adds up to the measured step: compute - hidden + hidden + not hidden + other
    heights = {}
    for patch in bars.patches:
        x = round(patch.get_x(), 6)
        heights[x] = heights.get(x, 0.0) + patch.get_height()
    steps = sorted(r["median_s"] for r in mirrored)
    assert sorted(heights.values()) == pytest.approx(steps)
    weak_axes = figs["train_step-weak-scaling"].axes[0]
    assert weak_axes.get_xlabel() == "replicas"
    line = weak_axes.get_lines()[0]
    assert list(line.get_xdata()) == [1, 4]
