"""The measuring core on real TensorFlow (CPU, emulated devices), proven from the graph
TensorFlow really executed. Each case runs in a fresh process, because logical devices must be
configured before TensorFlow initialises; cases share a process where they can."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.conftest import host_allocator, needs_tensorflow

needs_tensorflow()
pytestmark = pytest.mark.slow

TIMING = dict(warmup=2, min_repeats=3, min_time_s=0.05, max_time_s=2, min_block_s=0.005)


def in_worker(body: str) -> dict:
    """Run `body` in a fresh Python; it must print one JSON line last."""
    code = (
        "import json\nfrom tfscale.worker import GroupWorker\nfrom tfscale.plan import Point\n"
        + f"TIMING = {TIMING!r}\n"
        + textwrap.dedent(body)
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def point(group: str, m: int, k: int, n: int, **extra) -> dict:
    return {"group": group, "m": m, "k": k, "n": n, "dtype": "float32", "data": "device", **extra}


@pytest.fixture(scope="module")
def mirrored():
    """One emulated mirrored:2 worker measuring every op, the executed graph of each kept."""
    return in_worker(
        f"""
        import tensorflow as tf
        from tfscale.worker import graph
        from tfscale.worker.measure import Measurer

        recorded = {{}}
        original = graph.read
        def keep(metadata, kernels):
            executed = original(metadata, kernels)
            nodes = [(n.op, n.name, n.device.rsplit("device:", 1)[-1])
                     for f in metadata.function_graphs for g in f.partition_graphs for n in g.node]
            recorded.setdefault("last", []).append(nodes)
            return executed
        graph.read = keep

        worker = GroupWorker("mirrored:2", "mirrored", 2, True, 2)
        out = {{}}
        cases = {{
            "matmul_device": {point("mirrored:2", 6, 32, 16)!r},
            "matmul_host": {point("mirrored:2", 6, 32, 16, data="host")!r},
            # few rows, a small dW: the all-reduce's latency is most of the step, by far
            "train_strong": {point("mirrored:2", 4, 64, 64, op="train_step")!r},
            "train_weak": {point("mirrored:2", 2, 64, 64, op="train_step", scaling="weak")!r},
            "allreduce": {point("mirrored:2", 5, 0, 12, op="allreduce")!r},
            "tf32": {point("mirrored:2", 6, 32, 16)!r} | {{"dtype": "tf32"}},
        }}
        for name, coordinates in cases.items():
            recorded.clear()
            row = worker.run_point(coordinates, TIMING)
            row["nodes"] = recorded.get("last", [[]])[0]
            out[name] = row
        print(json.dumps(out))
        """
    )


def in_loop(nodes: list, op: str) -> list[str]:
    """Devices of the `op` kernels inside the loop, under whatever name they ran (oneDNN
    rewrites MatMul to _MklMatMul on Intel CPUs)."""
    from tfscale.worker.graph import kernel

    return sorted(d for kind, name, d in nodes if kernel(kind) == op and "while" in name)


def test_a_device_loop_runs_wholly_on_each_replica_device(mirrored):
    row = mirrored["matmul_device"]
    assert row["status"] == "ok", row
    # one partition per replica, and no transfer between them inside the timed loop
    executed = {**row["executed"], "kernels": None}
    assert executed == {
        "kernels": None,
        "partitions": 2,
        "loop_transfers": 0,
        "parallel_iterations": [1],
    }
    assert row["executed"]["kernels"] in (["MatMul"], ["_MklMatMul"]), row["executed"]
    transfers = [n for n in row["nodes"] if n[0] in ("_Send", "_Recv") and "while" in n[1]]
    assert transfers == []
    # the evidence is the matmuls that ran inside the loop, one on each replica's device
    assert in_loop(row["nodes"], "MatMul") == ["CPU:0", "CPU:1"] == row["devices"]


def test_host_data_copies_x_in_and_y_out_every_iteration_one_iteration_at_a_time(mirrored):
    row = mirrored["matmul_host"]
    assert row["status"] == "ok" and row["numerics_error"] < 1e-5, row
    # X crosses host -> CPU:1 and Y CPU:1 -> host inside the loop (CPU:0 is the host itself);
    # the loop runs one iteration at a time, so iteration i+1's copy of X waits for
    # iteration i's copy of Y
    assert row["executed"]["parallel_iterations"] == [1]
    assert row["executed"]["loop_transfers"] >= 4  # a send and a receive each way
    received = {d for kind, name, d in row["nodes"] if kind == "_Recv" and "while" in name}
    assert received == {"CPU:0", "CPU:1"}  # CPU:1 receives X, the host receives Y back
    # the corner that ends a block is sliced where Y is: on the host, after the loop
    slices = [d for kind, name, d in row["nodes"] if kind == "StridedSlice" and "while" not in name]
    assert slices and set(slices) == {"CPU:0"}, slices


def test_train_step_runs_three_matmuls_per_replica_and_matches_numpy(mirrored):
    for case in ("train_strong", "train_weak"):
        row = mirrored[case]
        assert row["status"] == "ok", row
        # forward, dW and dX on each replica: dX is not pruned
        assert in_loop(row["nodes"], "MatMul") == ["CPU:0"] * 3 + ["CPU:1"] * 3
        assert row["devices"] == ["CPU:0", "CPU:1"]
        assert row["numerics_error"] < 1e-4  # W after the warm-up steps vs NumPy float64
        assert row["all_reduce"] == "collective"  # read back from the strategy
        # the breakdown, timed like the step: the step without its all-reduce, and the
        # all-reduce of dW alone
        assert row["compute_s"] > 0 and row["allreduce_s"] > 0
        assert len(row["compute_samples_s"]) >= TIMING["min_repeats"]
        # the step without its all-reduce is the faster: compared on each one's fastest
        # sample, the least disturbed (under CI's load a median once came out 0.75 vs 0.70 ms;
        # undisturbed, compute is ~0.1 ms of a ~0.4 ms step)
        assert min(row["compute_samples_s"]) < min(row["samples"])


def test_allreduce_sums_every_replica(mirrored):
    row = mirrored["allreduce"]
    assert row["status"] == "ok" and row["numerics_error"] < 1e-6, row
    assert row["devices"] == ["CPU:0", "CPU:1"]  # the collective ran on both devices
    assert row["loop_scaling"] is not None


def test_float32_is_fp32_and_tf32_is_skipped_without_a_gpu(mirrored):
    assert mirrored["matmul_device"]["precision"] == "fp32"
    tf32 = mirrored["tf32"]
    assert tf32["status"] == "skipped" and "TF32" in tf32["reason"]


@pytest.fixture(scope="module")
def cpu():
    """One process: a gpu group's worker first (it must fail before TensorFlow initialises,
    as in an actor of its own), then one cpu worker (2 threads) for every cpu case; the
    out-of-memory cases last, because they replace the op's loading and the timed block."""
    return in_worker(
        f"""
        import tensorflow as tf
        from tfscale.worker.measure import Measurer
        from tfscale.worker.ops import OPS
        from tfscale.worker.ops.base import operand
        from tfscale.worker.ops.matmul import MatMul
        from tfscale.worker.replicas import Replicas

        out = {{}}
        gpu = GroupWorker("gpu", "gpu", 1, False, 1)
        out["gpu"] = gpu.run_point({point("gpu", 4, 4, 4)!r}, TIMING)

        worker = GroupWorker("cpu", "cpu", 1, False, 2)
        out["rows"] = {{
            name: worker.run_point(coordinates, TIMING)
            for name, coordinates in {{
                "dot": {point("cpu", 1, 100, 1)!r},
                "train": {point("cpu", 16, 8, 4, op="train_step")!r},
                "train64": {point("cpu", 16, 8, 4, op="train_step", dtype="float64")!r},
                "allreduce": {point("cpu", 4, 0, 4, op="allreduce")!r},
                "tf32": {point("cpu", 4, 4, 4)!r} | {{"dtype": "tf32"}},
            }}.items()
        }}
        m = Measurer(worker.devices)
        m.prepare(Point("cpu", 256, 256, 256, "float32", "device"), TIMING)
        def best(n):
            return min(m.block(n) for _ in range(7))
        out["loop"] = {{"t10": best(10), "t160": best(160)}}
        out["describe"] = worker.describe()

        replicas = Replicas(worker.devices)
        p = Point("cpu", 4, 50, 8, "float32", "device")
        loaded = OPS["matmul"].load(p, replicas, "step")
        right = (operand((4, 50), "x", 0, "float32") @ operand((50, 8), "w", 0, "float32")).numpy()
        check = lambda heads: OPS["matmul"].numerics(p, loaded, heads, replicas)
        out["numerics"] = {{"right": check([right]), "wrong": check([right * 0 + 1])}}

        from tfscale.worker.ops import train_step
        step = Point("cpu", 16, 8, 4, "float32", "device", op="train_step")
        kept = len(OPS["train_step"].load(step, replicas, "step").check["made"])
        limit, train_step.CHECK_LIMIT = train_step.CHECK_LIMIT, 16 * 8 - 1  # one element over
        unchecked = OPS["train_step"].load(step, replicas, "step")
        out["host_copies"] = {{
            "kept": kept,
            "unchecked": len(unchecked.check["made"]),
            "reason": OPS["train_step"].numerics(step, unchecked, [], replicas)[2],
        }}
        train_step.CHECK_LIMIT = limit

        def exhausted(*args, **kwargs):
            raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor\\nmore")
        before = MatMul.load
        MatMul.load = exhausted
        loading = worker.run_point({point("cpu", 4, 4, 4)!r}, TIMING)
        MatMul.load = before
        calls = {{"n": 0}}
        block = Measurer.block
        def block_then_oom(self, inner):
            calls["n"] += 1
            if calls["n"] > 3:
                exhausted()
            return block(self, inner)
        Measurer.block = block_then_oom
        sampling = worker.run_point({point("cpu", 8, 4, 4)!r}, TIMING)
        out["oom"] = {{"loading": loading, "sampling": sampling, "blocks": calls["n"]}}
        print(json.dumps(out))
        """
    )


