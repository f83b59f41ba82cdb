"""`ray up` / `ray submit` / `ray rsync-down` / `ray down` against cluster/localhost.yaml, over
SSH to 127.0.0.1, as a user with a cluster runs a sweep.

The "remote machine" is this one seen through a PID namespace with a private /tmp/ray: the
test's own sshd (on 127.0.0.1:22, with host and client keys it makes, no passwords) runs as
that namespace's first process. So the `ray stop` that `ray up` and `ray down` run on the head
stops only Ray inside it, its `ray_current_cluster` is its own, and ending sshd ends every
process of it. The head gets free ports instead of the YAML's 6379 (nothing else changes).
`ray up` installs the project into ~/tfscale and ~/tfscale-venv and adds the venv to ~/.bashrc,
as it would on a real head: the test needs root and a home without those, and puts ~/.bashrc
back afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks._cluster import free_port, process_info, stop_sessions
from tests.conftest import ROOT, needs_tensorflow

needs_tensorflow()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.launcher,  # minutes of pip: `make test-launcher`, not `make test`
    pytest.mark.usefixtures("other_ray_survives"),
]

RAY = str(Path(sys.executable).with_name("ray"))
HOME = Path.home()
SSHD = Path("/usr/sbin/sshd")


def port_22_free() -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", 22)) != 0


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root (the SSH user of cluster/localhost.yaml, and a PID namespace)"
    if not SSHD.exists() or not shutil.which("rsync") or not shutil.which("unshare"):
        return "needs Debian's openssh-server, rsync and unshare (.ci/run installs them)"
    if not port_22_free():
        return "127.0.0.1:22 is taken"
    if (HOME / "tfscale").exists() or (HOME / "tfscale-venv").exists():
        return "~/tfscale or ~/tfscale-venv exists; not touching them"
    return None


class Machine:
    """sshd as the first process of a PID namespace with a private /tmp/ray."""

    def __init__(self, tmp: Path):
        private = tmp / "machine-ray-tmp"
        private.mkdir()
        Path("/tmp/ray").mkdir(exist_ok=True)  # Ray's default temp dir, mounted over inside
        self.leader = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sh", "-c"]
            + [
                f"mount --bind {private} /tmp/ray && "
                f"exec {SSHD} -D -f {tmp}/sshd_config -E {tmp}/sshd.log"
            ],
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while port_22_free():
            if self.leader.poll() is not None or time.monotonic() > deadline:
                stop_sessions(self.leader)
                raise RuntimeError(f"sshd did not start: {tmp}/sshd.log")
            time.sleep(0.1)
        children = Path(f"/proc/{self.leader.pid}/task/{self.leader.pid}/children")
        (init,) = children.read_text().split()
        self.namespace = os.readlink(f"/proc/{init}/ns/pid")

    def processes(self) -> dict[int, str]:
        """Every live process inside the namespace: pid -> command line."""
        found = {}
        for entry in Path("/proc").iterdir():
            try:
                inside = entry.name.isdigit() and os.readlink(entry / "ns/pid") == self.namespace
            except OSError:
                continue
            info = process_info(int(entry.name)) if inside else None
            if info:
                found[int(entry.name)] = info[1]
        return found

    def stop(self) -> None:
        """unshare goes, its child (the namespace's first process) gets SIGKILL, and with it
        every process of the namespace."""
        stop_sessions(self.leader)
        deadline = time.monotonic() + 30
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not self.processes(), self.processes()


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    reason = why_not()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("ssh")
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / key)], check=True
        )
    shutil.copy(tmp / "client_key.pub", tmp / "authorized_keys")
    (tmp / "sshd_config").write_text(
        f"Port 22\nListenAddress 127.0.0.1\nHostKey {tmp}/host_key\nPidFile {tmp}/sshd.pid\n"
        f"AuthorizedKeysFile {tmp}/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n"
    )
    port = free_port()
    ports = (
        f"--port={port} --ray-client-server-port={free_port()} --dashboard-port={free_port()} "
        f"--dashboard-agent-listen-port={free_port()}"
    )
    cluster = tmp / "cluster.yaml"
    cluster.write_text(
        (ROOT / "cluster/localhost.yaml")
        .read_text()
        .replace("ssh_private_key: ~/.ssh/id_ed25519", f"ssh_private_key: {tmp}/client_key")
        .replace("--port=6379", ports)
        .replace(":6379", f":{port}")
    )
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    token = HOME / ".ray/auth_token"
    made_token = not token.exists()
    if made_token:
        subprocess.run(
            [RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True
        )
    bashrc = HOME / ".bashrc"
    saved = bashrc.read_text() if bashrc.exists() else None
    Path("/run/sshd").mkdir(exist_ok=True)
    machine = Machine(tmp)
    try:
        yield {"cluster": cluster, "env": env, "tmp": tmp, "machine": machine}
    finally:
        subprocess.run(
            [RAY, "down", "-y", str(cluster)],
            env=env,
            capture_output=True,
            timeout=300,
            check=False,
            cwd=ROOT,
        )
        machine.stop()
        if saved is None:
            bashrc.unlink(missing_ok=True)
        else:
            bashrc.write_text(saved)
        shutil.rmtree(HOME / "tfscale", ignore_errors=True)
        shutil.rmtree(HOME / "tfscale-venv", ignore_errors=True)
        if made_token:
            token.unlink(missing_ok=True)


def ray(
    *args: str, launcher: dict, timeout: int = 900
) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(
        [RAY, *args],
        env=launcher["env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return result, time.monotonic() - started


def test_up_submit_rsync_down_and_down(launcher):
    cluster = str(launcher["cluster"])
    up, up_s = ray("up", "-y", "--no-config-cache", cluster, launcher=launcher)
    assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]

    submit, submit_s = ray(
        "submit",
        cluster,
        "experiments/sweep.py",
        "--",
        "configs/quickstart.yaml",
        "--set",
        "groups=[cpu]",
        "--set",
        "workload.op=[matmul]",
        "--set",
        "workload.m=[1,64]",
        "--set",
        "workload.k=64",
        "--set",
        "workload.n=64",
        "--set",
        "timing.min_time_s=0.05",
        launcher=launcher,
    )
    output = submit.stdout + submit.stderr
    (launcher["tmp"] / "submit.log").write_text(output)
    assert submit.returncode == 0, output[-3000:]
    assert "2/2 points" in output  # progress reached the submitter's terminal
    head_dir = next(
        line.split(": ", 1)[1]
        for line in output.splitlines()
        if line.startswith("run folder on the head: ")
    ).strip()
    assert "ray rsync-down CLUSTER.yaml" in output

    fetched = launcher["tmp"] / "fetched"
    down, down_s = ray("rsync-down", cluster, head_dir + "/", str(fetched) + "/", launcher=launcher)
    assert down.returncode == 0, (down.stdout + down.stderr)[-3000:]
    rows = [json.loads(line) for line in (fetched / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert (fetched / "report.html").is_file()

    daemons = ("raylet", "gcs_server")
    running = launcher["machine"].processes().values()
    assert any(d in cmd for cmd in running for d in daemons), running  # `ray up` started them
    stop, stop_s = ray("down", "-y", cluster, launcher=launcher)
    assert stop.returncode == 0
    running = launcher["machine"].processes().values()
    assert not [cmd for cmd in running if any(d in cmd for d in daemons)]
    print(
        f"ray up {up_s:.1f} s, submit {submit_s:.1f} s, rsync-down {down_s:.1f} s, down {stop_s:.1f} s"
    )
