"""Cluster mode on a real multi-node Ray cluster, emulated on this machine: a head and two
`ray start --address` nodes with their own resources, token authentication on (the `cluster`
fixture of conftest, shared by these tests; it stops only the processes it started)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from benchmarks._cluster import LocalCluster, process_info
from tests.conftest import (
    needs_tensorflow,
    read_rows,
    start_someone_elses_actor,
    tfscale,
    user_env,
)

needs_tensorflow()
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("other_ray_survives")]

RAY = str(Path(sys.executable).with_name("ray"))
CONFIG = """\
name: multinode
workload:
  m: [256, 512, 1024, 2048]
  k: 256
  n: 256
groups: [{group: cpu, threads: 1}, {group: mirrored:2, emulate: true, threads: 1}, gpu]
emulate: never
timing: {warmup: 1, min_repeats: 3, min_time_s: 0.5, max_time_s: 2, min_block_s: 0.005}
"""


def span(rows: list[dict]) -> tuple[datetime, datetime]:
    return (
        min(datetime.fromisoformat(r["started_at"]) for r in rows),
        max(datetime.fromisoformat(r["finished_at"]) for r in rows),
    )


def sweep_on(
    cluster: LocalCluster,
    tmp_path: Path,
    config: str,
    *extra: str,
    env: dict | None = None,
    timeout: float = 600,
    code: int = 0,
) -> list[dict]:
    """`tfscale run` against the cluster (`env`: more variables, `code`: the exit code
    expected); the rows of the run."""
    (tmp_path / "c.yaml").write_text(config)
    result = tfscale(
        "run",
        "c.yaml",
        "--address",
        cluster.address,
        "--out",
        "run",
        *extra,
        env={**cluster.env, **(env or {})},
        cwd=tmp_path,
        timeout=timeout,
    )
    assert result.returncode == code, result.stderr[-3000:]
    return read_rows(tmp_path / "run")


def test_groups_land_on_different_nodes_and_run_at_the_same_time(cluster, tmp_path):
    # each group's first point takes 6 s more, so a group's sweep outlasts the other's actor
    # start. gpu: unavailable (TensorFlow sees no GPU): the run exits 4
    rows = sweep_on(cluster, tmp_path, CONFIG, env={"TFSCALE_TEST_STALL": "256:6"}, code=4)
    assert len(rows) == 12 and len({r["point_id"] for r in rows}) == 12
    by_group = {g: [r for r in rows if r["group"] == g] for g in ("cpu", "mirrored:2", "gpu")}
    nodes = {g: {r["node_id"] for r in group} for g, group in by_group.items()}
    assert all(len(n) == 1 for n in nodes.values()), nodes  # each group on one node
    assert len(set.union(*nodes.values())) == 3  # three groups on three nodes
    # run at once: each group's actor was launched before the other group's last point ended
    # (one after another, the second would be launched only after the first ended). Not the
    # rows' spans: on a busy machine one actor's TensorFlow import can outlast the other's
    # whole sweep (CI: 11.6 s between the groups' first points, an 11.3 s cpu sweep)
    environment = json.loads((tmp_path / "run/environment.json").read_text())
    workers = environment["workers"]

    def launched(group: str) -> datetime:
        ready = datetime.fromisoformat(workers[group]["ready_at"])
        return ready - timedelta(seconds=workers[group]["actor_start_s"])

    cpu, mirrored = span(by_group["cpu"]), span(by_group["mirrored:2"])
    assert launched("mirrored:2") < cpu[1] and launched("cpu") < mirrored[1]
    assert len(environment["nodes"]) == 3
    gpu_node = next(n for n in environment["nodes"] if n["gpus"] == 1)
    assert nodes["gpu"] == {gpu_node["node_id"]}


def test_devices_lists_the_nodes_and_what_they_can_run(cluster, tmp_path):
    result = tfscale("devices", "--address", cluster.address, env=cluster.env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 node(s)" in result.stdout
    assert "gpu          ok: 1 real GPU(s)" in result.stdout
    assert "mirrored:2   unavailable: needs 2 GPUs" in result.stdout


def test_ray_job_submit_runs_a_sweep_on_the_cluster(cluster, tmp_path):
    work = tmp_path / "job"
    work.mkdir()
    (work / "c.yaml").write_text(CONFIG.replace("m: [256, 512, 1024, 2048]", "m: [64, 128]"))
    out = tmp_path / "jobrun"
    started = time.monotonic()
    result = subprocess.run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            cluster.dashboard,
            "--working-dir",
            str(work),
            "--",
            sys.executable,
            "-m",
            "tfscale.cli",
            "run",
            "c.yaml",
            "--out",
            str(out),
            "--set",
            "groups=[{group: cpu, threads: 1}]",
        ],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "succeeded" in (result.stdout + result.stderr)
    rows = read_rows(out)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    print(f"ray job submit: {time.monotonic() - started:.1f} s")


MULTIWORKER = """\
name: multiworker
workload: {m: [64, 1024], k: 128, n: 128, data: [device, host]}
groups: [{group: cpu, threads: 1}, {group: "multiworker:2x0", threads: 1}]
timing: {warmup: 1, min_repeats: 3, min_time_s: 0.2, max_time_s: 2, min_block_s: 0.005}
run: {max_attempts: 2, point_timeout_s: 120}
"""


def test_multiworker_group_spans_two_nodes_with_one_replica_each(cluster, tmp_path):
    rows = sweep_on(cluster, tmp_path, MULTIWORKER)
    workers = [r for r in rows if r["group"] == "multiworker:2x0"]
    assert [(r["data"], r["status"]) for r in workers] == [
        ("device", "ok"),
        ("device", "ok"),
        ("host", "ok"),
        ("host", "ok"),
    ], workers
    for row in workers:
        assert row["replicas"] == 2 and row["devices"] == ["worker0/CPU:0", "worker1/CPU:0"]
        assert len(set(row["node_id"].split(","))) == 2  # two Ray nodes
        assert row["emulated"] is True  # ... of one machine
        assert row["numerics_error"] < 1e-4 and row["timing"] == "graph_loop"
    for row in workers:  # data: host gathers every shard of Y on worker 0's host
        where = (
            ["worker0/CPU:0"] * 2 if row["data"] == "host" else ["worker0/CPU:0", "worker1/CPU:0"]
        )
        assert row["output_devices"] == where, row
    summary = (tmp_path / "run/summary.md").read_text()
    assert "multiworker:2x0 (emulated)" in summary


TRAINING = """\
name: multiworker-training
workload: {op: [train_step, allreduce], m: [64, 256], k: 32, n: 16}
groups: [{group: "multiworker:2x0", threads: 1}]
timing: {warmup: 2, min_repeats: 3, min_time_s: 0.05, max_time_s: 2, min_block_s: 0.005}
run: {max_attempts: 1, point_timeout_s: 120}
"""


def test_multiworker_training_steps_and_allreduces_match_numpy(cluster, tmp_path):
    """Across two workers, dW is all-reduced through MultiWorkerMirroredStrategy every step:
    W after the warm-up steps equals NumPy's float64 steps on the whole global batch."""
    rows = sweep_on(cluster, tmp_path, TRAINING)
    steps = [r for r in rows if r["op"] == "train_step"]
    assert [r["status"] for r in rows] == ["ok"] * 4, rows
    for row in steps:
        assert row["numerics_error"] < 1e-4 and row["precision"] == "fp32"
        # forward, dW and dX on each worker's device, inside the timed loop
        assert row["devices"] == ["worker0/CPU:0", "worker1/CPU:0"]
        assert row["all_reduce"].startswith("collective")
        assert row["compute_s"] > 0 and row["allreduce_s"] > 0  # the breakdown, per step
    for row in (r for r in rows if r["op"] == "allreduce"):
        assert row["numerics_error"] < 1e-6 and row["k"] == 0
        assert row["busbw_gbps"] == row["algbw_gbps"]  # 2 replicas: 2(r-1)/r = 1
    summary = (tmp_path / "run/summary.md").read_text()
    assert "## All-reduce" in summary and "## Training steps: compute and all-reduce" in summary


