"""Local mode beside other Ray use: without --address, `tfscale run` starts a private Ray
instance whatever else runs on the machine, and leaves that other Ray as it found it.
Joining a cluster is explicit (`--address auto|HOST:PORT`, RAY_ADDRESS).

Ray's temp directory is the test's own (RAY_TMPDIR, as Ray reads it): the stale and the live
`ray_current_cluster` files below are the ones tfscale's Ray sees, and the machine's
/tmp/ray, which other Ray users rely on, is never touched. The live one is conftest's
`other_ray`, someone else's `ray start --head`."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from benchmarks._cluster import free_port, session_processes
from tests.conftest import needs_tensorflow, read_rows, tfscale

needs_tensorflow()
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("other_ray_survives")]

CONFIG = """\
name: beside
workload: {m: [64, 128], k: 64, n: 64}
groups: [{group: cpu, threads: 1}]
timing: {warmup: 1, min_repeats: 3, min_time_s: 0.05, max_time_s: 1, min_block_s: 0.002}
"""


def run(tmp_path: Path, env: dict, *args: str) -> tuple[list[dict], dict]:
    """`tfscale run` as a user types it; the rows and environment.json of the run."""
    (tmp_path / "c.yaml").write_text(CONFIG)
    result = tfscale("run", "c.yaml", "--out", "run", *args, cwd=tmp_path, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    environment = json.loads((tmp_path / "run/environment.json").read_text())
    rows = read_rows(tmp_path / "run")
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    return rows, environment


def daemons(sid: int) -> dict[int, str]:
    """The long-lived Ray processes of a node (GCS, raylet, monitors, agents): no workers,
    which Ray starts and ends on its own."""
    return {pid: cmd for pid, cmd in session_processes(sid).items() if not cmd.startswith("ray::")}


@pytest.fixture(scope="module")
def other_node_ids(other_ray) -> set[str]:
    return {n["NodeID"] for n in other_ray.cluster.node_table(alive=1)}


def test_a_stale_ray_current_cluster_file_does_not_stop_a_local_run(tmp_path):
    """A `ray start` cluster that crashed without `ray stop` leaves its address behind."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="tfs", dir="/tmp"))  # short: Ray's sockets go here
    try:
        stale = ray_tmp / "ray" / "ray_current_cluster"
        stale.parent.mkdir()
        stale.write_text(f"127.0.0.1:{free_port()}")  # nothing listens there
        rows, environment = run(tmp_path, {"RAY_TMPDIR": str(ray_tmp)})
        assert environment["address"] == "local" and len(environment["nodes"]) == 1
        assert stale.read_text().startswith("127.0.0.1:")  # left as it was
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_local_run_beside_a_ray_start_cluster_uses_its_own_and_leaves_that_one_alone(
    other_ray, other_node_ids, tmp_path
):
    cluster = other_ray.cluster
    before = daemons(other_ray.head.pid)
    recorded = cluster.current_cluster_file.read_text()
    assert recorded.endswith(cluster.address.split(":")[1])  # Ray would pick that cluster

    rows, environment = run(tmp_path, cluster.env)
    (mine,) = environment["nodes"]
    assert mine["node_id"] not in other_node_ids
    assert {r["node_id"] for r in rows} == {mine["node_id"]}

    assert other_ray.head.poll() is None and daemons(other_ray.head.pid) == before
    assert cluster.current_cluster_file.read_text() == recorded
    after = cluster.node_table(alive=1, timeout_s=5)
    assert {n["NodeID"] for n in after if n["Alive"]} == other_node_ids and len(after) == 1


def test_address_auto_joins_the_ray_start_cluster(other_ray, other_node_ids, tmp_path):
    rows, environment = run(tmp_path, other_ray.cluster.env, "--address", "auto")
    assert {r["node_id"] for r in rows} <= other_node_ids
    assert {n["node_id"] for n in environment["nodes"]} == other_node_ids
