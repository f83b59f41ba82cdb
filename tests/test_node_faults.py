"""Faults of a node, not of a point: it dies mid-sweep, it has no TensorFlow, Ray gives it a
GPU that TensorFlow cannot see. A dead node's group moves to a live node that can serve it, or
the run stops resumable (exit 3) without writing rows for points it never reached; a node that
cannot run a group makes the group unavailable once, with the reason.

The cluster is the module's own: a head without CPUs, two 2-CPU nodes (`cpu_a`, `cpu_b`) and
a 1-CPU node with one (fake) GPU, each a `ray start --block` process group that the test
kills as a crash would. Time bounds: Ray marks a dead node after about 15 s of missed health
checks; start_timeout_s is set far above the bounds, so waiting out a reservation fails them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import read_rows, tfscale
from tests.ray_nodes import Cluster, command_line, kill_session, session_pids

tf = pytest.importorskip("tensorflow")
pytestmark = pytest.mark.slow

SWEEP = """\
name: nodefaults
workload: {m: [1, 2, 3, 4, 5, 6, 7, 8], k: 128, n: 128}
groups: [{group: cpu, threads: 2}]
timing: {warmup: 1, min_repeats: 3, min_time_s: 0.4, max_time_s: 2, min_block_s: 0.002}
run: {start_timeout_s: 300, max_attempts: 2}
"""
AFTER_KILL_S = 90  # a run that waits out one reservation (300 s) cannot end within this


def start(tmp: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """`tfscale run` in the background, leading a session of its own (its local Ray too)."""
    (tmp / "c.yaml").write_text(SWEEP)
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if not (env or {}).get("RAY_ADDRESS"):
        environment.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, "-m", "tfscale.cli", "run", *args],
        cwd=tmp,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_rows(run: Path, count: int, process: subprocess.Popen) -> list[dict]:
    deadline = time.monotonic() + 300
    while len(read_rows(run)) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no rows in time"
        time.sleep(0.2)
    return read_rows(run)


def finish(process: subprocess.Popen, within_s: float) -> tuple[str, str]:
    """The run's stdout and stderr, once it has ended; it must end within_s."""
    try:
        return process.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        kill_session(process.pid)
        out, err = process.communicate()
        pytest.fail(f"still running {within_s:g} s after the node died:\n{err[-3000:]}")


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster()
    try:
        cluster.start_head(cpus=0)
        nodes = {
            "cpu_a": cluster.add_node(cpus=2, label="cpu_a"),
            "cpu_b": cluster.add_node(cpus=2, label="cpu_b"),
            "gpu": cluster.add_node(cpus=1, gpus=1, label="gpu"),
        }
        ids = cluster.labelled(alive=4)
        assert set(ids) == set(nodes), ids
        yield cluster, nodes, ids
    finally:
        cluster.stop()


def test_node_whose_gpu_tensorflow_cannot_see_makes_the_group_unavailable_once(cluster, tmp_path):
    if tf.test.is_built_with_cuda():
        pytest.skip("a CUDA TensorFlow would see this machine's real GPU")
    ray_cluster, _, ids = cluster
    (tmp_path / "c.yaml").write_text(SWEEP)
    result = tfscale(
        "run",
        "c.yaml",
        "--address",
        ray_cluster.address,
        "--out",
        "run",
        "--set",
        "groups=[gpu]",
        "--set",
        "workload.m=[64, 128]",
        env=ray_cluster.env,
        cwd=tmp_path,
    )
    assert result.returncode == 4, result.stderr[-3000:]
    rows = read_rows(tmp_path / "run")
    assert [r["status"] for r in rows] == ["unavailable", "unavailable"]
    assert all("median_s" not in r for r in rows)
    reason = rows[0]["reason"]
    assert "Ray assigned 1 GPU" in reason and "TensorFlow sees 0" in reason, reason
    assert result.stderr.count("gpu: unavailable: on node") == 1  # said once, at the start


