"""A local multi-node Ray cluster on this machine, for the benchmarks and the tests: a head and
extra `ray start` nodes, each declaring its own CPUs, GPUs and resources, token auth on.

It touches nothing it did not start, so it is safe where other people run Ray:
- every node is `ray start --block` in a session of its own (start_new_session): its daemons
  and the workers its raylet forks (each in a process group of its own) stay in that session,
  and stopping the node signals those processes only, never `ray stop` (which stops every Ray
  process of the machine);
- free ports for everything Ray would otherwise bind at a fixed one (6379, 8265, 10001,
  52365), every node on 127.0.0.1;
- a private Ray temp directory: the nodes' files, and `env`'s RAY_TMPDIR, so that the
  `ray_current_cluster` file Ray writes and reads (`--address auto`) is the cluster's own, never
  the machine's /tmp/ray one that other Ray users rely on;
- GPUs a node declares get ids no device has (CUDA_VISIBLE_DEVICES): TensorFlow sees none of
  them on any machine, and a node that declares none has none, whatever this machine has.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
FAKE_GPU_IDS = 90  # CUDA device ids from here on exist on no machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token_env() -> dict:
    """This process's environment with a fresh Ray auth token and no inherited RAY_ADDRESS."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    return env


def process_info(pid: int) -> tuple[int, str] | None:
    """(session id, command line) of a live process; None once it is dead (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
    if state == "Z":
        return None
    return int(session), cmdline.replace(b"\0", b" ").decode(errors="replace").strip()


def session_processes(*sessions: int) -> dict[int, str]:
    """The live processes of these sessions: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        info = process_info(int(entry.name)) if entry.name.isdigit() else None
        if info and info[0] in sessions:
            found[int(entry.name)] = info[1]
    return found


def stop_sessions(*leaders: subprocess.Popen) -> None:
    """SIGKILL every process of the sessions these `leaders` head; return once none is left.
    Leaders are reaped last, so their pids (the session ids) cannot be reused by other
    sessions while we look."""
    sessions = [leader.pid for leader in leaders]
    deadline, signalled = time.monotonic() + 30, set()
    while session_processes(*sessions):
        if time.monotonic() > deadline:
            raise RuntimeError(f"survived SIGKILL: {session_processes(*sessions)}")
        for pid in set(session_processes(*sessions)) - signalled:  # a raylet may fork meanwhile
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            signalled.add(pid)
        time.sleep(0.05)
    for leader in leaders:
        leader.wait()