def test_cpu_group_measures_every_op_and_says_what_it_cannot(cpu):
    rows = cpu["rows"]
    dot = rows["dot"]
    assert dot["status"] == "ok" and dot["timing"] == "graph_loop" and dot["inner"] > 1
    assert dot["devices"] == ["CPU:0"] and dot["numerics_error"] < 1e-5
    assert dot["precision"] == "fp32" and dot["all_reduce"] is None
    # what it measured with, read back: TF's threads and TensorFlow's default host allocator
    assert dot["measured_with"]["intra_op_threads"] == 2
    assert dot["measured_with"]["host_allocator"] == host_allocator(dot["measured_with"])
    assert len(dot["samples"]) >= TIMING["min_repeats"]
    assert dot["call_s"] > np.median(dot["samples"])  # one Python call > one iteration
    train = rows["train"]
    assert train["status"] == "ok" and train["numerics_error"] < 1e-4
    # float64 steps stay float64 (a Python float through tf.cast was rounded to float32 once)
    train64 = rows["train64"]
    assert train64["status"] == "ok" and train64["numerics_error"] < 1e-12, train64
    assert "compute_s" not in train  # one replica: no all-reduce to break down
    assert rows["allreduce"] == {
        "status": "skipped",
        "reason": "one replica: nothing to all-reduce",
    }
    assert rows["tf32"]["status"] == "skipped" and "TF32" in rows["tf32"]["reason"]
    # the loop is not optimised away: time scales with iterations
    loop = cpu["loop"]
    # (16x the iterations: ~16x the time; a pruned loop would take the same; wide bounds, the
    # fastest of 7 blocks each: a busy machine once made 40 iterations slower than 80)
    assert 4 < loop["t160"] / loop["t10"] < 40
    devices = cpu["describe"]["devices"]
    assert devices["intra_op_threads"] == 2 and devices["emulated"] is False
    assert cpu["describe"]["tf32_enabled"] is False  # float32 means fp32 in the worker


