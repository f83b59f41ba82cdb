"""TensorFlow device set-up inside a worker (worker side).

Runs once per actor, before TensorFlow initialises its devices: thread pools sized to the CPUs
the actor owns (Ray exports OMP_NUM_THREADS=1), soft placement off (so a GPU op can never run
on the CPU quietly), TF32 off (so float32 means fp32: TensorFlow turns TF32 on by default on
Ampere and newer GPUs, rounding matmul inputs to 10 mantissa bits), logical CPU devices for
emulated groups, memory growth on real GPUs.

Host memory stays with TensorFlow's default allocator, the one a user's own program gets:
malloc unless TF_CPU_ALLOCATOR_USE_BFC in the worker's environment opts into TensorFlow's
BFC allocator (measured here, neither is steadily faster: benchmarks/README.md, fidelity).
Rows say which one measured (`measured_with`): with malloc, glibc may hand a freed large output
back to the kernel, so the next iteration faults it in again (a 2048^3 fp32 matmul: ~1,900-
3,300 faults per iteration); benchmarks/fidelity.py measures both beside tfscale.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field

from tfscale.worker.gpus import GpuInfo, complete, nvidia_smi, parse_description

PINNED_DEFAULT_MB = 1 << 16  # TensorFlow's default TF_GPU_HOST_MEM_LIMIT_IN_MB (64 GiB)


class DeviceError(Exception):
    """The devices this group needs are not usable here; the group cannot run on this node."""


@dataclass(frozen=True)
class DeviceSet:
    kind: str
    names: tuple[str, ...]
    emulated: bool
    intra_op_threads: int
    inter_op_threads: int
    host_bytes: int
    device_bytes: int | None  # None: devices share host memory (CPU, emulated)
    model: str = ""  # the GPU model, or the CPU model where the devices are CPUs
    gpus: tuple[GpuInfo, ...] = field(default=())
    pinned_bytes: int | None = None  # TensorFlow's pinned host pool (real GPUs only)

    @property
    def on_gpus(self) -> bool:
        return bool(self.gpus)

    def describe(self) -> dict:
        return asdict(self)


def setup(
    kind: str, replicas: int, emulated: bool, threads: int, initialise: bool = True
) -> DeviceSet:
    """Configure TensorFlow in this process for one group; raise DeviceError if impossible.

    `initialise=False` leaves TensorFlow's context uninitialised (names left empty): a
    multi-worker strategy must configure collectives before anything initialises it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    host = host_memory_bytes()
    _without_plotting()
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
    tf.config.experimental.enable_tensor_float_32_execution(False)
    gpus = tf.config.list_physical_devices("GPU")

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
        return DeviceSet(kind, names, emulated, threads, inter, host, None, cpu_model())

    check_gpu_count(
        len(gpus), replicas, os.environ.get("CUDA_VISIBLE_DEVICES"), tf.test.is_built_with_cuda()
    )
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if not initialise:
        return DeviceSet(kind, (), False, threads, inter, host, None, "", (), pinned_bytes())
    names = tuple(d.name for d in tf.config.list_logical_devices("GPU"))[:replicas]
    return with_gpu_info(
        DeviceSet(kind, names, False, threads, inter, host, None, "", (), pinned_bytes())
    )


def with_gpu_info(devices: DeviceSet) -> DeviceSet:
    """The set completed with its GPUs' model, memory, driver (TensorFlow must be initialised)."""
    import dataclasses

    from tensorflow.python.client import device_lib

    local = [d for d in device_lib.list_local_devices() if d.device_type == "GPU"]
    found = [parse_description(d.physical_device_desc, d.memory_limit) for d in local]
    gpus = tuple(complete([g for g in found if g is not None][: len(devices.names)], nvidia_smi()))
    memory = [g.memory_bytes for g in gpus]
    return dataclasses.replace(
        devices,
        gpus=gpus,
        model=", ".join(sorted({g.name for g in gpus})),
        device_bytes=None if not memory or None in memory else min(memory),
    )


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


