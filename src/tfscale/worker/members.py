"""The object a Ray actor wraps: one device group, set up once, measuring point after point.

Worker side: TensorFlow is imported inside the methods (the driver imports this module to
declare the actor, and must stay free of TensorFlow); nothing here knows about scheduling.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from datetime import datetime, timezone


class GroupWorker:
    def __init__(
        self,
        group: str,
        kind: str,
        replicas: int,
        emulated: bool,
        threads: int,
        all_reduce: str | None = None,
    ):
        from tfscale.worker.devices import DeviceError, setup

        started = time.perf_counter()
        self.group, self.error, self.devices, self._measurer = group, None, None, None
        self.all_reduce = all_reduce
        try:
            self.devices = setup(kind, replicas, emulated, threads)
        except DeviceError as exc:
            self.error = str(exc)
        self.setup_s = time.perf_counter() - started

    def describe(self) -> dict:
        return describe(self.group, self.setup_s, self.error, self.devices)

    def run_point(self, point: dict, timing: dict) -> dict:
        """Measure one point; a failure comes back as a status, never as an exception."""
        from tfscale.plan import Point

        _test_stall(point)
        if self.error:
            return {"status": "failed", "reason": self.error}
        if self._measurer is None:
            from tfscale.worker.measure import Measurer

            self._measurer = Measurer(self.devices, all_reduce=self.all_reduce)
        return self._measurer.run(Point(**point), timing)


class CollectiveMember:
    """One worker of a multiworker:NxK group: its share of a MultiWorkerMirroredStrategy.

    The driver asks every member for a port, builds TF_CONFIG from the nodes' addresses, then
    calls each method on all members at once (collectives need every worker)."""

    def __init__(
        self, group: str, gpus_per_worker: int, threads: int, all_reduce: str | None = None
    ):
        self.group, self.gpus, self.threads = group, gpus_per_worker, threads
        self.all_reduce = all_reduce
        self.error, self.devices, self._measurer, self.index = None, None, None, 0

    def free_port(self) -> int:
        import socket

        with socket.socket() as probe:
            probe.bind(("", 0))
            return probe.getsockname()[1]

    def connect(self, tf_config: str, index: int, timeout_s: float) -> dict:
        """Set up devices, join the strategy (waits for every worker), describe this member.

        The strategy's collectives get no timeout: TensorFlow implements one with a thread that
        sleeps for all of it, per collective, which inside a timed loop costs time and leaves
        threads behind. Set-up collectives (lining the workers up) pass `timeout_s` themselves,
        and the driver's point_timeout_s bounds a point that hangs."""
        import dataclasses
        import json

        from tfscale.worker.devices import DeviceError, setup, with_gpu_info

        started = time.perf_counter()
        self.index = index
        os.environ["TF_CONFIG"] = tf_config
        try:
            kind, replicas = ("cpu", 1) if self.gpus == 0 else ("mirrored", self.gpus)
            devices = setup(kind, replicas, False, self.threads, initialise=False)
        except DeviceError as exc:
            self.error = str(exc)
            return describe(self.group, time.perf_counter() - started, self.error, None)
        import tensorflow as tf

        from tfscale.worker.measure import Measurer

        implementation = {
            "ring": tf.distribute.experimental.CommunicationImplementation.RING,
            "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
        }.get(
            self.all_reduce or "auto", tf.distribute.experimental.CommunicationImplementation.AUTO
        )
        options = tf.distribute.experimental.CommunicationOptions(implementation=implementation)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        local = tuple(strategy.extended.worker_devices)
        self.devices = dataclasses.replace(devices, kind="multiworker", names=local)
        if self.gpus:
            self.devices = with_gpu_info(self.devices)
        total = len(json.loads(tf_config)["cluster"]["worker"]) * len(local)
        self._measurer = Measurer(
            self.devices, strategy, index * len(local), total, timeout_s=timeout_s
        )
        return describe(self.group, time.perf_counter() - started, None, self.devices)

    def prepare(self, point: dict, timing: dict, variant: str = "step") -> dict:
        from tfscale.plan import Point

        _test_stall(point)
        if self.error:
            return {"status": "failed", "reason": self.error}
        if os.environ.get("TFSCALE_TEST_FAIL") == f"{point['m']}:{self.index}":
            return {"status": "failed", "reason": f"injected failure of worker {self.index}"}
        return self._measurer.prepare(Point(**point), timing, variant)

    def block(self, inner: int) -> float:
        return self._measurer.block(inner)

    def release(self) -> None:
        self._measurer.release()


def describe(group: str, setup_s: float, error: str | None, devices) -> dict:
    """What a worker really has: devices, threads, memory, versions (environment.json)."""
    from tfscale.worker.devices import cpu_model, tensorflow_build

    info = {
        "group": group,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")},
        "setup_s": setup_s,
        "ready_at": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "error": error,
    }
    if devices is not None:
        info["devices"] = devices.describe()
        info.update(tensorflow_build())
    return info


def _test_stall(point: dict) -> None:
    """Fault-injection hook for tests: TFSCALE_TEST_STALL="M:SECONDS" makes the point with
    m == M hang for SECONDS, as a stuck kernel would. Unset in normal use."""
    spec = os.environ.get("TFSCALE_TEST_STALL", "")
    if spec:
        rows, _, seconds = spec.partition(":")
        if int(rows) == point["m"]:
            time.sleep(float(seconds))
