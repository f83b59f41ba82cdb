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
