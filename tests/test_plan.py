"""Points and their arithmetic: flops, bytes, shards, memory, feasibility."""

from __future__ import annotations

from tests.conftest import MINIMAL
from tfscale import config, plan
from tfscale.plan import Capacity, Point


def test_points_cover_groups_dtypes_modes_and_sizes(write_config):
    text = MINIMAL.replace("groups: [cpu]", "groups: [cpu, mirrored:2]")
    text = text.replace("n: 64", "n: 64\n  dtype: [float32, float16]\n  data: [device, host]")
    points = plan.expand(config.load(write_config(text)))
    assert len(points) == 2 * 2 * 2 * 2
    assert len({p.point_id for p in points}) == len(points)
    assert [p.group for p in points[:8]] == ["cpu"] * 8  # group-major: one actor at a time


def test_tied_dimensions_make_square_matmuls(write_config):
    text = MINIMAL.replace("k: 64", "k: m").replace("n: 64", "n: m")
    points = plan.expand(config.load(write_config(text)))
    assert [(p.m, p.k, p.n) for p in points] == [(1, 1, 1), (64, 64, 64)]


def test_flops_and_minimum_bytes():
    point = Point("cpu", m=3, k=5, n=7, dtype="float16", data="device")
    assert point.flops == 2 * 3 * 5 * 7
    assert point.bytes == 2 * (3 * 5 + 5 * 7 + 3 * 7)


def test_point_id_is_stable_and_depends_on_coordinates():
    a = Point("cpu", 1, 2, 3, "float32", "device")
    assert a.point_id == Point("cpu", 1, 2, 3, "float32", "device").point_id
    assert a.point_id != Point("gpu", 1, 2, 3, "float32", "device").point_id


def test_uneven_shards_give_the_remainder_to_the_first_replicas():
    assert Point("mirrored:4", 10, 1, 1, "float32", "device").shard_rows() == [3, 3, 2, 2]
    assert Point("mirrored:2", 1, 1, 1, "float32", "device").shard_rows() == [1, 0]


def test_x_axis_is_the_varying_dimension_else_flops():
    points = [Point("cpu", m, 8, 8, "float32", "device") for m in (1, 2)]
    assert plan.varying_dimension(points) == "m"
    points.append(Point("cpu", 4, 16, 8, "float32", "device"))
    assert plan.varying_dimension(points) == "flops"


def test_point_that_does_not_fit_says_why_with_numbers():
    point = Point("gpu", 2**20, 4096, 4096, "float32", "device")
    reason = plan.fits(point, Capacity(host_bytes=2**40, device_bytes=16 * 2**30), 0.8)
    assert reason and "per device" in reason and "GiB" in reason
    assert plan.fits(point, Capacity(host_bytes=2**40, device_bytes=2**40), 0.8) is None


def test_emulated_replicas_share_host_memory():
    point = Point("mirrored:2", 1024, 1024, 1024, "float32", "device")
    need = plan.memory_needed(point)
    assert need.per_device == 4 * (512 * 1024 + 1024 * 1024 + 2 * 512 * 1024)
    host = Capacity(host_bytes=2 * need.per_device, device_bytes=None)
    assert plan.fits(point, host, 0.99) is not None  # two replicas + nothing to spare
    assert plan.fits(point, host, 1.0) is None


def test_ops_and_scalings_are_sweep_axes_and_an_allreduce_collapses_what_it_lacks(write_config):
    text = MINIMAL.replace("groups: [cpu]", "groups: [cpu, mirrored:2]")
    text = text.replace(
        "n: 64",
        "n: 64\n  op: [matmul, train_step, allreduce]\n  scaling: [strong, weak]\n"
        "  data: [device, host]",
    )
    points = plan.expand(config.load(write_config(text)))
    by = {(p.group, p.op, p.scaling, p.data) for p in points}
    # matmul and train_step: every scaling and data mode; allreduce: device data, one scaling
    assert ("mirrored:2", "train_step", "weak", "host") in by
    allreduce = [p for p in points if p.op == "allreduce"]
    assert {(p.scaling, p.data, p.k) for p in allreduce} == {("strong", "device", 0)}
    assert len(points) == 2 * (2 * 2 * 2 * 2 + 2)
    assert len({p.point_id for p in points}) == len(points)


def test_weak_scaling_gives_every_replica_m_rows_and_counts_global_work():
    strong = Point("mirrored:4", 1000, 64, 32, "float32", "device", "train_step", "strong")
    weak = Point("mirrored:4", 1000, 64, 32, "float32", "device", "train_step", "weak")
    assert strong.shard_rows() == [250] * 4 and weak.shard_rows() == [1000] * 4
    assert strong.global_m == 1000 and weak.global_m == 4000
    assert strong.flops == 6 * 1000 * 64 * 32 and weak.flops == 6 * 4000 * 64 * 32
    assert weak.grad_bytes == 4 * 64 * 32  # dW: the same whatever the batch


def test_an_allreduce_point_counts_its_buffer_not_flops():
    point = Point("mirrored:8", 1024, 0, 256, "bfloat16", "device", "allreduce")
    assert point.flops == 0 and point.bytes == 2 * 1024 * 256 == point.grad_bytes
    assert point.precision == "bf16" and Point("gpu", 1, 1, 1, "tf32", "device").precision == "tf32"


def test_matmul_point_ids_are_those_of_the_first_release():
    """Resuming or comparing a run of the previous release must find its points."""
    assert Point("cpu", 1, 2, 3, "float32", "device").point_id == "f3f6add5d5be"


def test_pinned_memory_of_host_data_on_gpus_is_planned():
    point = Point("gpu", 2**20, 4096, 4096, "float32", "host")
    roomy = Capacity(host_bytes=2**40, device_bytes=2**40, pinned_bytes=2**40)
    assert plan.fits(point, roomy, 0.8) is None
    small = Capacity(host_bytes=2**40, device_bytes=2**40, pinned_bytes=16 * 2**30)
    assert "TF_GPU_HOST_MEM_LIMIT_IN_MB" in plan.fits(point, small, 0.8)
