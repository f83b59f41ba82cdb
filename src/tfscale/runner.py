"""Ray side of the driver: connect, place groups, one actor per group, stream rows to the store.

Groups the cluster cannot serve are written as `unavailable` rows before any measurement.
Each available group gets one long-lived actor (TensorFlow imported and devices set up once),
inside a one-bundle placement group, so a request the cluster cannot satisfy is detected with
a timeout instead of waiting forever. Groups on different nodes run at the same time; on one
node, one after another. Each row is stored before the next point is asked for.

A node that dies takes no row with it: its groups' remaining points (the one in flight too)
move to other live nodes that can serve them, in a new round of scheduling once the current
one is done; where no live node can, they are left for `--resume` (Outcome.lost) instead of
being written off point by point. A reservation that fails decides the rest of its group.
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
from tfscale.groups import Placement, place, schedule
from tfscale.nodes import NodeLost, alive_nodes
from tfscale.plan import Point, fits
from tfscale.progress import Progress
from tfscale.reservation import start_together
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
                # ray_current_cluster (a stale file or someone else's `ray start`). It exists
                # to measure on this machine, so nothing in it competes for the CPUs without
                # need: no dashboard UI (on 2 cores its start takes ~3.5 s and it keeps polling;
                # `ray start --head` and `--address auto` give one), no workers started ahead
                # (measuring actors have their own runtime env, so they never use them).
                # Rows carry no large objects.
                ray.init(
                    address="local",
                    include_dashboard=False,
                    object_store_memory=256 * 2**20,
                    _system_config={"prestart_worker_first_driver": False},
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


class GroupUnavailable(Exception):
    """The cluster could not reserve a group's resources again: the rest of it is unavailable."""


@dataclass
class Outcome:
    lost: list[str] = field(default_factory=list)  # groups left for --resume, and why
    workers: dict[str, dict] = field(default_factory=dict)


