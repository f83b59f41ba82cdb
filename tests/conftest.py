from __future__ import annotations

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
