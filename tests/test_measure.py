"""The measuring core on real TensorFlow (CPU, emulated devices), each case in a fresh process
because logical devices must be configured before TensorFlow initialises."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import needs_tensorflow

needs_tensorflow()
pytestmark = pytest.mark.slow

TIMING = dict(warmup=2, min_repeats=3, min_time_s=0.05, max_time_s=2, min_block_s=0.005)


def in_worker(body: str) -> dict:
    """Run `body` in a fresh Python with a GroupWorker set up; it must print one JSON line."""
    code = "import json\nfrom tfscale.worker import GroupWorker\n" + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_loop_time_scales_with_iterations_so_it_is_not_optimised_away():
    out = in_worker(
        """
        import time, tensorflow as tf
        from tfscale.plan import Point
        from tfscale.measure import Measurer
        worker = GroupWorker("cpu", "cpu", 1, False, 2)
        m = Measurer(worker.devices)
        point = Point("cpu", 256, 256, 256, "float32", "device")
        xs, ws = m.operands(point)
        fn = m._function("device")
        fn(xs[0], ws[0], tf.constant(1)).numpy()
        def best(n):
            times = []
            for _ in range(7):
                start = time.perf_counter(); fn(xs[0], ws[0], tf.constant(n)).numpy()
                times.append(time.perf_counter() - start)
            return min(times)
        print(json.dumps({"t20": best(20), "t40": best(40), "t80": best(80)}))
        """
    )
    assert 1.5 < out["t40"] / out["t20"] < 2.6
    assert 1.5 < out["t80"] / out["t40"] < 2.6


def test_cpu_point_reports_samples_devices_and_a_passing_numerical_check():
    out = in_worker(
        f"""
        worker = GroupWorker("cpu", "cpu", 1, False, 2)
        row = worker.run_point(dict(group="cpu", m=1, k=100, n=1, dtype="float32", data="device"), {TIMING})
        print(json.dumps({{"row": row, "describe": worker.describe()}}))
        """
    )
    row = out["row"]
    assert row["status"] == "ok" and row["timing"] == "graph_loop"
    assert row["devices"] == ["CPU:0"] and row["inner"] > 1
    assert row["numerics_error"] < 1e-5
    assert row["loop_scaling"] is not None
    assert len(row["samples"]) >= TIMING["min_repeats"]
    assert row["call_s"] > np.median(
        row["samples"]
    )  # one Python call costs more than one iteration
    devices = out["describe"]["devices"]
    assert devices["intra_op_threads"] == 2 and devices["emulated"] is False


@pytest.mark.parametrize("data", ["device", "host"])
def test_emulated_mirrored_places_one_matmul_per_replica(data):
    out = in_worker(
        f"""
        worker = GroupWorker("mirrored:2", "mirrored", 2, True, 2)
        rows = [worker.run_point(dict(group="mirrored:2", m=m, k=64, n=32, dtype=dt, data="{data}"), {TIMING})
                for m, dt in ((5, "float32"), (64, "float64"), (1, "bfloat16"))]
        print(json.dumps(rows))
        """
    )
    for row in out:
        assert row["status"] == "ok", row
        assert row["devices"] == ["CPU:0", "CPU:1"]


def test_gpu_group_without_a_visible_gpu_fails_instead_of_running_on_the_cpu():
    out = in_worker(
        f"""
        worker = GroupWorker("gpu", "gpu", 1, False, 1)
        row = worker.run_point(dict(group="gpu", m=4, k=4, n=4, dtype="float32", data="device"), {TIMING})
        print(json.dumps(row))
        """
    )
    assert out["status"] == "failed"
    assert (
        "TensorFlow sees 0" in out["reason"] and "nothing was measured on the CPU" in out["reason"]
    )


def test_numerical_check_catches_a_wrong_result():
    out = in_worker(
        """
        import numpy as np, tensorflow as tf
        from tfscale.measure import numerical_error, numerical_tolerance
        x = tf.random.stateless_normal((4, 50), seed=[1, 0])
        w = tf.random.stateless_normal((50, 8), seed=[2, 0])
        right = (x @ w).numpy()
        print(json.dumps({"right": numerical_error([x], w, [right]),
                          "wrong": numerical_error([x], w, [right.T.reshape(4, 8) * 0 + 1]),
                          "tolerance": numerical_tolerance("float32", 50)}))
        """
    )
    assert out["right"] < out["tolerance"] < out["wrong"]


def test_out_of_memory_in_tensorflow_becomes_an_oom_row():
    out = in_worker(
        f"""
        import tensorflow as tf
        from tfscale.measure import Measurer
        def exhausted(self, point):
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor\\nmore")
        Measurer.operands = exhausted
        worker = GroupWorker("cpu", "cpu", 1, False, 1)
        print(json.dumps(worker.run_point(dict(group="cpu", m=4, k=4, n=4, dtype="float32", data="device"), {TIMING})))
        """
    )
    assert out == {"status": "oom", "reason": "OOM when allocating tensor"}