class Runner:
    def __init__(self, experiment: Experiment, store: RunStore, progress: Progress, stop_requested):
        self.experiment, self.store, self.progress = experiment, store, progress
        self.stop_requested = stop_requested
        self.timing = experiment.timing.model_dump()
        self.outcome = Outcome()
        self._addresses: dict[str, str] = {}
        self._moved: dict[str, list[Point]] = {}  # group -> points a dead node left behind
        self._deaths: dict[str, str] = {}  # group -> the node death that moved it
        self._lock = threading.Lock()  # rows come from one thread per node

    def _write(self, point: Point, row: dict) -> None:
        with self._lock:
            self.store.append(row)
            self.progress.finish_point(point, row)

    def run(self, points: list[Point]) -> Outcome:
        nodes = alive_nodes()
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
        todo = {p.group: by_group[p.group] for p in placements}
        first = True
        while not self.stop_requested():
            todo = self._round(
                [p for p in placements if p.workers == 1 and todo[p.group]], todo, nodes, first
            )
            if not any(todo[p.group] for p in placements if p.workers == 1):
                break
            nodes, first = alive_nodes(), False
        # multi-worker groups span several nodes: they run alone, after the per-node work
        for placement in placements:
            left = todo.get(placement.group, []) if placement.workers > 1 else []
            while left and not self.stop_requested():
                left = self._run_collective(placement, left)
        return self.outcome

    def _round(self, placements: list[Placement], todo: dict, nodes, first: bool) -> dict:
        """Schedule the per-node groups that have points left on these nodes and run them;
        the points that nodes dying left behind. In the first round a group no node can hold
        is unavailable; later, one that lost its node and has nowhere to go is left."""
        self._addresses.update({node.node_id: node.address for node in nodes})
        work = {p.group: len(todo[p.group]) for p in placements}
        plans, impossible = schedule(placements, nodes, work, self.experiment.run.isolation)
        for group, reason in impossible.items():
            placement = next(p for p in placements if p.group == group)
            if first:
                self._all_unavailable(placement, todo[group], reason)
            else:
                left = reason if nodes else "no live node is left"
                self._lose(group, todo[group], f"no live node can take its points ({left})")
        lookup = {p.group: p for p in placements}
        self._moved = {}
        threads = [
            threading.Thread(target=self._run_node, args=(node_id, plan, lookup, todo), daemon=True)
            for node_id, plan in plans.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():  # join in slices so the main thread still takes signals
                thread.join(0.2)
        return {**todo, **{p.group: [] for p in placements}, **self._moved}

    def _all_unavailable(
        self, placement: Placement, points: list[Point], reason: str, **where
    ) -> None:
        """Every point of the group `unavailable`, said once; `where`: the node(s) tried."""
        if not points:
            return
        self.progress.message(f"{placement.group}: unavailable: {reason}")
        for point in points:
            row = terminal_row(
                point, "unavailable", reason, emulated=placement.emulated, attempt=0, **where
            )
            self._write(point, row)

    def _move(self, group: str, points: list[Point], death: NodeLost) -> list[Point]:
        """A node died under the group: its unwritten points wait for another node."""
        self._deaths[group] = str(death)
        self.progress.message(f"{group}: {death}; {len(points)} point(s) left to place elsewhere")
        return points

    def _lose(self, group: str, points: list[Point], reason: str) -> None:
        """No live node can serve the rest of a group: no rows, the run stays resumable."""
        why = "; ".join(filter(None, [self._deaths.get(group), reason]))
        self.outcome.lost.append(f"{group}: {why}")
        self.progress.message(f"{group}: {why}; {len(points)} point(s) left for --resume")

    def _run_node(self, node_id: str, plan, lookup: dict, todo: dict) -> None:
        for phase in plan:
            lanes = [
                threading.Thread(
                    target=self._run_lane, args=(node_id, lane, lookup, todo), daemon=True
                )
                for lane in phase
            ]
            for lane in lanes:
                lane.start()
            for lane in lanes:
                lane.join()

    def _run_lane(self, node_id: str, lane: list[str], lookup: dict, todo: dict) -> None:
        """The node's groups one after another, their actors started together first."""
        run = self.experiment.run
        sessions = [GroupSession(lookup[g], node_id, self._addresses, run) for g in lane]
        reservation = start_together(sessions) if not self.stop_requested() else None
        try:
            for group, session in zip(lane, sessions, strict=True):
                if self.stop_requested():
                    session.stop()
                    continue
                left = self._run_session(session, todo[group])
                if left:
                    with self._lock:
                        self._moved[group] = left
        finally:
            for session in sessions:
                session.stop()
            if reservation is not None:
                reservation.release()

    def _run_collective(self, placement: Placement, points: list[Point]) -> list[Point]:
        """One try of a multi-worker group; the points left if a member's node died and the
        live nodes can still hold the group (a new try), none once it is done or lost."""
        nodes = alive_nodes()
        self._addresses.update({node.node_id: node.address for node in nodes})
        if placement.group in self._deaths:
            again = place(placement.group, self.experiment.emulate, nodes, None, placement.threads)
            if again.unavailable:
                why = f"the live nodes cannot take its points ({again.unavailable})"
                self._lose(placement.group, points, why)
                return []
        session = CollectiveSession(placement, self._addresses, self.experiment.run)
        return self._run_session(session, points)

    def _run_session(self, session, points: list[Point]) -> list[Point]:
        """Measure the points in order; the ones left unwritten because a node died."""
        group = session.placement.group
        try:
            why = session.start()
        except NodeLost as death:
            return self._move(group, points, death)
        if why:
            self._all_unavailable(session.placement, points, why, **session.where())
            return []
        self.outcome.workers[group] = session.describe()
        if group in self._deaths:
            self.progress.message(f"{group}: continues on node {session.where()['node']}")
        try:
            for i, point in enumerate(points):
                if self.stop_requested():
                    return []
                self.progress.start_point(point)
                try:
                    row = self._measure(session, point)
                except NodeLost as death:
                    return self._move(group, points[i:], death)
                except GroupUnavailable as why:  # decided once for the rest of the group
                    self._all_unavailable(
                        session.placement, points[i:], str(why), **session.where()
                    )
                    return []
                self._write(point, row)
        finally:
            session.stop()
        return []

    def _measure(self, session, point: Point) -> dict:
        """One point, with the faults a cluster has: a dead worker is recreated and the point
        retried (then failed), a point past point_timeout_s is a timeout, a bug is a failure.
        Raises NodeLost when the node died, GroupUnavailable when a restart cannot reserve."""
        run, placement = self.experiment.run, session.placement
        reason = None
        for attempt in range(1, run.max_attempts + 1):
            if not session.running:
                why = session.start()
                if why:
                    raise GroupUnavailable(why)
            context = {
                "emulated": placement.emulated,
                "attempt": attempt,
                **session.where(),
                "threads": placement.threads,
            }
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
                # start again now: a dead node is noticed here, before any row is written
                why = session.start()
                if why:
                    raise GroupUnavailable(why) from None
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
