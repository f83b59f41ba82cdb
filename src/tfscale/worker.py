"""The object a Ray actor wraps: one device group, set up once, measuring point after point.

Worker side: TensorFlow is imported inside the methods (the driver imports this module to
declare the actor, and must stay free of TensorFlow); nothing here knows about scheduling.
"""

from __future__ import annotations

import os
import socket
import sys
import time


class GroupWorker:
    def __init__(self, group: str, kind: str, replicas: int, emulated: bool, threads: int):
        from tfscale.devices import DeviceError, setup

        started = time.perf_counter()
        self.group, self.error, self.devices, self._measurer = group, None, None, None
        try:
            self.devices = setup(kind, replicas, emulated, threads)
        except DeviceError as exc:
            self.error = str(exc)
        self.setup_s = time.perf_counter() - started

    def describe(self) -> dict:
        """What this worker really has: devices, threads, memory, versions."""
        from tfscale.devices import cpu_model, tensorflow_build

        info = {
            "group": self.group,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(),
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")},
            "setup_s": self.setup_s,
            "error": self.error,
        }
        if self.devices is not None:
            info["devices"] = self.devices.describe()
            info.update(tensorflow_build())
        return info

    def run_point(self, point: dict, timing: dict) -> dict:
        """Measure one point; a failure comes back as a status, never as an exception."""
        from tfscale.plan import Point

        _test_stall(point)
        if self.error:
            return {"status": "failed", "reason": self.error}
        if self._measurer is None:
            from tfscale.measure import Measurer

            self._measurer = Measurer(self.devices)
        return self._measurer.run(Point(**point), timing)


def _test_stall(point: dict) -> None:
    """Fault-injection hook for tests: TFSCALE_TEST_STALL="M:SECONDS" makes the point with
    m == M hang for SECONDS, as a stuck kernel would. Unset in normal use."""
    spec = os.environ.get("TFSCALE_TEST_STALL", "")
    if spec:
        rows, _, seconds = spec.partition(":")
        if int(rows) == point["m"]:
            time.sleep(float(seconds))