def test_killed_multiworker_member_does_not_hang_the_others(cluster, tmp_path, sessions):
    """A member killed while both are stalled in `prepare`: the others are stopped too, all
    are recreated and the point retried, well before a collective or point timeout (600 s
    here) could end it."""
    (tmp_path / "c.yaml").write_text(MULTIWORKER)
    process = sessions.start(
        [sys.executable, "-m", "tfscale.cli", "run", "c.yaml", "--address", cluster.address]
        + ["--out", "run", "--set", 'groups=[{group: "multiworker:2x0", threads: 1}]']
        + ["--set", "workload.data=device", "--set", "run.point_timeout_s=600"],
        cwd=tmp_path,
        env=user_env({**cluster.env, "TFSCALE_TEST_STALL": "64:5"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while True:  # both members are stalled inside `prepare` of the first point: kill one
        found = [pid for pid, cmd in cluster.processes().items() if "_MemberActor.prepare" in cmd]
        if found:
            break
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    os.kill(found[0], signal.SIGKILL)
    out, err = process.communicate(timeout=300)  # TimeoutExpired: it hangs
    assert process.returncode == 0, err[-3000:]
    rows = read_rows(tmp_path / "run")
    assert len(rows) == 2 and len({r["point_id"] for r in rows}) == 2
    first = next(r for r in rows if r["m"] == 64)
    assert first["attempt"] == 2 and first["status"] == "ok"  # all members recreated, retried


def test_a_member_giving_up_does_not_leave_the_others_in_a_collective(cluster, tmp_path):
    """Worker 1 fails the first point at once while worker 0 is sending it X (data: host):
    the driver stops both instead of waiting out the collective timeout (600 s here: the whole
    run must end in half of it), and the next point runs on fresh members (an aborted
    collective would poison the old strategy)."""
    rows = sweep_on(
        cluster,
        tmp_path,
        MULTIWORKER,
        "--set",
        'groups=[{group: "multiworker:2x0", threads: 1}]',
        "--set",
        "workload.data=host",
        "--set",
        "run.point_timeout_s=600",
        env={"TFSCALE_TEST_FAIL": "64:1"},
        timeout=300,
        code=4,
    )
    rows = {r["m"]: r for r in rows}
    assert rows[64]["status"] == "failed" and "injected failure of worker 1" in rows[64]["reason"]
    assert rows[1024]["status"] == "ok" and rows[1024]["numerics_error"] < 1e-4


def test_a_stopped_cluster_leaves_no_process_and_stops_nobody_else(other_ray):
    """What every test's cluster relies on: stopping it ends each of its processes, the
    workers its raylet forked (each in a process group of its own) included, and nothing of
    the other Ray on this machine."""
    with LocalCluster() as mine:
        mine.start_head(cpus=1)
        start_someone_elses_actor(mine)
        started = mine.processes()
        actor = next(pid for pid, cmd in started.items() if "ray::_GroupActor" in cmd)
        assert os.getpgid(actor) not in {node.pid for node in mine.nodes}
    assert not mine.processes()
    alive = [cmd for pid, cmd in started.items() if (info := process_info(pid)) and info[1] == cmd]
    assert not alive, alive  # not even one that left the node's session
    assert not other_ray.killed()
