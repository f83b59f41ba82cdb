"""Ray actors of a sweep and their lifecycle: one per group (in a one-bundle placement group
pinned to a node) or N per multi-worker group (STRICT_SPREAD), started, described, stopped.

A request the cluster cannot satisfy is detected by a timeout on the placement group, never
waited on forever. Driver side: imports Ray, never TensorFlow (the worker classes import it
inside their methods, in the actor processes).
"""

from __future__ import annotations

import json
import os
import time

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from tfscale.groups import Placement
from tfscale.plan import Capacity
from tfscale.worker import CollectiveMember, GroupWorker

QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}


class _GroupActor(GroupWorker):
    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


RemoteGroup = ray.remote(max_restarts=0, max_concurrency=1)(_GroupActor)


class _MemberActor(CollectiveMember):
    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()


RemoteMember = ray.remote(max_restarts=0, max_concurrency=1)(_MemberActor)


def last_line(exc: Exception) -> str:
    """The worker's own error, from the end of Ray's wrapped traceback."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:500]


def _test_hooks() -> dict[str, str]:
    """Fault-injection variables (TFSCALE_TEST_*) reach the workers; see worker._test_stall."""
    return {k: v for k, v in os.environ.items() if k.startswith("TFSCALE_TEST_")}


class GroupSession:
    """One group's actor and placement group; recreated after a crash or a timeout."""

    def __init__(self, placement: Placement, node_id: str, start_timeout_s: float):
        self.placement, self.node_id, self.start_timeout_s = placement, node_id, start_timeout_s
        self.actor, self.pg, self.info, self.node = None, None, None, None

    def start(self) -> str | None:
        """Start the actor; None when ready, else why the cluster cannot serve the group."""
        p = self.placement
        self.pg = placement_group(
            [p.resources],
            strategy="STRICT_PACK",
            bundle_label_selector=[{"ray.io/node-id": self.node_id}],
        )
        ready, _ = ray.wait([self.pg.ready()], timeout=self.start_timeout_s)
        if not ready:
            self.stop()
            return (
                f"the cluster could not reserve {p.resources} on one node within "
                f"{self.start_timeout_s:g} s (resources busy or missing)"
            )
        options = {
            "num_cpus": p.num_cpus,
            "num_gpus": p.num_gpus,
            "scheduling_strategy": PlacementGroupSchedulingStrategy(self.pg, 0),
            "runtime_env": {
                "env_vars": {**QUIET_TF, **_test_hooks(), "OMP_NUM_THREADS": str(p.threads)}
            },
        }
        started = time.perf_counter()
        self.actor = RemoteGroup.options(**options).remote(
            p.group, p.kind, p.replicas, p.emulated, p.threads
        )
        try:
            self.info, self.node = ray.get(
                [self.actor.describe.remote(), self.actor.node_id.remote()],
                timeout=self.start_timeout_s + 120,
            )
        except (GetTimeoutError, RayActorError, RayTaskError) as exc:
            self.stop()
            return f"the worker did not start: {last_line(exc)}"
        self.info["actor_start_s"] = time.perf_counter() - started
        return None

    def capacity(self) -> Capacity:
        devices = self.info.get("devices") or {}
        return Capacity(devices.get("host_bytes", 0), devices.get("device_bytes"))

    def stop(self) -> None:
        if self.actor is not None:
            ray.kill(self.actor, no_restart=True)
            self.actor = None
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None


class CollectiveSession:
    """The N actors of a multiworker:NxK group, one per node (STRICT_SPREAD), one strategy."""

    def __init__(self, placement: Placement, addresses: dict[str, str], run):
        self.placement, self.addresses, self.run = placement, addresses, run
        self.members, self.pg, self.nodes, self.infos = None, None, [], []

    def start(self) -> str | None:
        p, run = self.placement, self.run
        self.pg = placement_group([p.resources] * p.workers, strategy="STRICT_SPREAD")
        ready, _ = ray.wait([self.pg.ready()], timeout=run.start_timeout_s)
        if not ready:
            self.stop()
            return (
                f"the cluster could not reserve {p.resources} on each of {p.workers} nodes "
                f"within {run.start_timeout_s:g} s (resources busy or missing)"
            )
        env = {**QUIET_TF, **_test_hooks(), "OMP_NUM_THREADS": str(p.threads)}
        self.members = [
            RemoteMember.options(
                num_cpus=p.num_cpus,
                num_gpus=p.num_gpus,
                runtime_env={"env_vars": env},
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, i),
            ).remote(p.group, p.num_gpus, p.threads)
            for i in range(p.workers)
        ]
        try:
            self.nodes = ray.get([m.node_id.remote() for m in self.members], timeout=120)
            ports = ray.get([m.free_port.remote() for m in self.members], timeout=120)
            workers = [
                f"{self.addresses[n]}:{port}" for n, port in zip(self.nodes, ports, strict=True)
            ]
            timeout = min(run.point_timeout_s, 600)
            self.infos = ray.get(
                [
                    m.connect.remote(
                        json.dumps(
                            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
                        ),
                        i,
                        timeout,
                    )
                    for i, m in enumerate(self.members)
                ],
                timeout=run.start_timeout_s + 120,
            )
        except (GetTimeoutError, RayActorError, RayTaskError) as exc:
            self.stop()
            return f"the workers did not start: {last_line(exc)}"
        return None

    def capacity(self) -> Capacity:
        devices = [info.get("devices") or {} for info in self.infos]
        hosts = [d.get("host_bytes", 0) for d in devices]
        gpus = [d.get("device_bytes") for d in devices]
        return Capacity(min(hosts), None if None in gpus else min(gpus))

    def each(self, method: str, *args, timeout: float) -> list:
        return ray.get([getattr(m, method).remote(*args) for m in self.members], timeout=timeout)

    def stop(self) -> None:
        for member in self.members or []:
            ray.kill(member, no_restart=True)
        self.members = None
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None
