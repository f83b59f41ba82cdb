"""Ray side of the driver: connect, place groups, one actor per group, stream rows to the store.

Groups the cluster cannot serve are written as `unavailable` rows before any measurement.
Each available group gets one long-lived actor (TensorFlow imported and devices set up once),
inside a one-bundle placement group, so a request the cluster cannot satisfy is detected with
a timeout instead of waiting forever. Groups run one after another, so no two measurements
share a node at the same time. Each row is stored before the next point is asked for.
"""

from __future__ import annotations

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
from tfscale.timing import sample


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
                # the dashboard listens on loopback only; rows carry no large objects
                ray.init(dashboard_host="127.0.0.1", object_store_memory=256 * 2**20, **common)
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
        run = self.experiment.run
        session = GroupSession(placement, node_id, run.start_timeout_s)
        why = session.start()
        if why:
            self._all_unavailable(placement, points, why)
            return
        self.outcome.workers[placement.group] = {**session.info, "node_id": session.node}
        try:
            for point in points:
                if self.stop_requested():
                    return
                self.progress.start_point(point)
                self._write(point, self._measure(session, point))
        finally:
            session.stop()

    def _run_collective(self, placement: Placement, points: list[Point]) -> None:
        session = CollectiveSession(placement, self._addresses, self.experiment.run)
        why = session.start()
        if why:
            self._all_unavailable(placement, points, why)
            return
        self.outcome.workers[placement.group] = {
            "members": session.infos,
            "node_ids": session.nodes,
        }
        try:
            for point in points:
                if self.stop_requested():
                    return
                self.progress.start_point(point)
                self._write(point, self._measure_collective(session, point))
        finally:
            session.stop()

    def _measure_collective(self, session: CollectiveSession, point: Point) -> dict:
        """Every member prepares the point; the driver runs the timing protocol, each block on
        all members at once, the slowest member's time counting (the all-reduce ends it)."""
        run, placement = self.experiment.run, session.placement
        reason = None
        for attempt in range(1, run.max_attempts + 1):
            if session.members is None:
                why = session.start()
                if why:
                    return self._unavailable(point, placement, why)
            context = {
                "emulated": placement.emulated,
                "attempt": attempt,
                "node": ",".join(self._addresses.get(n, n) for n in session.nodes),
                "node_id": ",".join(session.nodes),
                "threads": placement.threads,
            }
            too_big = fits(point, session.capacity(), run.memory_fraction)
            if too_big:
                return terminal_row(point, "skipped", too_big, **context)
            started_at, sent = now(), time.perf_counter()
            deadline = sent + run.point_timeout_s

            def block(inner: int, deadline: float = deadline) -> float:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise GetTimeoutError("point_timeout_s")
                return max(session.each("block", inner, timeout=left))

            try:
                evidence = session.each(
                    "prepare", point.coordinates(), self.timing, timeout=run.point_timeout_s
                )
                bad = next((e for e in evidence if e["status"] != "ok"), None)
                if bad:
                    session.each("release", timeout=60)
                    return terminal_row(point, bad["status"], bad["reason"], **context)
                sampled = sample(block, self.timing)
                session.each("release", timeout=60)
            except GetTimeoutError:
                session.stop()
                return terminal_row(
                    point, "timeout", f"ran over point_timeout_s={run.point_timeout_s:g}", **context
                )
            except RayTaskError as exc:
                session.stop()
                return terminal_row(point, "failed", last_line(exc), **context)
            except RayActorError as exc:
                session.stop()  # the others would wait in a collective: recreate them all
                reason = f"a worker died (attempt {attempt}): {str(exc).splitlines()[0][:300]}"
                continue
            return ok_row(
                point,
                sampled.samples,
                started_at=started_at,
                finished_at=now(),
                timing="graph_loop",
                inner=sampled.inner,
                call_s=sampled.call_s,
                loop_scaling=sampled.loop_scaling,
                calibration_s=sampled.calibration_s,
                timed_s=sampled.timed_s,
                warnings=sampled.warnings,
                devices=sorted(d for e in evidence for d in e["devices"]),
                output_devices=[d for e in evidence for d in e["output_devices"]],
                numerics_error=max(e["numerics_error"] for e in evidence),
                warmup_s=max(e["warmup_s"] for e in evidence),
                point_s=time.perf_counter() - sent,
                overhead_s=None,
                **context,
            )
        return terminal_row(point, "failed", reason or "a worker died", **context)

    def _measure(self, session: GroupSession, point: Point) -> dict:
        run = self.experiment.run
        placement = session.placement
        reason = None
        for attempt in range(1, run.max_attempts + 1):
            if session.actor is None:
                why = session.start()
                if why:
                    return self._unavailable(point, placement, why)
            context = {
                "emulated": placement.emulated,
                "attempt": attempt,
                "node": self._addresses.get(session.node, session.node),
                "node_id": session.node,
                "threads": placement.threads,
            }
            if session.info.get("error"):  # the devices could not be set up: say why
                return terminal_row(point, "failed", session.info["error"], **context)
            too_big = fits(point, session.capacity(), run.memory_fraction)
            if too_big:
                return terminal_row(point, "skipped", too_big, **context)
            started_at, sent = now(), time.perf_counter()
            ref = session.actor.run_point.remote(point.coordinates(), self.timing)
            try:
                result = ray.get(ref, timeout=run.point_timeout_s)
            except GetTimeoutError:
                session.stop()
                return terminal_row(
                    point, "timeout", f"ran over point_timeout_s={run.point_timeout_s:g}", **context
                )
            except RayTaskError as exc:  # a bug, not a fault: say what, do not retry
                return terminal_row(point, "failed", last_line(exc), **context)
            except RayActorError as exc:
                session.stop()
                reason = f"worker died (attempt {attempt}): {str(exc).splitlines()[0][:300]}"
                continue
            status = result.pop("status")
            if status != "ok":
                return terminal_row(point, status, result.pop("reason"), **context)
            samples = result.pop("samples")
            # what the sweep spent on this point beyond the worker's own time: Ray, the driver
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