def test_a_dead_nodes_group_moves_to_a_live_node_and_completes(cluster, tmp_path):
    ray_cluster, nodes, ids = cluster
    assert all(nodes[n].poll() is None for n in ("cpu_a", "cpu_b")), "needs both 2-CPU nodes"
    process = start(
        tmp_path, "c.yaml", "--address", ray_cluster.address, "--out", "run", env=ray_cluster.env
    )
    before = wait_for_rows(tmp_path / "run", 2, process)
    (doomed,) = {r["node_id"] for r in before}
    victim = next(label for label, node_id in ids.items() if node_id == doomed)
    survivor = {"cpu_a": "cpu_b", "cpu_b": "cpu_a"}[victim]
    ray_cluster.kill(nodes[victim])

    out, err = finish(process, AFTER_KILL_S + 120)  # the rest is measured on the survivor too
    assert process.returncode == 0, err[-3000:]
    rows = read_rows(tmp_path / "run")
    assert len(rows) == 8 and len({r["point_id"] for r in rows}) == 8
    assert all(r["status"] == "ok" for r in rows), [r.get("reason") for r in rows]
    assert rows[:2] == before
    moved = [r["node_id"] for r in rows[len(before) :]]
    assert moved[-1] == ids[survivor] and set(moved) <= {doomed, ids[survivor]}
    assert "died" in err and "cpu: continues on node" in err


def test_a_dead_node_no_live_node_can_replace_stops_the_run_resumable(cluster, tmp_path):
    ray_cluster, nodes, ids = cluster
    alive = [label for label in ("cpu_a", "cpu_b") if nodes[label].poll() is None]
    assert alive, "needs a 2-CPU node"
    for label in alive[1:]:  # the last 2-CPU node: nowhere for the group to go
        ray_cluster.kill(nodes[label])
    ray_cluster.node_table(alive=3)  # head, gpu, the last 2-CPU node
    process = start(
        tmp_path, "c.yaml", "--address", ray_cluster.address, "--out", "run", env=ray_cluster.env
    )
    before = wait_for_rows(tmp_path / "run", 2, process)
    ray_cluster.kill(nodes[alive[0]])
    killed = time.monotonic()

    out, err = finish(process, AFTER_KILL_S)
    assert process.returncode == 3, err[-3000:]
    rows = read_rows(tmp_path / "run")
    assert rows[:2] == before and 2 <= len(rows) < 8
    assert all(r["status"] == "ok" for r in rows)  # no row for a point never reached
    (line,) = [line for line in err.splitlines() if line.startswith("tfscale: interrupted")]
    assert "cpu: node" in line and "died" in line and "tfscale run --resume run" in line
    assert out.strip().splitlines()[-1] == "run"
    print(f"exit 3 {time.monotonic() - killed:.1f} s after the kill")


def test_the_local_node_dying_stops_the_run_resumable_and_resume_finishes(tmp_path):
    process = start(tmp_path, "c.yaml", "--out", "run")
    try:
        before = wait_for_rows(tmp_path / "run", 2, process)
        # the raylet fate-shares with its dashboard agent: the local node dies with it
        (agent,) = [
            pid
            for pid in session_pids(process.pid)
            if command_line(pid).startswith("ray::DashboardAgent")
        ]
        os.kill(agent, signal.SIGKILL)
        out, err = finish(process, AFTER_KILL_S)
    finally:
        kill_session(process.pid)  # whatever of the run and its local Ray is left
    assert process.returncode == 3, err[-3000:]
    rows = read_rows(tmp_path / "run")
    assert rows[:2] == before and all(r["status"] == "ok" for r in rows) and len(rows) < 8
    assert "tfscale: interrupted: cpu: node" in err and "no live node is left" in err

    resumed = tfscale("run", "--resume", "run", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = read_rows(tmp_path / "run")
    assert after[: len(rows)] == rows and len({r["point_id"] for r in after}) == len(after) == 8
    assert all(r["status"] == "ok" for r in after)


def test_node_without_tensorflow_makes_the_group_unavailable_once(tmp_path):
    shadow = tmp_path / "shadow" / "tensorflow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'tensorflow'\", name='tensorflow')\n"
    )
    (tmp_path / "c.yaml").write_text(SWEEP)
    result = tfscale(
        "run",
        "c.yaml",
        "--out",
        "run",
        "--set",
        "workload.m=[64, 128]",
        "--set",
        "groups=[{group: cpu, threads: 1}]",
        env={"PYTHONPATH": str(shadow.parent)},  # the workers of this node cannot import it
        cwd=tmp_path,
    )
    assert result.returncode == 4, result.stderr[-3000:]
    rows = read_rows(tmp_path / "run")
    assert [r["status"] for r in rows] == ["unavailable", "unavailable"]
    assert "TensorFlow is not installed on this node" in rows[0]["reason"]
    assert result.stderr.count("cpu: unavailable: on node") == 1
    assert "failed" not in result.stderr
