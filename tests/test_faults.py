"""Faults a long sweep meets: a worker killed, a stuck point, the driver interrupted.

Each run starts in a session of its own (conftest `sessions`), and whatever is left of a run is
stopped there. None of these faults depends on local mode: they run on the shared cluster (no
Ray to start for each run); a worker to kill is the run's new actor among the cluster's
processes. Local mode's faults (its node dying, then --resume): test_node_faults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks._cluster import stop_sessions
from tests.conftest import needs_tensorflow, read_rows, start_run, wait_for_rows

needs_tensorflow()
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("other_ray_survives")]

CONFIG = """\
name: faults
workload:
  m: [1, 2, 3, 4, 5, 6]
  k: 256
  n: 256
groups: [cpu]
timing: {warmup: 1, min_repeats: 3, min_time_s: 0.3, max_time_s: 2, min_block_s: 0.002}
run: {max_attempts: 2, point_timeout_s: 20}
"""


def assert_one_terminal_row_per_point(run: Path, points: int) -> list[dict]:
    found = read_rows(run)
    assert len(found) == points and len({r["point_id"] for r in found}) == points
    return found


def sweep(sessions, tmp: Path, cluster, config: str = CONFIG, **env: str) -> subprocess.Popen:
    """`tfscale run` of `config` against the shared cluster, in the background; out: tmp/run."""
    (tmp / "c.yaml").write_text(config)
    return start_run(sessions, tmp, "c.yaml", "--out", str(tmp / "run"), cluster=cluster, env=env)


def resume(sessions, run: Path, cluster) -> tuple[int, str]:
    """`tfscale run --resume RUN` against the shared cluster, run to its end: exit code, stderr."""
    process = start_run(sessions, run.parent, "--resume", str(run), cluster=cluster)
    _, err = process.communicate(timeout=300)
    return process.returncode, err


def test_killed_worker_is_retried_and_the_sweep_completes(tmp_path, sessions, cluster):
    run = tmp_path / "run"
    before = cluster.processes()
    process = sweep(sessions, tmp_path, cluster, TFSCALE_TEST_STALL="3:5")
    wait_for_rows(run, 2, process)
    time.sleep(1.0)  # point m=3 is now stalled inside this run's worker: kill that process
    (actor,) = [
        pid
        for pid, cmd in cluster.processes().items()
        if "ray::_GroupActor" in cmd and "ray::_GroupActor" not in before.get(pid, "")
    ]
    os.kill(actor, signal.SIGKILL)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    found = assert_one_terminal_row_per_point(run, 6)
    third = next(r for r in found if r["m"] == 3)
    # the retry stalls again (the hook is still set) but finishes: attempt 2, measured
    assert third["attempt"] == 2 and third["status"] == "ok"
    assert all(r["status"] == "ok" for r in found)


def test_stuck_point_times_out_the_sweep_goes_on_and_the_run_exits_4_resumed_too(
    tmp_path, sessions, cluster
):
    """Exit 4: complete, one point not ok; computed from the whole results file, so a
    `--resume` with nothing left to do says the same (test_exit_codes has every other case)."""
    # a point's timeout covers its trace and sampling (max_time_s): on a busy machine 3 s can
    # end healthy points too
    stuck = CONFIG.replace("max_time_s: 2", "max_time_s: 0.5")
    stuck = stuck.replace("point_timeout_s: 20", "point_timeout_s: 8")
    run = tmp_path / "run"
    process = sweep(sessions, tmp_path, cluster, stuck, TFSCALE_TEST_STALL="2:600")
    out, err = process.communicate(timeout=300)  # the stall alone is 600 s
    assert process.returncode == 4, err[-3000:]
    assert "tfscale: 5 ok, 1 timeout (of 6 points)" in err.splitlines()
    found = assert_one_terminal_row_per_point(run, 6)
    statuses = {r["m"]: r["status"] for r in found}
    assert statuses == {1: "ok", 2: "timeout", 3: "ok", 4: "ok", 5: "ok", 6: "ok"}
    assert "point_timeout_s=8" in next(r for r in found if r["m"] == 2)["reason"]

    code, err = resume(sessions, run, cluster)
    assert code == 4, err[-3000:]
    assert "tfscale: 5 ok, 1 timeout (of 6 points)" in err.splitlines()
    assert read_rows(run) == found  # nothing measured again


def test_interrupt_stops_after_the_point_in_flight_and_resume_finishes(tmp_path, sessions, cluster):
    run = tmp_path / "run"
    process = sweep(sessions, tmp_path, cluster)
    wait_for_rows(run, 2, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 3, err[-3000:]
    assert f"tfscale run --resume {run}" in err
    assert out.strip().splitlines()[-1] == str(run)
    partial = read_rows(run)
    assert 2 <= len(partial) < 6 and all(r["status"] == "ok" for r in partial)

    code, err = resume(sessions, run, cluster)
    assert code == 0, err[-3000:]
    assert_one_terminal_row_per_point(run, 6)


def test_resume_after_driver_sigkill_loses_no_row_and_duplicates_none(tmp_path, sessions, cluster):
    """The driver dies mid-sweep, its actor left to Ray (whose resources the resume needs).
    A local run's Ray killed with its driver, then resumed: test_node_faults' local node."""
    run = tmp_path / "run"
    process = sweep(sessions, tmp_path, cluster)
    wait_for_rows(run, 3, process)
    stop_sessions(process)  # SIGKILL
    process.communicate(timeout=60)
    before = read_rows(run)
    assert 3 <= len(before) < 6

    code, err = resume(sessions, run, cluster)
    assert code == 0, err[-3000:]
    after = assert_one_terminal_row_per_point(run, 6)
    assert after[: len(before)] == before  # rows already written are kept as they were


def test_unwritable_out_is_a_clean_error(tmp_path):
    (tmp_path / "c.yaml").write_text(CONFIG)
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "tfscale.cli", "run", "c.yaml", "--out", str(blocker / "run")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("tfscale: error:") and "cannot write" in result.stderr
    assert "Traceback" not in result.stderr
