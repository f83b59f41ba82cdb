"""What each group asks of a cluster, and when it is emulated or unavailable."""

from __future__ import annotations

import pytest

from tfscale.groups import NodeInfo, parse_group, place

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
