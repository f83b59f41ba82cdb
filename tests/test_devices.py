"""GPU-only paths, tested on their logic (no GPU here)."""

from __future__ import annotations

import pytest

from tfscale.devices import DeviceError, check_gpu_count, parse_gpu_memory


def test_gpus_that_tensorflow_cannot_see_are_an_error_not_a_cpu_run():
    with pytest.raises(
        DeviceError, match="TensorFlow sees 0.*no CUDA support.*nothing was measured"
    ):
        check_gpu_count(0, 1, "0", built_with_cuda=False)
    with pytest.raises(DeviceError, match="driver"):
        check_gpu_count(1, 2, "0,1", built_with_cuda=True)
    check_gpu_count(4, 2, "0,1,2,3", built_with_cuda=True)


def test_gpu_memory_is_read_from_nvidia_smi_output():
    assert parse_gpu_memory("81559\n81559\n") == 81559 * 2**20
    assert parse_gpu_memory("40960\n81559\n") == 40960 * 2**20
    assert parse_gpu_memory("[N/A]\n") is None
