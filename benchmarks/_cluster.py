"""A local multi-node Ray cluster for the benchmarks: a head and extra `ray start` nodes on
this machine, each with its own CPUs, and `tfscale run --address` against it."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
PORT = 6400


def token_env() -> dict:
    """This process's environment with a fresh Ray auth token and no inherited RAY_ADDRESS."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    return env


@contextlib.contextmanager
def local_cluster(nodes: int, env: dict, cpus: int = 1) -> Iterator[str]:
    """Yield the address of a fresh cluster of `nodes` nodes; stop every Ray process after
    (and before: `ray stop --force` also stops Ray processes this machine had running)."""
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, check=False)
    head = [RAY, "start", "--head", f"--port={PORT}", f"--num-cpus={cpus}"]
    start = [*head, "--include-dashboard=false", "--disable-usage-stats"]
    subprocess.run(start, env=env, check=True, capture_output=True)
    try:
        for _ in range(nodes - 1):
            subprocess.run(
                [RAY, "start", f"--address=127.0.0.1:{PORT}", f"--num-cpus={cpus}"],
                env=env,
                check=True,
                capture_output=True,
            )
        yield f"127.0.0.1:{PORT}"
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, check=False)


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
