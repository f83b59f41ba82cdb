"""TensorFlow device set-up inside a worker (worker side).

Runs once per actor, before TensorFlow initialises its devices: thread pools sized to the CPUs
the actor owns (Ray exports OMP_NUM_THREADS=1), soft placement off (so a GPU op can never run
on the CPU quietly), logical CPU devices for emulated groups, memory growth on real GPUs.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import asdict, dataclass


class DeviceError(Exception):
    """The devices this group needs are not usable here; every point of it fails with this."""


@dataclass(frozen=True)
class DeviceSet:
    kind: str
    names: tuple[str, ...]
    emulated: bool
    intra_op_threads: int
    inter_op_threads: int
    host_bytes: int
    device_bytes: int | None  # None: devices share host memory (CPU, emulated)

    def describe(self) -> dict:
        return asdict(self)


def setup(
    kind: str, replicas: int, emulated: bool, threads: int, initialise: bool = True
) -> DeviceSet:
    """Configure TensorFlow in this process for one group; raise DeviceError if impossible.

    `initialise=False` leaves TensorFlow's context uninitialised (names left empty): a
    multi-worker strategy must configure collectives before anything initialises it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise DeviceError(
            f"TensorFlow is not installed on this node ({exc}); "
            "install tfscale[cpu] or tfscale[gpu] on every worker node"
        ) from None

    inter = max(2, replicas)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    tf.config.set_soft_device_placement(False)
    gpus = tf.config.list_physical_devices("GPU")
    host = host_memory_bytes()

    if kind == "cpu" or emulated:
        if gpus:
            tf.config.set_visible_devices([], "GPU")
        if replicas > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
            )
        names = (
            tuple(d.name for d in tf.config.list_logical_devices("CPU"))[:replicas]
            if initialise
            else ()
        )
        return DeviceSet(kind, names, emulated, threads, inter, host, None)

    check_gpu_count(
        len(gpus), replicas, os.environ.get("CUDA_VISIBLE_DEVICES"), tf.test.is_built_with_cuda()
    )
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    names = (
        tuple(d.name for d in tf.config.list_logical_devices("GPU"))[:replicas]
        if initialise
        else ()
    )
    return DeviceSet(kind, names, False, threads, inter, host, gpu_memory_bytes())


def check_gpu_count(seen: int, wanted: int, visible: str | None, built_with_cuda: bool) -> None:
    """Refuse to go on when Ray gave this worker GPUs that TensorFlow cannot see."""
    if seen >= wanted:
        return
    if not built_with_cuda:
        why = "this TensorFlow build has no CUDA support (install tfscale[gpu] on GPU nodes)"
    elif visible == "":
        why = "CUDA_VISIBLE_DEVICES is empty"
    else:
        why = "the NVIDIA driver or CUDA libraries are missing or do not match this TensorFlow"
    raise DeviceError(
        f"Ray assigned {wanted} GPU{'s' if wanted > 1 else ''} (CUDA_VISIBLE_DEVICES={visible!r}) "
        f"but TensorFlow sees {seen}: {why}; nothing was measured on the CPU instead"
    )


def host_memory_bytes() -> int:
    """Physical memory, or the cgroup limit where one is set lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def parse_gpu_memory(nvidia_smi_csv: str) -> int | None:
    """Smallest `memory.total` (MiB, one line per GPU) in bytes, or None if unreadable."""
    values = [int(line.strip()) for line in nvidia_smi_csv.splitlines() if line.strip().isdigit()]
    return min(values) * 2**20 if values else None


def gpu_memory_bytes() -> int | None:
    """Memory of the GPUs this worker sees; None where nvidia-smi is missing (no plan-time skip)."""
    command = ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        command += ["-i", visible]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_gpu_memory(result.stdout)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def tensorflow_build() -> dict:
    """TensorFlow version and the CUDA/cuDNN it was built with, for environment.json."""
    import tensorflow as tf

    info = dict(tf.sysconfig.get_build_info())
    return {
        "tensorflow": tf.__version__,
        "cuda": info.get("cuda_version"),
        "cudnn": info.get("cudnn_version"),
        "built_with_cuda": tf.test.is_built_with_cuda(),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }
