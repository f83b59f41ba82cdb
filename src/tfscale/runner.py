"""Ray side of the driver: connect, place groups, one actor per group, stream rows to the store.

Groups the cluster cannot serve are written as `unavailable` rows before any measurement.
Each available group gets one long-lived actor (TensorFlow imported and devices set up once),
inside a one-bundle placement group, so a request the cluster cannot satisfy is detected with
a timeout instead of waiting forever. Groups run one after another, so no two measurements
share a node at the same time. Each row is stored before the next point is asked for.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

# Ray reads its auth mode when imported: token authentication on unless the user says otherwise
os.environ.setdefault("RAY_AUTH_MODE", "token")

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from tfscale.actors import CollectiveSession, GroupSession, last_line
from tfscale.config import Experiment
from tfscale.errors import TfscaleError
from tfscale.groups import NodeInfo, NodePlan, Placement, place, schedule
from tfscale.plan import Point, fits
from tfscale.progress import Progress
from tfscale.results import now, ok_row, terminal_row
from tfscale.store import RunStore


def connect(address: str | None = None) -> dict:
    """Join a cluster (`address`, RAY_ADDRESS) or start a local one on 127.0.0.1 with token auth."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    started = time.perf_counter()
    if not ray.is_initialized():
        common = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if address:
                ray.init(address=address, **common)
            else:
                # "local": always a new private instance, never a cluster found through
                # ray_current_cluster (a stale file or someone else's `ray start`); the
                # dashboard listens on loopback only; rows carry no large objects
                ray.init(
                    address="local",
                    dashboard_host="127.0.0.1",
                    object_store_memory=256 * 2**20,
                    **common,
                )
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TfscaleError(f"could not start or reach {where}: {first}") from None
    return {"address": address or "local", "connect_s": time.perf_counter() - started}


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def alive_nodes() -> list[NodeInfo]:
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = node.get("Resources", {})
        nodes.append(
            NodeInfo(
                node_id=node["NodeID"],
                address=node.get("NodeManagerAddress", "?"),
                cpus=resources.get("CPU", 0.0),
                gpus=resources.get("GPU", 0.0),
                memory_bytes=resources.get("memory", 0.0),
            )
        )
    return nodes


@dataclass
class Outcome:
    rows: int = 0
    unavailable: list[str] = field(default_factory=list)
    interrupted: bool = False
    workers: dict[str, dict] = field(default_factory=dict)