class LocalCluster:
    """`with LocalCluster() as cluster: cluster.start_head(...); cluster.add_node(...)`; every
    process it started is gone when the block ends. `env` is what its nodes run with, and what a
    driver of this cluster needs (the auth token; RAY_TMPDIR, so `--address auto` finds it)."""

    def __init__(self, env: dict | None = None):
        # under /tmp, short: Ray's socket paths live under it and must stay under ~100 characters
        self.root = Path(tempfile.mkdtemp(prefix="tfs", dir="/tmp"))
        self.temp_dir = self.root / "ray"  # Ray's temp dir wherever RAY_TMPDIR is self.root
        self.env = {**(env if env is not None else token_env()), "RAY_TMPDIR": str(self.root)}
        self.nodes: list[subprocess.Popen] = []
        self.address = ""
        self.dashboard = ""

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def current_cluster_file(self) -> Path:
        """Where `ray start` records this cluster's address, and `--address auto` reads it."""
        return self.temp_dir / "ray_current_cluster"

    def start_head(
        self, cpus: int = 1, gpus: int = 0, resources: dict | None = None, dashboard: bool = False
    ) -> str:
        """Start the head; its address. `dashboard`: serve the dashboard (jobs API) too."""
        ports: dict[str, int] = {}

        def args() -> list[str]:  # fresh ports each try: one found free may be taken since
            ports.update(port=free_port(), dashboard=free_port())
            return [
                "--head",
                f"--port={ports['port']}",
                f"--temp-dir={self.temp_dir}",
                f"--ray-client-server-port={free_port()}",
                f"--dashboard-port={ports['dashboard']}",
                "--dashboard-host=127.0.0.1",
                f"--include-dashboard={str(dashboard).lower()}",
            ]

        self._start(args, cpus, gpus, resources)
        self.address = f"127.0.0.1:{ports['port']}"
        self.dashboard = f"http://127.0.0.1:{ports['dashboard']}" if dashboard else ""
        return self.address

    def add_node(
        self, cpus: int = 1, gpus: int = 0, resources: dict | None = None
    ) -> subprocess.Popen:
        """Start one more node joined to the head; its `ray start` process (see `kill_node`)."""
        return self._start(lambda: [f"--address={self.address}"], cpus, gpus, resources)

    def _start(
        self, args: Callable[[], list[str]], cpus: int, gpus: int, resources: dict | None
    ) -> subprocess.Popen:
        """Start a node and wait until it runs, one at a time: two `ray start --address` at once
        on one host time out registering. A node that gives up (Ray gives it 30 s to register,
        which a loaded machine can miss) or stays silent for 90 s is killed and started again,
        twice at most, on fresh ports."""
        fake_gpus = ",".join(str(FAKE_GPU_IDS + i) for i in range(gpus))
        for _ in range(3):
            log = self.root / f"node{len(self.nodes)}.log"
            with open(log, "w") as out:
                node = subprocess.Popen(
                    [
                        RAY,
                        "start",
                        "--block",
                        *args(),
                        "--node-ip-address=127.0.0.1",
                        f"--num-cpus={cpus}",
                        f"--num-gpus={gpus}",
                        f"--resources={json.dumps(resources or {})}",
                        f"--dashboard-agent-listen-port={free_port()}",
                        "--disable-usage-stats",
                        # it forwards workers' output to drivers, which tfscale's and these
                        # helpers' drivers turn off (log_to_driver=False): polling the logs 10
                        # times a second, it is a node's largest idle CPU use
                        "--include-log-monitor=false",
                    ],
                    env={**self.env, "CUDA_VISIBLE_DEVICES": fake_gpus},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.nodes.append(node)
            deadline = time.monotonic() + 90
            while node.poll() is None and time.monotonic() < deadline:
                if "Ray runtime started" in log.read_text():
                    return node
                time.sleep(0.1)
            self.kill_node(node)
            self.nodes.remove(node)  # dead: the cluster's nodes are the ones that started
        said = log.read_text()[-3000:]
        self.stop()
        raise RuntimeError(f"`ray start` failed 3 times:\n{said}")

    def kill_node(self, node: subprocess.Popen) -> None:
        """The node crashes: every process of its session gets SIGKILL at once."""
        stop_sessions(node)

    def node_table(self, alive: int, timeout_s: float = 90) -> list[dict]:
        """Ray's node table (dead nodes too), once exactly `alive` nodes are alive or
        `timeout_s` has passed: what a driver of this cluster sees."""
        result = subprocess.run(
            [sys.executable, "-c", _NODE_TABLE, self.address, str(alive), str(timeout_s)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s + 120,
            check=True,
        )
        return json.loads(result.stdout.strip().splitlines()[-1])

    def processes(self) -> dict[int, str]:
        """Every live process of every node (daemons and the workers they forked)."""
        return session_processes(*[node.pid for node in self.nodes])

    def stop(self) -> None:
        """Kill every node at once, then remove the temp dir. SIGKILL: on SIGTERM a raylet
        takes 10 s to exit, gcs_server and `ray start --block` longer, and a throwaway
        cluster has nothing to save (its object store leaves nothing in /dev/shm)."""
        stop_sessions(*[node for node in self.nodes if node.returncode is None])
        shutil.rmtree(self.root, ignore_errors=True)


# A driver of its own reads the node table once exactly argv[2] nodes are alive.
_NODE_TABLE = """
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
deadline = time.monotonic() + float(sys.argv[3])
while True:
    nodes = ray.nodes()
    if sum(n["Alive"] for n in nodes) == int(sys.argv[2]) or time.monotonic() > deadline:
        break
    time.sleep(0.5)
keep = ("NodeID", "Alive", "NodeManagerAddress", "Resources")
print(json.dumps([{k: n.get(k) for k in keep} for n in nodes]))
"""


@contextlib.contextmanager
def local_cluster(nodes: int, env: dict, cpus: int = 1) -> Iterator[str]:
    """The address of a fresh cluster of `nodes` CPU nodes of `cpus` CPUs each, stopped after."""
    with LocalCluster(env) as cluster:
        cluster.start_head(cpus=cpus)
        for _ in range(nodes - 1):
            cluster.add_node(cpus=cpus)
        yield cluster.address


def tfscale_run(config: Path, out: Path, address: str, env: dict) -> float:
    """Run a sweep against `address`; its wall time in seconds (exit with stderr on failure)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "tfscale.cli", "run", str(config), "--out", str(out)]
        + ["--address", address],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    return wall


def sweep_on_cluster(config_text: str, nodes: int = 2) -> tuple[float, list[dict]]:
    """Run an experiment on a fresh local cluster of `nodes` 1-CPU nodes: its wall time and
    its rows."""
    env = token_env()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c.yaml"
        config.write_text(config_text)
        with local_cluster(nodes, env) as address:
            wall = tfscale_run(config, Path(tmp) / "run", address, env)
        lines = (Path(tmp) / "run" / "results.jsonl").read_text().splitlines()
    return wall, [json.loads(line) for line in lines]


def duration(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.1f} us"
