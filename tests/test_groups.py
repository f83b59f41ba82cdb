"""What each group asks of a cluster, and when it is emulated or unavailable."""

from __future__ import annotations

import pytest

from tfscale.groups import NodeInfo, parse_group, place, schedule

LAPTOP = [NodeInfo("a", "127.0.0.1", cpus=2, gpus=0, memory_bytes=8e9)]
GPU_NODE = [
    NodeInfo("a", "127.0.0.1", cpus=2, gpus=0, memory_bytes=8e9),
    NodeInfo("b", "127.0.0.2", cpus=16, gpus=4, memory_bytes=64e9),
]


def test_group_names():
    assert parse_group("mirrored:8") == ("mirrored", 8)
    assert parse_group("gpu") == ("gpu", 1)
    for bad in ("mirrored", "mirrored:0", "GPU", "mirrored:2x"):
        with pytest.raises(ValueError):
            parse_group(bad)


def test_gpu_group_without_gpus_is_unavailable():
    placement = place("gpu", "never", LAPTOP)
    assert placement.unavailable and "needs 1 GPU" in placement.unavailable
    assert not placement.emulated


def test_missing_gpus_are_emulated_when_asked_and_ask_for_cpus():
    placement = place("mirrored:2", "missing", LAPTOP)
    assert placement.emulated and placement.unavailable is None
    assert placement.resources == {"CPU": 2.0}


def test_real_gpus_are_used_when_present():
    placement = place("mirrored:4", "missing", GPU_NODE)
    assert not placement.emulated and placement.resources == {"CPU": 1.0, "GPU": 4.0}
    assert place("mirrored:8", "never", GPU_NODE).unavailable


def test_per_group_emulate_overrides_the_policy():
    assert place("gpu", "never", GPU_NODE, emulate=True).emulated
    assert place("gpu", "always", GPU_NODE, emulate=False).emulated is False


def test_cpu_group_asks_for_its_threads():
    assert place("cpu", "never", GPU_NODE).num_cpus == 16
    assert place("cpu", "never", LAPTOP, threads=1).resources == {"CPU": 1.0}
    assert place("cpu", "never", LAPTOP, threads=4).unavailable


def test_groups_spread_over_nodes_that_can_hold_them():
    nodes = [
        NodeInfo("a", "h", 2, 0, 8e9),
        NodeInfo("b", "h", 2, 1, 8e9),
        NodeInfo("c", "h", 2, 0, 8e9),
    ]
    placements = [place(g, "missing", nodes) for g in ("cpu", "gpu", "mirrored:2")]
    plans, impossible = schedule(placements, nodes, {"cpu": 5, "gpu": 5, "mirrored:2": 5}, "node")
    assert not impossible
    where = {
        g: node
        for node, phases in plans.items()
        for phase in phases
        for lane in phase
        for g in lane
    }
    assert where["gpu"] == "b"  # the only node with a GPU
    assert len(set(where.values())) == 3  # three nodes measure at the same time
    assert all(len(phases) == 1 and len(phases[0]) == 1 for phases in plans.values())


def test_one_node_runs_its_groups_one_after_another():
    plans, _ = schedule(
        [place(g, "missing", LAPTOP) for g in ("cpu", "gpu", "mirrored:2")],
        LAPTOP,
        {"cpu": 1, "gpu": 1, "mirrored:2": 1},
        "node",
    )
    assert plans == {"a": [[["cpu", "gpu", "mirrored:2"]]]}


def test_device_isolation_runs_gpu_groups_on_disjoint_gpus_together():
    node = [NodeInfo("g", "h", 16, 4, 64e9)]
    placements = [place(g, "never", node) for g in ("cpu", "gpu", "mirrored:2", "mirrored:4")]
    plans, _ = schedule(placements, node, {}, "device")
    cpu_phase, gpu_phase = plans["g"]
    assert cpu_phase == [["cpu"]]
    assert len(gpu_phase) == 1  # mirrored:4 needs all 4 GPUs: one lane
    small = [place(g, "never", node) for g in ("gpu", "mirrored:2")]
    plans, _ = schedule(small, node, {}, "device")
    assert plans["g"] == [[["gpu"], ["mirrored:2"]]]  # 1 + 2 GPUs of 4 at once


def test_the_group_that_fits_one_node_only_gets_it():
    nodes = [
        NodeInfo("head", "h", 1, 0, 8e9),
        NodeInfo("b", "h", 1, 1, 8e9),
        NodeInfo("a", "h", 1, 0, 8e9),
    ]
    placements = [
        place(g, "never", nodes, emulate=g != "gpu", threads=1)
        for g in ("cpu", "mirrored:2", "gpu")
    ]
    plans, _ = schedule(placements, nodes, {"cpu": 4, "mirrored:2": 4, "gpu": 4}, "node")
    assert plans["b"] == [[["gpu"]]]
    assert {g for node in ("head", "a") for g in plans[node][0][0]} == {"cpu", "mirrored:2"}


def test_multiworker_groups_need_n_nodes_and_say_emulated_on_one_machine():
    assert parse_group("multiworker:2x4") == ("multiworker", 8)
    assert parse_group("multiworker:3x0") == ("multiworker", 3)
    one_host = [NodeInfo("a", "10.0.0.1", 2, 0, 8e9), NodeInfo("b", "10.0.0.1", 2, 0, 8e9)]
    two_hosts = [NodeInfo("a", "10.0.0.1", 2, 0, 8e9), NodeInfo("b", "10.0.0.2", 2, 0, 8e9)]
    assert place("multiworker:2x0", "never", one_host).emulated
    real = place("multiworker:2x0", "never", two_hosts)
    assert not real.emulated and real.workers == 2 and real.resources == {"CPU": 2.0}
    assert "needs 3 nodes" in place("multiworker:3x0", "never", two_hosts).unavailable
    assert "GPUs" in place("multiworker:2x4", "never", two_hosts).unavailable
    plans, _ = schedule([real], two_hosts, {}, "node")
    assert plans == {}  # spans nodes: run apart from the per-node work
