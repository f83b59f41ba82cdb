"""End to end: `tfscale run` on a real local Ray with real TensorFlow, as a user runs it."""

from __future__ import annotations

import json

import pytest

from tests.conftest import read_rows, tfscale

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.slow

TINY = """\
name: tiny-e2e
workload:
  m: [1, 64, 4096]
  k: 64
  n: 64
groups: [cpu, gpu, {group: mirrored:2, emulate: true}]
emulate: never
timing: {warmup: 1, min_repeats: 3, min_time_s: 0.02, max_time_s: 1, min_block_s: 0.002}
run: {memory_fraction: 0.00001}
"""

ROW_FIELDS = {
    "point_id",
    "group",
    "replicas",
    "emulated",
    "devices",
    "node",
    "m",
    "k",
    "n",
    "dtype",
    "data",
    "flops",
    "bytes",
    "status",
    "reason",
    "samples_s",
    "median_s",
    "iqr_s",
    "inner",
    "gflops",
    "gbps",
    "started_at",
    "attempt",
    "timing",
    "call_s",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    (tmp / "tiny.yaml").write_text(TINY)
    result = tfscale("run", "tiny.yaml", cwd=tmp)
    return tmp, result


def test_run_prints_its_folder_last_and_says_it_is_partial(tiny_run):
    tmp, result = tiny_run
    assert result.returncode == 4, result.stderr[-3000:]  # gpu unavailable: partial
    run = tmp / result.stdout.strip().splitlines()[-1]
    assert run.parent.name == "results" and run.name.startswith("tiny-e2e-")
    for name in (
        "config.yaml",
        "environment.json",
        "results.jsonl",
        "summary.md",
        "plots/time.png",
        "plots/throughput.png",
        "plots/speedup.png",
    ):
        assert (run / name).is_file(), name
    assert "Traceback" not in result.stderr


def test_every_point_has_exactly_one_terminal_row(tiny_run):
    tmp, result = tiny_run
    rows = read_rows(tmp / result.stdout.strip().splitlines()[-1])
    assert len(rows) == 9 and len({r["point_id"] for r in rows}) == 9
    by_group = {g: [r for r in rows if r["group"] == g] for g in ("cpu", "gpu", "mirrored:2")}
    assert {r["status"] for r in by_group["gpu"]} == {"unavailable"}
    assert "needs 1 GPU" in by_group["gpu"][0]["reason"]
    # memory_fraction is tiny: the largest point of each measured group is skipped, with numbers
    for group in ("cpu", "mirrored:2"):
        statuses = [r["status"] for r in sorted(by_group[group], key=lambda r: r["m"])]
        assert statuses == ["ok", "ok", "skipped"], statuses
        assert "host memory" in by_group[group][-1]["reason"]


def test_ok_rows_carry_the_contract_fields_and_honest_labels(tiny_run):
    tmp, result = tiny_run
    run = tmp / result.stdout.strip().splitlines()[-1]
    nodes = {n["address"] for n in json.loads((run / "environment.json").read_text())["nodes"]}
    rows = [r for r in read_rows(run) if r["status"] == "ok"]
    for row in rows:
        assert set(row) >= ROW_FIELDS, ROW_FIELDS - set(row)
        assert row["timing"] == "graph_loop" and row["node"] in nodes
        assert row["gflops"] == pytest.approx(row["flops"] / row["median_s"] / 1e9)
    mirrored = [r for r in rows if r["group"] == "mirrored:2"]
    assert all(r["emulated"] and r["devices"] == ["CPU:0", "CPU:1"] for r in mirrored)
    assert all(not r["emulated"] for r in rows if r["group"] == "cpu")


def test_workers_measure_at_normal_priority_from_a_caching_host_allocator(tiny_run):
    """Ray starts workers at nice 15, which would hand the CPUs the actor reserved to any
    busier thread; glibc would fault a large output's pages in again every iteration. Rows say
    what each point measured with, read back in the worker."""
    tmp, result = tiny_run
    rows = [
        r for r in read_rows(tmp / result.stdout.strip().splitlines()[-1]) if r["status"] == "ok"
    ]
    for row in rows:
        conditions = row["measured_with"]
        assert conditions["nice"] == 0 and conditions["host_allocator"] == "bfc", conditions
        assert conditions["intra_op_threads"] == row["threads"] and conditions["cpus"]


def test_environment_and_summary_describe_the_run(tiny_run):
    tmp, result = tiny_run
    run = tmp / result.stdout.strip().splitlines()[-1]
    environment = json.loads((run / "environment.json").read_text())
    assert environment["ray"] and environment["python"] and environment["nodes"]
    cpu = environment["workers"]["cpu"]
    assert cpu["tensorflow"] and cpu["cpu_model"] and cpu["env"]["OMP_NUM_THREADS"] == "2"
    assert cpu["devices"]["intra_op_threads"] == 2
    summary = (run / "summary.md").read_text()
    assert "## Verdicts" in summary and "(emulated)" in summary and "unavailable" in summary


def test_report_redraws_from_results_alone(tiny_run):
    tmp, result = tiny_run
    run = tmp / result.stdout.strip().splitlines()[-1]
    (run / "summary.md").unlink()
    redo = tfscale("report", str(run), cwd=tmp)
    assert redo.returncode == 0, redo.stderr
    assert (run / "summary.md").is_file()


def test_resume_after_driver_crash_loses_no_row_and_duplicates_none(tiny_run):
    tmp, result = tiny_run
    run = tmp / result.stdout.strip().splitlines()[-1]
    lines = (run / "results.jsonl").read_text().splitlines()
    # as if the driver died: the last rows never written, the one in flight half-written
    (run / "results.jsonl").write_text("\n".join(lines[:5]) + "\n" + lines[5][:20])
    resumed = tfscale("run", "--resume", str(run), cwd=tmp)
    assert resumed.returncode in (0, 4), resumed.stderr[-3000:]
    assert "truncated" in resumed.stderr
    rows = read_rows(run)
    assert len(rows) == 9 and len({r["point_id"] for r in rows}) == 9


def test_resume_refuses_a_different_config(tiny_run):
    tmp, result = tiny_run
    run = tmp / result.stdout.strip().splitlines()[-1]
    (tmp / "other.yaml").write_text(TINY.replace("k: 64", "k: 32"))
    refused = tfscale("run", "other.yaml", "--resume", str(run), cwd=tmp)
    assert refused.returncode == 2 and "differs from the config" in refused.stderr
