"""Shared helpers and fixtures.

Tests that start Ray touch only what they started (see benchmarks/_cluster.py): local clusters
run in sessions of their own and are stopped by signalling those sessions, never `ray stop`.
`other_ray` is someone else's Ray on this machine, started before them; `other_ray_survives`
checks after each such test that it is still whole.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from benchmarks._cluster import LocalCluster, stop_sessions, token_env

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = """\
name: tiny
workload:
  m: [1, 64]
  k: 64
  n: 64
groups: [cpu]
"""


def needs_tensorflow() -> None:
    """Called at the top of modules that run TensorFlow: without it they are a collection
    error, so CI fails instead of going green on a suite that skipped half its tests."""
    if importlib.util.find_spec("tensorflow") is None:
        raise ImportError(
            "TensorFlow is not installed and these tests run it: `make test` installs "
            "tfscale[cpu,test] (or pip install -e '.[cpu,test]')"
        )


@pytest.fixture
def write_config(tmp_path):
    """Write YAML text to a file and return its path."""

    def write(text: str, name: str = "exp.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def host_allocator(measured_with: dict) -> str:
    """The host allocator TensorFlow's workers get here (worker/devices.py keeps TensorFlow's
    default): BFC where the environment opts into it, else oneDNN's where the row says oneDNN
    is on (CPUs with AVX-512 VNNI or newer), else malloc."""
    opted = os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() in ("1", "true")
    return "bfc" if opted else "onednn" if measured_with["onednn"] else "malloc"


def user_env(env: dict | None = None) -> dict:
    """The environment a user's `tfscale` gets here: never a stray RAY_ADDRESS, and no GPU for
    a local Ray to find (CUDA_VISIBLE_DEVICES=""), so what a test expects of a local run is the
    same on a machine with GPUs. `env` overrides."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    environment.pop("RAY_ADDRESS", None)
    return {**environment, **(env or {})}


def tfscale(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a fresh process (see `user_env`)."""
    return subprocess.run(
        [sys.executable, "-m", "tfscale.cli", *args],
        cwd=cwd,
        env=user_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_rows(run: Path) -> list[dict]:
    """The complete rows of a run folder (a line still being written is left out)."""
    path = run / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def start_run(
    sessions, cwd: Path, *args: str, cluster: LocalCluster | None = None, env: dict | None = None
) -> subprocess.Popen:
    """`tfscale run ARGS` in the background, in a session of its own (conftest `sessions`): in
    local mode the Ray it starts is in it too; with `cluster`, against that cluster."""
    where = ["--address", cluster.address] if cluster else []
    return sessions.start(
        [sys.executable, "-m", "tfscale.cli", "run", *args, *where],
        cwd=cwd,
        env=user_env({**(cluster.env if cluster else {}), **(env or {})}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(
    run: Path, count: int, process: subprocess.Popen, limit_s: float = 180
) -> list[dict]:
    """The rows of a run in progress, once it has written `count`."""
    deadline = time.monotonic() + limit_s
    while len(read_rows(run)) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no rows in time"
        time.sleep(0.1)
    return read_rows(run)


# ---- Ray started by the tests, and Ray that is not theirs ------------------------------------

OTHER_USER = """
import ray
ray.init(address="{address}")

@ray.remote(num_cpus=0)
class _GroupActor:  # what another user's tfscale sweep runs
    def ping(self):
        return "pong"

actor = _GroupActor.options(name="someone-else", lifetime="detached").remote()
assert ray.get(actor.ping.remote()) == "pong"
"""


def start_someone_elses_actor(cluster: LocalCluster) -> None:
    """What another user's tfscale sweep leaves on their cluster: a detached `_GroupActor`."""
    subprocess.run(
        [sys.executable, "-c", OTHER_USER.format(address=cluster.address)],
        env=cluster.env,
        check=True,
        capture_output=True,
        timeout=180,
    )


class OtherRay:
    """Stands in for someone else's Ray on this machine: a `ray start --head` with its own token
    and free ports (it recorded itself in its `ray_current_cluster`), running a detached actor
    named like tfscale's (`ray::_GroupActor`), which a test that stops Ray by name (`ray stop`,
    `pkill -f`) would kill."""

    def __init__(self, cluster: LocalCluster):
        self.cluster = cluster
        (self.head,) = cluster.nodes
        self.watched = {
            pid: cmd
            for pid, cmd in cluster.processes().items()
            if any(name in cmd for name in ("gcs_server", "raylet", "ray::_GroupActor"))
        }
        assert any("ray::_GroupActor" in cmd for cmd in self.watched.values()), self.watched

    def killed(self) -> list[str]:
        """Which of its daemons and its actor are gone (by name)."""
        alive = self.cluster.processes()
        return [Path(cmd.split()[0]).name for pid, cmd in self.watched.items() if pid not in alive]


@pytest.fixture(scope="session")
def other_ray():
    with LocalCluster() as cluster:
        cluster.start_head(cpus=1)
        start_someone_elses_actor(cluster)
        yield OtherRay(cluster)


@pytest.fixture
def other_ray_survives(other_ray):
    """Fails the test after which any process of `other_ray` is gone."""
    yield
    assert not other_ray.killed(), f"a test stopped Ray it did not start: {other_ray.killed()}"


@pytest.fixture(scope="session")
def cluster(other_ray):
    """The multi-node cluster the cluster tests share: a head (1 CPU, dashboard for the jobs
    API) and two nodes, `node_a` (1 CPU) and `node_b` (1 CPU and 1 GPU that TensorFlow cannot
    see, on any machine). Its GCS checks each node's health every second instead of every 3 s,
    so a killed node is dead to Ray after ~5 s instead of ~15 s (test_node_faults waits for
    that; a live node still has Ray's 10 s per check to answer). Stopped by its own sessions at
    the end; nothing of it may be left."""
    with LocalCluster({**token_env(), "RAY_health_check_period_ms": "1000"}) as made:
        made.start_head(cpus=1, dashboard=True)
        made.add_node(cpus=1, resources={"node_a": 1})
        made.add_node(cpus=1, gpus=1, resources={"node_b": 1})
        yield made
    assert not made.processes(), f"left running: {made.processes()}"


@pytest.fixture
def sessions():
    """Start processes in sessions of their own (`sessions.start(argv, **popen)`); any still
    running when the test ends is stopped with everything it started (its local Ray too)."""

    class Sessions(list):
        def start(self, argv: list[str], **options) -> subprocess.Popen:
            process = subprocess.Popen(argv, start_new_session=True, **options)
            self.append(process)
            return process

    started = Sessions()
    yield started
    stop_sessions(*started)