def _without_plotting() -> None:
    """Importing TensorFlow imports Keras, whose image gallery imports matplotlib.pyplot where
    it is installed (the driver's plots need it): 0.5-0.7 s of CPU in every worker, on the
    cores the other groups' workers start on. Workers never plot; Keras does without it."""
    if "matplotlib" not in sys.modules:
        sys.modules["matplotlib"] = None  # `import matplotlib` raises ImportError here


def measured_with() -> dict:
    """What the CPUs of this process measure with, read back (rows carry it): the CPUs it may
    run on, TensorFlow's thread pools, the niceness of TensorFlow's threads (Ray starts
    workers at 15 unless told otherwise), and the host allocator really in use."""
    import tensorflow as tf

    onednn = _onednn_enabled()
    try:
        tf.config.experimental.get_memory_info("CPU:0")  # only a BFC allocator keeps stats
        # TensorFlow's BFC where opted into, else oneDNN's (BFC for large blocks)
        opted = os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", "").lower() in ("1", "true")
        allocator = "onednn" if onednn and not opted else "bfc"
    except ValueError:
        allocator = "malloc"
    return {
        "cpus": cpu_list(sorted(os.sched_getaffinity(0))),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "nice": _tensorflow_niceness(),
        "host_allocator": allocator,
        "onednn": onednn,
    }


def _onednn_enabled() -> bool | None:
    """Whether TensorFlow's oneDNN CPU kernels are on (by default where the CPU has AVX-512
    VNNI or newer; TF_ENABLE_ONEDNN_OPTS overrides): they change the kernels and the host
    allocator. None where this TensorFlow cannot say."""
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def cpu_list(cpus: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5' (taskset's notation)."""
    runs: list[list[int]] = []
    for cpu in cpus:
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _tensorflow_niceness() -> int:
    """The highest niceness among TensorFlow's threads (named tf_*), else this thread's."""
    values = []
    for task in os.listdir("/proc/self/task"):
        try:  # a thread may end while the others are read
            with open(f"/proc/self/task/{task}/stat") as handle:
                stat = handle.read()
            name, _, rest = stat[stat.index("(") + 1 :].rpartition(")")
            if name.startswith("tf_"):
                values.append(int(rest.split()[16]))
        except (OSError, ValueError, IndexError):
            continue
    return max(values) if values else os.getpriority(os.PRIO_PROCESS, 0)


def pinned_bytes() -> int:
    """TensorFlow's pool of pinned host memory, which stages every host<->GPU copy."""
    text = os.environ.get("TF_GPU_HOST_MEM_LIMIT_IN_MB", "")
    return (int(text) if text.strip().isdigit() else PINNED_DEFAULT_MB) * 2**20


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


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def precision_settings() -> dict:
    """What decides float32 matmul precision in this process, for environment.json."""
    import tensorflow as tf

    return {
        "tf32_enabled": tf.config.experimental.tensor_float_32_execution_enabled(),
        "NVIDIA_TF32_OVERRIDE": os.environ.get("NVIDIA_TF32_OVERRIDE"),
    }


def tensorflow_build() -> dict:
    """TensorFlow version and the CUDA/cuDNN/NCCL it was built with, for environment.json."""
    import tensorflow as tf

    info = dict(tf.sysconfig.get_build_info())
    return {
        "tensorflow": tf.__version__,
        "cuda": info.get("cuda_version"),
        "cudnn": info.get("cudnn_version"),
        "nccl": nccl_version(),
        "built_with_cuda": tf.test.is_built_with_cuda(),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        **precision_settings(),
    }


def nccl_version() -> str | None:
    """The NCCL that tensorflow[and-cuda] installs (a pip package), if any."""
    from importlib import metadata

    for package in ("nvidia-nccl-cu12", "nvidia-nccl-cu13", "nvidia-nccl-cu11"):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return None
