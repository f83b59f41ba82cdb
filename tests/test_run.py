"""End to end: `tfscale run` on a real local Ray with real TensorFlow, as a user runs it.

What it expects holds on any machine: the run sees no GPU (conftest `user_env`), the memory
fraction is computed from this machine's memory, thread counts are the local node's."""

from __future__ import annotations

import json
import os
import shutil
import statistics
from pathlib import Path

import pytest

from tests.conftest import host_allocator, needs_tensorflow, read_rows, tfscale

needs_tensorflow()
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("other_ray_survives")]

M, K, N = [1, 64, 4096], 64, 64
SKIP_ABOVE = 512 * 2**10  # bytes: m = 64 needs at most 80 KiB, m = 4096 at least 3 MiB


def host_memory() -> int:
    """This machine's memory as a worker counts it: physical, or a lower cgroup limit."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


TINY = f"""\
name: tiny-e2e
workload:
  m: {M}
  k: {K}
  n: {N}
groups: [cpu, gpu, {{group: mirrored:2, emulate: true}}]
emulate: never
timing: {{warmup: 1, min_repeats: 3, min_time_s: 0.02, max_time_s: 1, min_block_s: 0.002}}
run: {{memory_fraction: {SKIP_ABOVE / host_memory():.12f}}}
"""

# the contract's row (shared DESIGN.md, "Result row") and the row README.md documents
ROW_FIELDS = {
    *("point_id", "group", "replicas", "emulated", "devices", "node", "m", "k", "n", "dtype"),
    *("data", "flops", "bytes", "network_bytes", "status", "reason", "samples_s", "median_s"),
    *("iqr_s", "q1_s", "q3_s", "min_s", "inner", "timing", "call_s", "loop_scaling"),
    *("numerics_error", "gflops", "gbps", "warnings", "started_at", "attempt", "threads"),
    *("op", "scaling", "precision", "global_m", "grad_bytes", "all_reduce", "executed"),
    *("device_model", "gpu"),
}
# what every row has, whatever its status
TERMINAL_FIELDS = {
    *("point_id", "group", "replicas", "emulated", "m", "k", "n", "dtype", "data", "flops"),
    *("bytes", "network_bytes", "status", "reason", "started_at", "attempt"),
    *("op", "scaling", "precision", "global_m", "grad_bytes"),
}
DERIVED = ["summary.md", "report.html", "results.csv", "plots"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    (tmp / "tiny.yaml").write_text(TINY)
    result = tfscale("run", "tiny.yaml", cwd=tmp)
    return tmp, result


def run_dir(tiny_run):
    tmp, result = tiny_run
    return tmp / result.stdout.strip().splitlines()[-1]


def test_run_prints_its_folder_last_and_says_it_is_partial(tiny_run):
    tmp, result = tiny_run
    assert result.returncode == 4, result.stderr[-3000:]  # gpu unavailable: partial
    run = run_dir(tiny_run)
    assert run.parent.name == "results" and run.name.startswith("tiny-e2e-")
    for name in ("config.yaml", "environment.json", "results.jsonl", "summary.md"):
        assert (run / name).is_file(), name
    for name in ("time", "throughput", "speedup"):
        assert (run / "plots" / f"{name}.png").is_file(), name
    assert "Traceback" not in result.stderr


def test_every_point_has_exactly_one_terminal_row(tiny_run):
    rows = read_rows(run_dir(tiny_run))
    assert len(rows) == 9 and len({r["point_id"] for r in rows}) == 9
    by_group = {g: [r for r in rows if r["group"] == g] for g in ("cpu", "gpu", "mirrored:2")}
    assert {r["status"] for r in by_group["gpu"]} == {"unavailable"}
    assert "needs 1 GPU" in by_group["gpu"][0]["reason"]
    # memory_fraction is tiny: the largest point of each measured group is skipped, with numbers
    for group in ("cpu", "mirrored:2"):
        statuses = [r["status"] for r in sorted(by_group[group], key=lambda r: r["m"])]
        assert statuses == ["ok", "ok", "skipped"], statuses
        assert "host memory" in by_group[group][-1]["reason"]


def test_rows_carry_the_contract_fields_and_honest_labels(tiny_run):
    run = run_dir(tiny_run)
    nodes = {n["address"] for n in json.loads((run / "environment.json").read_text())["nodes"]}
    rows = read_rows(run)
    for row in rows:
        assert set(row) >= TERMINAL_FIELDS, TERMINAL_FIELDS - set(row)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 4
    for row in ok:
        assert set(row) >= ROW_FIELDS, ROW_FIELDS - set(row)
        assert row["timing"] == "graph_loop" and row["node"] in nodes
    mirrored = [r for r in ok if r["group"] == "mirrored:2"]
    assert all(r["emulated"] and r["devices"] == ["CPU:0", "CPU:1"] for r in mirrored)
    assert all(not r["emulated"] and r["devices"] == ["CPU:0"] for r in ok if r["group"] == "cpu")
    # float32 is true fp32, said in every row; the loops ran wholly on their devices
    assert {(r["op"], r["scaling"], r["precision"]) for r in rows} == {("matmul", "strong", "fp32")}
    assert all(r["executed"]["loop_transfers"] == 0 for r in ok)
    assert all(r["all_reduce"] == "collective" for r in mirrored)  # read back from TF


def test_workers_measure_at_normal_priority_with_tensorflows_host_allocator(tiny_run):
    """Ray starts workers at nice 15, which would hand the CPUs the actor reserved to any
    busier thread; the host allocator is TensorFlow's default, as in a user's program. Rows
    say what each point measured with, read back in the worker."""
    rows = [r for r in read_rows(run_dir(tiny_run)) if r["status"] == "ok"]
    for row in rows:
        conditions = row["measured_with"]
        assert conditions["nice"] == 0, conditions
        assert conditions["host_allocator"] == host_allocator(conditions), conditions
        assert conditions["intra_op_threads"] == row["threads"] and conditions["cpus"]


def test_a_nodes_groups_start_before_its_first_measurement(tiny_run):
    """Every actor of the node was ready (TensorFlow imported, devices set up) before the
    first point was measured: no import overlapped a measurement, and none waited for one."""
    run = run_dir(tiny_run)
    workers = json.loads((run / "environment.json").read_text())["workers"]
    measured = [r["started_at"] for r in read_rows(run) if r["status"] == "ok"]
    assert {"cpu", "mirrored:2"} <= set(workers)
    assert max(w["ready_at"] for w in workers.values()) <= min(measured)


def test_throughput_is_the_work_of_the_matmul_over_the_median_sample(tiny_run):
    """Counted here from m, k, n and the raw samples, not with the code's own formula."""
    for row in (r for r in read_rows(run_dir(tiny_run)) if r["status"] == "ok"):
        m = row["m"]
        flops, size = 2 * m * K * N, 4 * (m * K + K * N + m * N)
        median = statistics.median(row["samples_s"])
        assert len(row["samples_s"]) >= 3 and row["median_s"] == pytest.approx(median)
        assert row["flops"] == flops and row["bytes"] == size
        assert row["gflops"] == pytest.approx(flops / median / 1e9)
        assert row["gbps"] == pytest.approx(size / median / 1e9)


