"""Faults of a node, not of a point: it dies mid-sweep, it has no TensorFlow, Ray gives it a
GPU that TensorFlow cannot see. A dead node's group moves to a live node that can serve it, or
the run stops resumable (exit 3) without writing rows for points it never reached; a node that
cannot run a group makes the group unavailable once, with the reason.

The cluster is conftest's shared one (its `node_b` has a GPU TensorFlow cannot see) with two
2-CPU nodes, `cpu_a` and `cpu_b`, added for this module: the sweep's group needs 2 CPUs, which
only they have, and the tests kill them as a crash would. Time bounds: Ray marks a dead node
after about 15 s of missed health checks with its defaults (5 s on the shared cluster, local
mode keeps the defaults); start_timeout_s is set far above the bounds, so waiting out a
reservation fails them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from benchmarks._cluster import session_processes, stop_sessions
from tests.conftest import needs_tensorflow, read_rows, start_run, tfscale, wait_for_rows

needs_tensorflow()
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("other_ray_survives")]

SWEEP = """\
name: nodefaults
workload: {m: [1, 2, 3, 4, 5, 6, 7, 8], k: 128, n: 128}
groups: [{group: cpu, threads: 2}]
timing: {warmup: 1, min_repeats: 3, min_time_s: 0.4, max_time_s: 2, min_block_s: 0.002}
run: {start_timeout_s: 300, max_attempts: 2}
"""
AFTER_KILL_S = 90  # a run that waits out one reservation (300 s) cannot end within this
SHARED_NODES = 3  # conftest's cluster: head, node_a, node_b


def sweep(sessions, tmp: Path, *args: str, **where) -> subprocess.Popen:
    """The module's sweep, `tfscale run c.yaml ARGS`, in the background (conftest `start_run`)."""
    (tmp / "c.yaml").write_text(SWEEP)
    return start_run(sessions, tmp, "c.yaml", "--out", "run", *args, **where)


def finish(process: subprocess.Popen, within_s: float) -> tuple[str, str]:
    """The run's stdout and stderr, once it has ended; it must end within_s."""
    try:
        return process.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        stop_sessions(process)
        out, err = process.communicate()
        pytest.fail(f"still running {within_s:g} s after the node died:\n{err[-3000:]}")


@pytest.fixture(scope="module")
def two_cpu_nodes(cluster):
    """label -> (`ray start` process, node id) of `cpu_a` and `cpu_b`; those still alive when
    the module ends are killed, so the shared cluster is as it was (Ray keeps dead nodes in
    its table; tfscale reads only the live ones)."""
    nodes = {label: cluster.add_node(cpus=2, resources={label: 1}) for label in ("cpu_a", "cpu_b")}
    table = cluster.node_table(alive=SHARED_NODES + 2)
    ids = {key: n["NodeID"] for n in table if n["Alive"] for key in n["Resources"] if key in nodes}
    assert set(ids) == set(nodes), table
    yield {label: (nodes[label], ids[label]) for label in nodes}
    stop_sessions(*[node for node in nodes.values() if node.returncode is None])


def test_node_whose_gpu_tensorflow_cannot_see_makes_the_group_unavailable_once(cluster, tmp_path):
    (tmp_path / "c.yaml").write_text(SWEEP)
    result = tfscale(
        "run",
        "c.yaml",
        "--address",
        cluster.address,
        "--out",
        "run",
        "--set",
        "groups=[gpu]",
        "--set",
        "workload.m=[64, 128]",
        env=cluster.env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 4, result.stderr[-3000:]
    rows = read_rows(tmp_path / "run")
    assert [r["status"] for r in rows] == ["unavailable", "unavailable"]
    assert all("median_s" not in r for r in rows)
    reason = rows[0]["reason"]
    assert "Ray assigned 1 GPU" in reason and "TensorFlow sees 0" in reason, reason
    assert result.stderr.count("gpu: unavailable: on node") == 1  # said once, at the start


def test_a_dead_nodes_group_moves_to_a_live_node_and_completes(
    cluster, two_cpu_nodes, sessions, tmp_path
):
    assert all(node.poll() is None for node, _ in two_cpu_nodes.values()), "needs both"
    process = sweep(sessions, tmp_path, cluster=cluster)
    before = wait_for_rows(tmp_path / "run", 2, process, limit_s=300)
    (doomed,) = {r["node_id"] for r in before}
    victim = next(label for label, (_, node_id) in two_cpu_nodes.items() if node_id == doomed)
    survivor = {"cpu_a": "cpu_b", "cpu_b": "cpu_a"}[victim]
    cluster.kill_node(two_cpu_nodes[victim][0])

    out, err = finish(process, AFTER_KILL_S + 120)  # the rest is measured on the survivor too
    assert process.returncode == 0, err[-3000:]
    rows = read_rows(tmp_path / "run")
    assert len(rows) == 8 and len({r["point_id"] for r in rows}) == 8
    assert all(r["status"] == "ok" for r in rows), [r.get("reason") for r in rows]
    assert rows[:2] == before
    moved = [r["node_id"] for r in rows[len(before) :]]
    (_, survivor_id) = two_cpu_nodes[survivor]
    assert moved[-1] == survivor_id and set(moved) <= {doomed, survivor_id}
    assert "died" in err and "cpu: continues on node" in err


def test_a_dead_node_no_live_node_can_replace_stops_the_run_resumable(
    cluster, two_cpu_nodes, sessions, tmp_path
):
    alive = [label for label, (node, _) in two_cpu_nodes.items() if node.poll() is None]
    assert alive, "needs a 2-CPU node"
    for label in alive[1:]:  # the last 2-CPU node: nowhere for the group to go
        cluster.kill_node(two_cpu_nodes[label][0])
    cluster.node_table(alive=SHARED_NODES + 1)
    process = sweep(sessions, tmp_path, cluster=cluster)
    before = wait_for_rows(tmp_path / "run", 2, process, limit_s=300)
    cluster.kill_node(two_cpu_nodes[alive[0]][0])
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


def test_the_local_node_dying_stops_the_run_resumable_and_resume_finishes(sessions, tmp_path):
    process = sweep(sessions, tmp_path)
    before = wait_for_rows(tmp_path / "run", 2, process, limit_s=300)
    # the raylet fate-shares with its dashboard agent: the local node dies with it
    (agent,) = [
        pid
        for pid, cmd in session_processes(process.pid).items()
        if cmd.startswith("ray::DashboardAgent")
    ]
    os.kill(agent, signal.SIGKILL)
    out, err = finish(process, AFTER_KILL_S)
    assert process.returncode == 3, err[-3000:]
    rows = read_rows(tmp_path / "run")
    assert rows[:2] == before and all(r["status"] == "ok" for r in rows) and len(rows) < 8
    assert "tfscale: interrupted: cpu: node" in err and "no live node is left" in err

    stop_sessions(process)  # whatever of its local Ray is left
    resumed = tfscale("run", "--resume", "run", cwd=tmp_path, timeout=300)
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
    # the workers of this node cannot import it (a PYTHONPATH of the user's own stays behind it)
    path = os.pathsep.join(p for p in (str(shadow.parent), os.environ.get("PYTHONPATH")) if p)
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
        env={"PYTHONPATH": path},
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 4, result.stderr[-3000:]
    rows = read_rows(tmp_path / "run")
    assert [r["status"] for r in rows] == ["unavailable", "unavailable"]
    assert "TensorFlow is not installed on this node" in rows[0]["reason"]
    assert result.stderr.count("cpu: unavailable: on node") == 1
    assert "failed" not in result.stderr