class Runner:
    def __init__(self, experiment: Experiment, store: RunStore, progress: Progress, stop_requested):
        self.experiment, self.store, self.progress = experiment, store, progress
        self.stop_requested = stop_requested
        self.timing = experiment.timing.model_dump()
        self.outcome = Outcome()
        self._addresses: dict[str, str] = {}
        self._lock = threading.Lock()  # rows come from one thread per node

    def _write(self, point: Point, row: dict) -> None:
        with self._lock:
            self.store.append(row)
            self.outcome.rows += 1
            self.progress.finish_point(point, row)

    def run(self, points: list[Point]) -> Outcome:
        nodes = alive_nodes()
        self._addresses = {node.node_id: node.address for node in nodes}
        by_group = {
            entry.group: [p for p in points if p.group == entry.group]
            for entry in self.experiment.groups
        }
        placements = []
        for entry in self.experiment.groups:
            placement = place(
                entry.group, self.experiment.emulate, nodes, entry.emulate, entry.threads
            )
            placement = dataclasses.replace(placement, all_reduce=entry.all_reduce)
            if placement.unavailable:
                self._all_unavailable(placement, by_group[entry.group], placement.unavailable)
            elif by_group[entry.group]:
                placements.append(placement)
        work = {group: len(mine) for group, mine in by_group.items()}
        plans, impossible = schedule(placements, nodes, work, self.experiment.run.isolation)
        for placement in placements:
            if placement.group in impossible:
                self._all_unavailable(
                    placement, by_group[placement.group], impossible[placement.group]
                )
        lookup = {p.group: p for p in placements}
        threads = [
            threading.Thread(
                target=self._run_node, args=(node_id, plan, lookup, by_group), daemon=True
            )
            for node_id, plan in plans.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():  # join in slices so the main thread still takes signals
                thread.join(0.2)
        # multi-worker groups span several nodes: they run alone, after the per-node work
        for placement in placements:
            if placement.workers > 1 and not self.stop_requested():
                self._run_collective(placement, by_group[placement.group])
        self.outcome.interrupted = bool(self.stop_requested()) and self.outcome.rows < len(points)
        return self.outcome

    def _all_unavailable(self, placement: Placement, points: list[Point], reason: str) -> None:
        if not points:
            return
        self.outcome.unavailable.append(f"{placement.group}: {reason}")
        self.progress.message(f"{placement.group}: unavailable: {reason}")
        for point in points:
            self._write(point, self._unavailable(point, placement, reason))

    def _run_node(self, node_id: str, plan: NodePlan, lookup: dict, by_group: dict) -> None:
        for phase in plan:
            lanes = [
                threading.Thread(
                    target=self._run_lane, args=(node_id, lane, lookup, by_group), daemon=True
                )
                for lane in phase
            ]
            for lane in lanes:
                lane.start()
            for lane in lanes:
                lane.join()

    def _run_lane(self, node_id: str, lane: list[str], lookup: dict, by_group: dict) -> None:
        for group in lane:
            if self.stop_requested():
                return
            self._run_group(lookup[group], node_id, by_group[group])

    def _unavailable(self, point: Point, placement: Placement, reason: str) -> dict:
        return terminal_row(point, "unavailable", reason, emulated=placement.emulated, attempt=0)

    def _run_group(self, placement: Placement, node_id: str, points: list[Point]) -> None:
        session = GroupSession(placement, node_id, self._addresses, self.experiment.run)
        self._run_session(session, points)

    def _run_collective(self, placement: Placement, points: list[Point]) -> None:
        self._run_session(
            CollectiveSession(placement, self._addresses, self.experiment.run), points
        )

    def _run_session(self, session, points: list[Point]) -> None:
        why = session.start()
        if why:
            self._all_unavailable(session.placement, points, why)
            return
        self.outcome.workers[session.placement.group] = session.describe()
        try:
            for point in points:
                if self.stop_requested():
                    return
                self.progress.start_point(point)
                self._write(point, self._measure(session, point))
        finally:
            session.stop()

    def _measure(self, session, point: Point) -> dict:
        """One point, with the faults a cluster has: a dead worker is recreated and the point
        retried (then failed), a point past point_timeout_s is a timeout, a bug is a failure."""
        run, placement = self.experiment.run, session.placement
        reason = None
        for attempt in range(1, run.max_attempts + 1):
            if not session.running:
                why = session.start()
                if why:
                    return self._unavailable(point, placement, why)
            context = {
                "emulated": placement.emulated,
                "attempt": attempt,
                **session.where(),
                "threads": placement.threads,
            }
            if session.error:  # the devices could not be set up: say why
                return terminal_row(point, "failed", session.error, **context)
            too_big = fits(point, session.capacity(), run.memory_fraction)
            if too_big:
                return terminal_row(point, "skipped", too_big, **context)
            started_at, sent = now(), time.perf_counter()
            try:
                result = session.measure(point, self.timing)
            except GetTimeoutError:
                session.stop()
                why = f"ran over point_timeout_s={run.point_timeout_s:g}"
                return terminal_row(point, "timeout", why, **context)
            except RayTaskError as exc:  # a bug, not a fault: say what, do not retry
                session.stop()
                return terminal_row(point, "failed", last_line(exc), **context)
            except RayActorError as exc:  # in a collective, the others would wait: stop all
                session.stop()
                reason = f"worker died (attempt {attempt}): {str(exc).splitlines()[0][:300]}"
                continue
            status = result.pop("status")
            if status != "ok":
                return terminal_row(point, status, result.pop("reason"), **context)
            samples = result.pop("samples")
            # what the sweep spent on this point beyond the workers' own time: Ray, the driver
            overhead_s = time.perf_counter() - sent - result["point_s"]
            return ok_row(
                point,
                samples,
                started_at=started_at,
                finished_at=now(),
                overhead_s=overhead_s,
                **context,
                **result,
            )
        # Ray names the memory monitor or the OOM killer when that is what killed the worker
        status = "oom" if reason and "memory" in reason.lower() else "failed"
        return terminal_row(point, status, reason or "worker died", **context)


def driver_environment() -> dict:
    """What the driver knows about where it runs; workers add theirs per group."""
    import platform

    import numpy

    from tfscale import __version__

    return {
        "tfscale": __version__,
        "python": platform.python_version(),
        "ray": ray.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "driver_host": socket.gethostname(),
        "nodes": [node.__dict__ for node in alive_nodes()] if ray.is_initialized() else [],
    }
