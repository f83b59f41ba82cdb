"""The benchmarks run (short versions) and print the figures they exist for (no thresholds:
timings are not asserted; their values live in benchmarks/README.md).

Marked `bench`: `make test` leaves them out (other tests cover what they run), CI runs them
once on their own. Two are `local_only` too: CI leaves them to `make bench-smoke` to stay
within its time (test_cluster covers groups on several nodes and multi-worker groups)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import ROOT, needs_tensorflow, user_env

needs_tensorflow()
pytestmark = [pytest.mark.slow, pytest.mark.bench, pytest.mark.usefixtures("other_ray_survives")]


def figures_of(name: str):
    """Run benchmarks/NAME.py --quick; the JSON of its last line."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick"],
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def positive(*values) -> bool:
    return all(isinstance(v, float | int) and math.isfinite(v) and v > 0 for v in values)


def test_fidelity_runs_tfscale_as_users_do_beside_bare_process_references():
    figures = figures_of("fidelity")
    (case,) = figures["cases"]  # --quick: the memory-bound shape, one round
    assert case["case"] == "[200,20]@[20,20000]" and case["shape"] == [200, 20, 20000]
    columns = ("loop", "loop bfc", "tfscale", "measurer", "session", "numpy", "numpy out=")
    for column in columns:
        value = case[column]
        assert positive(value["median_s"]) and len(value["iqr"]) == len(value["ratio"]) == 1
    assert case["loop"]["ratio"] == [1.0]  # the column the ratios are taken against
    # the tfscale column is a `tfscale run` row: its actor said what it measured with
    # TensorFlow's default allocator, like the bare loop the ratios are taken against
    measured = case["tfscale"]["measured_with"]
    assert measured["host_allocator"] == ("onednn" if measured["onednn"] else "malloc")
    assert case["tfscale"]["measured_with"]["nice"] == 0
    (blog,) = figures["blog"].values()
    assert positive(blog["blog_s"], blog["per_call_s"])


def test_scale_plans_and_reports_ten_thousand_points():
    figures = figures_of("scale")
    assert figures["points"] == 10**4
    assert positive(figures["planning_s"], figures["report_s"], figures["peak_rss_mib"])


def test_sweep_breaks_down_where_the_wall_time_goes():
    figures = figures_of("sweep")
    quickstart, cpu = figures["quickstart"], figures["cpu_sweep"]
    # m = 64, 4096 x 2 ops x 3 groups; 10 m
    assert quickstart["points"] == 12 and cpu["points"] == 10
    for sweep in (quickstart, cpu):
        assert positive(sweep["wall_s"], sweep["timed_s"], sweep["startup_s"])
        assert 0 < sweep["timed_fraction"] <= sweep["measuring_fraction"] <= 1
        assert sweep["timed_s"] < sweep["wall_s"]
    assert "repeatability" not in figures  # two identical runs: the full version only


@pytest.mark.local_only
def test_cluster_scaling_runs_the_sweep_on_one_and_three_nodes():
    figures = figures_of("cluster_scaling")
    assert positive(figures["one_node_s"], figures["three_nodes_s"])
    assert figures["speedup"] == pytest.approx(figures["one_node_s"] / figures["three_nodes_s"])


@pytest.mark.local_only
def test_multiworker_compares_two_nodes_with_one_for_device_and_host_data():
    figures = figures_of("multiworker")
    for data in ("device", "host"):
        assert len(figures["speedup"][data]) == 3 and positive(*figures["speedup"][data])
    assert figures["network_gbps"] is None or positive(figures["network_gbps"])


def test_loop_overhead_compares_each_group_with_cpu_and_shows_no_transfer_in_the_loop():
    figures = figures_of("loop_overhead")
    assert set(figures) == {"cpu", "gpu", "mirrored:2"}
    assert figures["cpu"]["over_cpu"] == 1.0 and figures["cpu"]["best_over_cpu"] == 1.0
    for group in figures.values():
        assert positive(group["per_iteration_s"], group["over_cpu"], group["best_over_cpu"])
        assert len(group["over_cpu_rounds"]) == 1  # --quick: one round
        assert group["loop_transfers"] == 0 and group["parallel_iterations"] == [1]
    assert figures["mirrored:2"]["partitions"] == 2


def test_collectives_prints_busbw_curves_breakdowns_and_verdicts():
    figures = figures_of("collectives")
    assert set(figures["busbw_gbps"]) == {"mirrored:2", "multiworker:2x0"}
    for curve in figures["busbw_gbps"].values():
        assert len(curve) == 3 and positive(*curve.values())
    assert figures["breakdowns"] == 6  # 3 sizes x (mirrored:2, multiworker:2x0)
    assert any(v.startswith("train_step: multiworker:2x0") for v in figures["verdicts"])
