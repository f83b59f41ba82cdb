"""The test suite itself: it cannot go green on a machine without TensorFlow."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

WITHOUT_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None  # as if not installed: `import` and find_spec both fail
import pytest
sys.exit(pytest.main(["--collect-only", "-q", "-ra", "-p", "no:cacheprovider", "-m", "", "tests"]))
"""


def test_without_tensorflow_the_suite_fails_instead_of_skipping():
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert "TensorFlow is not installed" in out, out[-3000:]
    runs_tensorflow = ("test_run", "test_faults", "test_cluster", "test_launcher", "test_measure")
    for module in (*runs_tensorflow, "test_local_mode", "test_node_faults"):
        assert f"ERROR tests/{module}.py" in out, out[-3000:]
    assert "ERROR tests/test_benchmarks.py" in out  # `-m ""`: the bench modules are collected too
    assert "SKIPPED" not in out, out[-3000:]  # no module skips for it (-ra lists each skip)
