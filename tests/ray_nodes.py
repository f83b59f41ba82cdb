"""Ray clusters a test starts, kills and stops itself, and nothing else on the machine.

Each node is one `ray start --block` process leading a session of its own, with the node's
Ray processes (GCS, raylet, agents, workers) in it: a node is stopped, or killed as a crash
would, by signalling the processes of that session. Token authentication, free ports, and a private Ray temp
directory (RAY_TMPDIR): the cluster's `ray_current_cluster` file is the test's own, not the
machine's `/tmp/ray` one that other Ray users rely on.
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
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))

# Reads the node table through a driver of its own, once exactly `count` nodes are alive.
_NODES = """
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def session_pids(sid: int) -> set[int]:
    """Live (not zombie) processes of a session, from /proc. A process started with
    start_new_session=True leads one: Ray's daemons share its process group, but Ray puts
    each worker in a process group of its own, in the same session."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.add(int(entry.name))
    return found


def kill_session(sid: int, sig: int = signal.SIGKILL) -> None:
    """Signal every process of a session this test started, and nothing else."""
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Cluster:
    """A head and `ray start --address` nodes on 127.0.0.1, all started by this object."""

    def __init__(self):
        # short: Ray's socket paths live under it and must stay under ~100 characters
        self.tmp = Path(tempfile.mkdtemp(prefix="tfs", dir="/tmp"))
        self.env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "RAY_TMPDIR": str(self.tmp),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.address: str | None = None
        self.nodes: list[subprocess.Popen] = []
        self.labels: set[str] = set()

    @property
    def current_cluster_file(self) -> Path:
        """Where Ray records the last `ray start` head (`ray_current_cluster`) for this env."""
        return self.tmp / "ray" / "ray_current_cluster"

    def _start(self, *args: str) -> subprocess.Popen:
        """Start a node and wait until it runs. Ray gives a node 30 s to register, which a
        loaded machine can miss: a node that gives up is cleared away and started again."""
        for _ in range(3):
            path = self.tmp / f"node{len(self.nodes)}.log"
            with open(path, "w") as log:
                node = subprocess.Popen(
                    [RAY, "start", "--block", "--disable-usage-stats", *args],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own session: the node's Ray processes
                )
            self.nodes.append(node)
            deadline = time.monotonic() + 180
            while node.poll() is None and time.monotonic() < deadline:
                if "Ray runtime started" in path.read_text():
                    return node
                time.sleep(0.5)
            self.kill(node)
        raise RuntimeError(f"`ray start {' '.join(args)}` failed 3 times; see {path}")

    def start_head(self, cpus: int = 0) -> subprocess.Popen:
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        return self._start(
            "--head",
            f"--port={port}",
            f"--num-cpus={cpus}",
            "--node-ip-address=127.0.0.1",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={free_port()}",
        )

    def add_node(self, cpus: int, gpus: int = 0, label: str | None = None) -> subprocess.Popen:
        """A worker node; `label` names a custom resource of 1 by which the test finds it."""
        if label:
            self.labels.add(label)
        return self._start(
            f"--address={self.address}",
            f"--num-cpus={cpus}",
            f"--num-gpus={gpus}",
            f"--resources={json.dumps({label: 1} if label else {})}",
            "--node-ip-address=127.0.0.1",
        )

    def node_table(self, alive: int, timeout_s: float = 90) -> list[dict]:
        """Ray's node table, once exactly `alive` nodes are alive (or timeout_s has passed)."""
        result = subprocess.run(
            [sys.executable, "-c", _NODES, self.address, str(alive), str(timeout_s)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s + 60,
            check=True,
        )
        return json.loads(result.stdout.strip().splitlines()[-1])

    def labelled(self, alive: int) -> dict[str, str]:
        """label -> node id of the labelled nodes alive, once `alive` nodes are."""
        table = self.node_table(alive)
        return {
            key: node["NodeID"]
            for node in table
            if node["Alive"]
            for key in node["Resources"]
            if key in self.labels
        }

    def kill(self, node: subprocess.Popen) -> None:
        """The node crashes: every process it started gets SIGKILL at once."""
        kill_session(node.pid)
        node.wait(30)

    def stop(self) -> None:
        """Stop every node this object started (SIGTERM, then SIGKILL), nothing else."""
        for node in reversed(self.nodes):
            for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 15)):
                kill_session(node.pid, sig)
                deadline = time.monotonic() + grace
                while session_pids(node.pid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if not session_pids(node.pid):
                    break
            node.wait(30)
        left = {pid for node in self.nodes for pid in session_pids(node.pid)}
        shutil.rmtree(self.tmp, ignore_errors=True)
        assert not left, f"processes left running: {sorted(left)}"
