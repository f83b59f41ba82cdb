"""Ray actors of a sweep and their lifecycle: one per group (in a one-bundle placement group
pinned to a node) or N per multi-worker group (STRICT_SPREAD), started, described, stopped.

A request the cluster cannot satisfy is detected by a timeout on the placement group, never
waited on forever. Every wait on the cluster (a reservation, a start, a point) also watches
the nodes it depends on and raises NodeLost within seconds of Ray marking one dead. Driver
side: imports Ray, never TensorFlow (the worker classes import it inside their methods, in the
actor processes).
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
from tfscale.nodes import POLL_S, NodeLost, alive_nodes, node_death
from tfscale.plan import Capacity, Point
from tfscale.reservation import NodeReservation, await_reservation
from tfscale.results import breakdown_fields
from tfscale.timing import sample
from tfscale.worker import CollectiveMember, GroupWorker

QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"}
# Ray starts every worker at nice 15 (so its own daemons are never starved), after its own
# gRPC and I/O threads exist: TensorFlow's threads would then yield the CPUs the actor reserved
# to those threads, to Ray's daemons and to any other process of the node (measured: 2048^3
# up to 1.7x slower, IQRs 2-4x wider). A measuring actor runs at the default priority.
MEASURING = {"RAY_worker_niceness": "0"}


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


class _Session:
    """Actors of one group in one placement group: reserved, started, stopped; recreated after
    a crash or a timeout. Subclasses say how to start them and how to measure one point."""

    def __init__(self, placement: Placement, addresses: dict[str, str], run):
        self.placement, self.addresses, self.run = placement, addresses, run
        self.actors, self.pg, self.nodes, self.infos = None, None, [], []
        self.reservation: NodeReservation | None = None  # shared with the node's other groups

    @property
    def running(self) -> bool:
        return self.actors is not None

    def unusable(self) -> str | None:
        """Why a started worker cannot measure on its node (no TensorFlow, or devices it cannot
        set up): a property of the node, so the group is unavailable there, said once."""
        for node, info in zip(self.nodes, self.infos, strict=False):
            if info.get("error"):
                return f"on node {self.addresses.get(node, node)}: {info['error']}"
        return None

    def lost(self) -> str | None:
        """Why the cluster can no longer run these actors (a node died), or None."""
        raise NotImplementedError

    def check_alive(self) -> None:
        why = self.lost()
        if why:
            self.stop()
            raise NodeLost(why)

    def where(self) -> dict:
        """The node(s) the actors run on, for the rows; nothing before they have started."""
        if not self.nodes:
            return {}
        return {
            "node": ",".join(self.addresses.get(n, n) for n in self.nodes),
            "node_id": ",".join(self.nodes),
        }

    def capacity(self) -> Capacity:
        devices = [info.get("devices") or {} for info in self.infos]
        gpus = [d.get("device_bytes") for d in devices]
        pinned = [d.get("pinned_bytes") for d in devices]
        return Capacity(
            min(d.get("host_bytes", 0) for d in devices),
            None if None in gpus else min(gpus),
            None if None in pinned else min(pinned),
        )

    def _reserve(self, strategy: str, selector: list | None = None) -> str | None:
        """Reserve the group's resources (or take the node reservation it shares); None when
        done, else why not within start_timeout_s. Raises NodeLost as soon as a node it needs
        is marked dead, before or while waiting."""
        self.check_alive()
        if self.reservation is not None:
            self.pg = self.reservation.pg
            return None
        p = self.placement
        self.pg = placement_group(
            [p.resources] * p.workers, strategy=strategy, bundle_label_selector=selector
        )
        if await_reservation(self.pg, self.run.start_timeout_s, self.check_alive):
            return None
        self.stop()
        where = "on one node" if p.workers == 1 else f"on each of {p.workers} nodes"
        return (
            f"the cluster could not reserve {p.resources} {where} within "
            f"{self.run.start_timeout_s:g} s (resources busy or missing)"
        )

    def _spawn(self, remote, *args) -> None:
        p = self.placement
        env = {**QUIET_TF, **MEASURING, **_test_hooks(), "OMP_NUM_THREADS": str(p.threads)}
        cpus = self.reservation.cpus_each if self.reservation else p.num_cpus
        self.actors = [
            remote.options(
                num_cpus=cpus,
                num_gpus=p.num_gpus,
                runtime_env={"env_vars": env},
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, i),
            ).remote(*args)
            for i in range(p.workers)
        ]

    def each(self, method: str, *args, timeout: float) -> list:
        """Call a method on every actor at once (collectives need them all) and wait."""
        return self._wait([getattr(a, method).remote(*args) for a in self.actors], timeout)

    def _wait(self, refs: list, timeout: float) -> list:
        """`ray.get(refs, timeout)` that raises the first error as soon as it is there, and
        NodeLost within POLL_S of a node it depends on being marked dead."""
        deadline, pending = time.monotonic() + timeout, list(refs)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GetTimeoutError(f"not done within {timeout:g} s")
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=min(POLL_S, left))
            ray.get(ready)
            if pending:
                self.check_alive()
        return ray.get(list(refs))

    def stop(self) -> None:
        for actor in self.actors or []:
            ray.kill(actor, no_restart=True)
        self.actors = None
        if self.pg is not None and self.reservation is None:
            remove_placement_group(self.pg)
        self.pg = None


class GroupSession(_Session):
    """One actor on a chosen node: cpu, gpu and mirrored:k groups."""

    def __init__(self, placement: Placement, node_id: str, addresses: dict[str, str], run):
        super().__init__(placement, addresses, run)
        self.node_id = node_id
        self._started: str | NodeLost | None = None  # "" ready, a reason, or a death
        self._launched, self._why = 0.0, None

    def lost(self) -> str | None:
        return node_death([self.node_id])

    def start(self) -> str | None:
        """Start the actor; None when ready, else why the cluster cannot serve the group.
        Raises NodeLost if its node dies meanwhile. After `start_together`, what that start
        gave (once)."""
        if self._started is not None:
            started, self._started = self._started, None
            if isinstance(started, NodeLost):
                raise started
            return started or None
        self.launch()
        return self._finish()

    def launch(self) -> None:
        """Reserve and create the actor, without waiting for it."""
        self._launched = time.perf_counter()
        why = self._reserve("STRICT_PACK", [{"ray.io/node-id": self.node_id}])
        if why:
            self._why = why
            return
        p = self.placement
        self._spawn(RemoteGroup, p.group, p.kind, p.replicas, p.emulated, p.threads, p.all_reduce)
        self._why = None

    def finish(self) -> None:
        """Wait for a launched actor; start() then returns the outcome."""
        try:
            self._started = self._finish() or ""
        except NodeLost as death:
            self._started = death

    def _finish(self) -> str | None:
        if self._why:
            return self._why
        try:
            [info] = self.each("describe", timeout=self.run.start_timeout_s + 120)
        except (GetTimeoutError, RayActorError, RayTaskError) as exc:
            self.check_alive()
            self.stop()
            return f"the worker did not start: {last_line(exc)}"
        self.nodes = [self.node_id]
        started = time.perf_counter() - self._launched
        self.infos = [{**info, "node_id": self.node_id, "actor_start_s": started}]
        why = self.unusable()
        if why:
            self.stop()
        return why

    def describe(self) -> dict:
        return self.infos[0]

    def measure(self, point: Point, timing: dict) -> dict:
        """The worker measures the point itself (it runs the timing protocol)."""
        [result] = self.each(
            "run_point", point.coordinates(), timing, timeout=self.run.point_timeout_s
        )
        return result


class CollectiveSession(_Session):
    """The N actors of a multiworker:NxK group, one per node (STRICT_SPREAD), one strategy."""

    def lost(self) -> str | None:
        """A member's node died, or too few live nodes are left to place the members on."""
        death = node_death(self.nodes)
        if death:
            return death
        p = self.placement
        able = [n for n in alive_nodes(POLL_S) if n.cpus >= p.num_cpus and n.gpus >= p.num_gpus]
        if len(able) < p.workers:
            return f"{len(able)} live node(s) can hold one of its {p.workers} workers"
        return None

    def start(self) -> str | None:
        why = self._reserve("STRICT_SPREAD")
        if why:
            return why
        p, run = self.placement, self.run
        self._spawn(RemoteMember, p.group, p.num_gpus, p.threads, p.all_reduce)
        try:
            self.nodes = self.each("node_id", timeout=120)
            ports = self.each("free_port", timeout=120)
            workers = [
                f"{self.addresses[n]}:{port}" for n, port in zip(self.nodes, ports, strict=True)
            ]
            timeout = min(run.point_timeout_s, 600)
            self.infos = self._wait(
                [
                    member.connect.remote(
                        json.dumps(
                            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
                        ),
                        i,
                        timeout,
                    )
                    for i, member in enumerate(self.actors)
                ],
                timeout=run.start_timeout_s + 120,
            )
        except (GetTimeoutError, RayActorError, RayTaskError) as exc:
            self.check_alive()
            self.stop()
            return f"the workers did not start: {last_line(exc)}"
        why = self.unusable()
        if why:
            self.stop()
        return why

    def describe(self) -> dict:
        return {"members": self.infos, "node_ids": self.nodes}

    def _prepare(
        self, point: Point, timing: dict, deadline: float, variant: str
    ) -> list[dict] | dict:
        """Every member's evidence, or a terminal status. A member that gives up (failed,
        oom) stops them all, to be recreated for the next point: the others may be waiting
        in a collective for it, and a collective that times out poisons the strategy. A
        skipped point is skipped by every member before any collective: nothing to stop."""
        pending = [a.prepare.remote(point.coordinates(), timing, variant) for a in self.actors]
        order = list(pending)
        done: dict = {}
        while pending:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise GetTimeoutError("point_timeout_s")
            ready, pending = ray.wait(pending, timeout=min(POLL_S, left))
            if not ready:
                self.check_alive()
            for ref in ready:
                done[ref] = ray.get(ref)
                if done[ref]["status"] not in ("ok", "skipped"):
                    self.stop()
                    return done[ref]
        skipped = [done[ref] for ref in order if done[ref]["status"] == "skipped"]
        return skipped[0] if skipped else [done[ref] for ref in order]

    def measure(self, point: Point, timing: dict) -> dict:
        """Every member prepares the point; the driver runs the timing protocol, each block on
        all members at once, the slowest member's time counting (an all-reduce ends it). Then
        the same for each breakdown variant the op has (train_step: compute, allreduce)."""
        started = time.perf_counter()
        deadline = started + self.run.point_timeout_s

        def block(inner: int) -> float:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise GetTimeoutError("point_timeout_s")
            return max(self.each("block", inner, timeout=left))

        evidence = self._prepare(point, timing, deadline, "step")
        if isinstance(evidence, dict):
            return evidence
        sampled = sample(block, timing)
        self.each("release", timeout=60)
        breakdown = {}
        for variant in evidence[0]["variants"][1:]:
            extra = self._prepare(point, timing, deadline, variant)
            if isinstance(extra, dict):
                return {**extra, "reason": f"{variant} variant: {extra.get('reason')}"}
            breakdown.update(breakdown_fields(variant, sample(block, timing).samples))
            self.each("release", timeout=60)
        fields = sampled.fields()
        errors = [e["numerics_error"] for e in evidence if e["numerics_error"] is not None]
        first = evidence[0]
        return {
            "status": "ok",
            **fields,
            **breakdown,
            "warnings": sorted({w for e in evidence for w in e.get("warnings", [])})
            + fields["warnings"],
            "devices": sorted(d for e in evidence for d in e["devices"]),
            "output_devices": [d for e in evidence for d in e["output_devices"]],
            "numerics_error": max(errors) if errors else None,
            "precision": first["precision"],
            "all_reduce": first["all_reduce"],
            "device_model": first["device_model"],
            "gpu": first["gpu"],
            "measured_with": [e["measured_with"] for e in evidence],
            "executed": [e["executed"] for e in evidence],
            "warmup_s": max(e["warmup_s"] for e in evidence),
            "point_s": time.perf_counter() - started,
        }
