from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = """\
name: tiny
workload:
  m: [1, 64]
  k: 64
  n: 64
groups: [cpu]
"""


@pytest.fixture
def write_config(tmp_path):
    """Write YAML text to a file and return its path."""

    def write(text: str, name: str = "exp.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


def tfscale(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a fresh process, never against a stray RAY_ADDRESS."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if not (env or {}).get("RAY_ADDRESS"):
        environment.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "tfscale.cli", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def read_rows(run: Path) -> list[dict]:
    """The complete rows of a run folder (a line still being written is left out)."""
    path = run / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