def test_gpu_group_without_a_visible_gpu_fails_instead_of_running_on_the_cpu(cpu):
    out = cpu["gpu"]
    assert out["status"] == "failed"
    assert "TensorFlow sees 0" in out["reason"]
    assert "nothing was measured on the CPU" in out["reason"]


def test_numerical_check_catches_a_wrong_result(cpu):
    error, tolerance, _ = cpu["numerics"]["right"]
    wrong, _, _ = cpu["numerics"]["wrong"]
    assert error < tolerance < wrong


def test_train_step_keeps_host_copies_only_for_a_check_that_runs(cpu):
    copies = cpu["host_copies"]
    assert copies["kept"] == 2  # X and T of the one replica, for the numerical check
    assert copies["unchecked"] == 0 and "reference limit" in copies["reason"]


def test_out_of_memory_becomes_an_oom_row_before_or_during_sampling(cpu):
    out = cpu["oom"]
    expected = {"status": "oom", "reason": "OOM when allocating tensor"}
    assert out["loading"] == expected
    assert out["sampling"] == expected and out["blocks"] == 4


def test_a_worker_imports_tensorflow_without_matplotlib():
    """Keras (which TensorFlow imports) would import matplotlib.pyplot, installed for the
    driver's plots: CPU a starting worker spends while the other groups' workers start."""
    loaded = in_worker(
        """
        import sys
        worker = GroupWorker("cpu", "cpu", 1, False, 1)
        plotting = [n for n in sys.modules if n.startswith("matplotlib") and sys.modules[n]]
        print(json.dumps({"keras": "keras" in sys.modules, "plotting": plotting}))
        """
    )
    assert loaded == {"keras": True, "plotting": []}