def test_threads_are_the_cpus_of_the_node(tiny_run):
    """TF's thread pools and OMP_NUM_THREADS follow the CPUs the group owns: here the whole
    local node, as many as Ray found on this machine (Ray itself exports 1)."""
    run = run_dir(tiny_run)
    environment = json.loads((run / "environment.json").read_text())
    (node,) = environment["nodes"]
    rows = [r for r in read_rows(run) if r["status"] == "ok" and r["group"] == "cpu"]
    assert {r["threads"] for r in rows} == {int(node["cpus"])}
    cpu = environment["workers"]["cpu"]
    assert cpu["tensorflow"] and cpu["cpu_model"]
    assert cpu["env"]["OMP_NUM_THREADS"] == str(int(node["cpus"]))
    assert cpu["devices"]["intra_op_threads"] == int(node["cpus"])


def test_summary_describes_the_run(tiny_run):
    summary = (run_dir(tiny_run) / "summary.md").read_text()
    assert "## Verdicts" in summary and "(emulated)" in summary and "unavailable" in summary


def test_report_redraws_every_derived_file_from_results_alone(tiny_run):
    tmp, _ = tiny_run
    run = run_dir(tiny_run)
    before = {
        "files": sorted(p.relative_to(run) for p in run.rglob("*")),
        "summary.md": (run / "summary.md").read_text(),
        "results.csv": (run / "results.csv").read_text(),
    }
    assert len(list((run / "plots").iterdir())) >= 6  # png and svg of each figure
    for name in DERIVED:
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    redo = tfscale("report", str(run), cwd=tmp)
    assert redo.returncode == 0, redo.stderr
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before["files"]
    assert (run / "summary.md").read_text() == before["summary.md"]
    assert (run / "results.csv").read_text() == before["results.csv"]
    assert "data:image/png;base64," in (run / "report.html").read_text()


def test_resume_after_driver_crash_loses_no_row_and_duplicates_none(tiny_run):
    tmp, _ = tiny_run
    run = run_dir(tiny_run)
    lines = (run / "results.jsonl").read_text().splitlines()
    # as if the driver died inside the last group: its last rows never written, the one in
    # flight half-written (the 3 gpu rows came first, then cpu's 3, then mirrored:2's)
    (run / "results.jsonl").write_text("\n".join(lines[:7]) + "\n" + lines[7][:20])
    resumed = tfscale("run", "--resume", str(run), cwd=tmp)
    assert resumed.returncode in (0, 4), resumed.stderr[-3000:]
    assert "truncated" in resumed.stderr
    rows = read_rows(run)
    assert len(rows) == 9 and len({r["point_id"] for r in rows}) == 9
    assert rows[:7] == [json.loads(line) for line in lines[:7]]  # kept as they were
    assert [r["group"] for r in rows[7:]] == ["mirrored:2"] * 2


def test_resume_refuses_a_different_config(tiny_run):
    tmp, _ = tiny_run
    run = run_dir(tiny_run)
    (tmp / "other.yaml").write_text(TINY.replace("k: 64", "k: 32"))
    refused = tfscale("run", "other.yaml", "--resume", str(run), cwd=tmp)
    assert refused.returncode == 2 and "differs from the config" in refused.stderr
