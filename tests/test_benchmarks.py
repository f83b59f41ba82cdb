"""The benchmarks run (short versions, no thresholds: their figures live in benchmarks/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytest.importorskip("tensorflow")
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["fidelity", "scale", "sweep", "cluster_scaling", "multiworker"])
def test_benchmark_runs_and_prints_its_figures(name):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures
