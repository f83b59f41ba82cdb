"""GPU-only paths, tested on their logic with recorded outputs (no GPU here)."""

from __future__ import annotations

import pytest

from tfscale.worker.devices import DeviceError, check_gpu_count, cpu_list, pinned_bytes
from tfscale.worker.gpus import (
    GpuInfo,
    bus_key,
    complete,
    parse_description,
    parse_nvidia_smi,
    supports_tf32,
)

# `nvidia-smi --query-gpu=index,uuid,pci.bus_id,name,memory.total,driver_version
#  --format=csv,noheader,nounits` on a machine whose PCI order differs from CUDA's
SMI = """\
0, GPU-1b2c3d4e-0000-1111-2222-333344445555, 00000000:07:00.0, NVIDIA A100-SXM4-40GB, 40960, 550.54.15
1, GPU-9f8e7d6c-0000-1111-2222-333344445555, 00000000:0F:00.0, NVIDIA A100-SXM4-80GB, 81920, 550.54.15
"""
# TensorFlow's physical_device_desc of the one GPU Ray gave this worker (CUDA_VISIBLE_DEVICES
# names it by CUDA's order, which is not nvidia-smi's)
TF_DESC = (
    "device: 0, name: NVIDIA A100-SXM4-80GB, pci bus id: 0000:0f:00.0, compute capability: 8.0"
)


def test_gpus_that_tensorflow_cannot_see_are_an_error_not_a_cpu_run():
    with pytest.raises(
        DeviceError, match="TensorFlow sees 0.*no CUDA support.*nothing was measured"
    ):
        check_gpu_count(0, 1, "0", built_with_cuda=False)
    with pytest.raises(DeviceError, match="driver"):
        check_gpu_count(1, 2, "0,1", built_with_cuda=True)
    check_gpu_count(4, 2, "0,1,2,3", built_with_cuda=True)


def test_a_gpu_is_matched_to_nvidia_smi_by_pci_bus_not_by_index():
    assert bus_key("00000000:0F:00.0") == bus_key("0000:0f:00.0")
    gpu = parse_description(TF_DESC, 80_000_000_000)
    assert gpu == GpuInfo("NVIDIA A100-SXM4-80GB", "0000:0f:00.0", "8.0", 80_000_000_000)
    (done,) = complete([gpu], parse_nvidia_smi(SMI))
    assert done.uuid.startswith("GPU-9f8e") and done.driver == "550.54.15"
    assert done.memory_bytes == 80_000_000_000  # what TensorFlow may use, not the card's total


def test_a_mig_slice_keeps_tensorflows_memory_and_nvidia_smi_fills_what_tensorflow_lacks():
    mig = parse_description(
        "device: 0, name: NVIDIA A100-SXM4-40GB MIG 1g.5gb, pci bus id: 0000:07:00.0, "
        "compute capability: 8.0",
        4_800_000_000,
    )
    (done,) = complete([mig], parse_nvidia_smi(SMI))
    assert done.memory_bytes == 4_800_000_000  # the slice, not the 40 GB card
    no_limit = parse_description(TF_DESC, None)
    (filled,) = complete([no_limit], parse_nvidia_smi(SMI))
    assert filled.memory_bytes == 81920 * 2**20
    (alone,) = complete([no_limit], parse_nvidia_smi(""))  # nvidia-smi missing
    assert alone.memory_bytes is None and alone.driver is None
    assert parse_nvidia_smi("[N/A]\nNo devices were found\n") == {}


def test_tf32_needs_ampere_or_newer():
    assert supports_tf32("8.0") and supports_tf32("9.0") and supports_tf32("8.9")
    assert not supports_tf32("7.0") and not supports_tf32("7.5") and not supports_tf32(None)


def test_pinned_host_pool_follows_tensorflows_variable(monkeypatch):
    monkeypatch.delenv("TF_GPU_HOST_MEM_LIMIT_IN_MB", raising=False)
    assert pinned_bytes() == 64 * 2**30
    monkeypatch.setenv("TF_GPU_HOST_MEM_LIMIT_IN_MB", "1024")
    assert pinned_bytes() == 2**30


def test_the_cpus_a_row_measured_with_are_written_as_taskset_does():
    assert cpu_list([0, 1]) == "0-1"
    assert cpu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert cpu_list([3]) == "3"


def test_a_kernel_rewritten_by_onednn_or_fused_is_still_the_op_it_computes():
    """On Intel CPUs TensorFlow's oneDNN pass runs MatMul as _MklMatMul: the placement
    evidence must find it (it once made every point `failed` there) and say what ran."""
    from types import SimpleNamespace as Node

    from tfscale.worker.graph import kernel, read

    names = ["_MklMatMul", "_MklNativeMatMul", "_FusedMatMul", "_MklNativeFusedMatMul"]
    assert {kernel(name) for name in names} == {"MatMul"}
    assert kernel("_MklAddN") == "AddN" and kernel("CollectiveReduceV2") == "CollectiveReduceV2"
    assert kernel("_Send") == "_Send" and kernel("BatchMatMulV2") == "BatchMatMulV2"

    cpu = "/job:localhost/replica:0/task:0/device:CPU:0"
    nodes = [
        Node(name="while/body/_1/while/MatMul", op="_MklMatMul", device=cpu, attr={}),
        Node(name="MatMul_outside", op="MatMul", device=cpu, attr={}),  # not in the loop
    ]
    metadata = Node(function_graphs=[Node(partition_graphs=[Node(node=nodes)])])
    executed = read(metadata, ("MatMul",))
    assert executed.kernels == ("CPU:0",)
    assert executed.fields()["kernels"] == ["_MklMatMul"]


def test_a_call_that_instantiates_only_helpers_leaves_the_recorded_loop_evidence():
    """A point that repeats the previous one's shapes reuses its traced loop; its recorded
    call may still instantiate small helper functions. Those are not the timed loop: read()
    says nothing new (the loop's recorded evidence stands) instead of "kernels ran on []"."""
    from types import SimpleNamespace as Node

    from tfscale.worker.graph import read

    cpu = "/job:localhost/replica:0/task:0/device:CPU:0"
    helper = [Node(name="strided_slice", op="StridedSlice", device=cpu, attr={})]
    metadata = Node(function_graphs=[Node(partition_graphs=[Node(node=helper)])] * 2)
    assert read(metadata, ("MatMul",)) is None
