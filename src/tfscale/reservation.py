"""Reservations of the cluster's resources that the actors of a sweep run in (driver side).

A placement group is waited for with a timeout (a request the cluster cannot satisfy is never
waited on forever), watching the nodes it needs. A node that measures several groups one
after another reserves once for all of them, so their actors can start together.
"""

from __future__ import annotations

import time

import ray
from ray.util.placement_group import placement_group, remove_placement_group

from tfscale.groups import Placement
from tfscale.nodes import POLL_S, NodeLost


def await_reservation(pg, timeout: float, check) -> bool:
    """Wait for a placement group within `timeout` s, calling `check` (which raises NodeLost)
    every POLL_S; whether it was reserved."""
    deadline, ready = time.monotonic() + timeout, pg.ready()
    while time.monotonic() < deadline:
        if ray.wait([ready], timeout=min(POLL_S, max(deadline - time.monotonic(), 0)))[0]:
            return True
        check()
    return False


class NodeReservation:
    """One placement group for the groups a node measures one after another: every group's
    actor runs in it (with a share of its CPUs), so all of them can start at once, importing
    TensorFlow and setting up their devices before the first measurement begins. Nothing is
    measured while they start, and the measurements still take turns, so isolation holds.
    GPU groups join only while their GPUs fit together; the others start at their turn."""

    def __init__(self, node_id: str, placements: list[Placement], run):
        self.node_id, self.run = node_id, run
        self.cpus = max(p.num_cpus for p in placements)
        self.gpus = max(p.num_gpus for p in placements)
        self.cpus_each = self.cpus / len(placements)
        self.pg = None

    def reserve(self, check) -> bool:
        bundle = {"CPU": float(self.cpus), **({"GPU": float(self.gpus)} if self.gpus else {})}
        self.pg = placement_group(
            [bundle],
            strategy="STRICT_PACK",
            bundle_label_selector=[{"ray.io/node-id": self.node_id}],
        )
        if await_reservation(self.pg, self.run.start_timeout_s, check):
            return True
        self.release()
        return False

    def release(self) -> None:
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None


def start_together(sessions: list) -> NodeReservation | None:
    """Start a node's groups at once in one node reservation (see NodeReservation); each
    session's start() then returns what its start gave. None where there is nothing to gain
    (one group) or the node cannot be reserved whole (the groups then start one by one)."""
    if len(sessions) < 2:
        return None
    first = sessions[0]
    reservation = NodeReservation(first.node_id, [s.placement for s in sessions], first.run)
    try:
        if not reservation.reserve(first.check_alive):
            return None
    except NodeLost:
        return None  # each session finds the death itself when it starts
    gpus, early = 0, []
    for session in sessions:
        session.reservation = reservation
        if gpus + session.placement.num_gpus <= reservation.gpus:
            gpus += session.placement.num_gpus
            early.append(session)
    for session in early:
        session.launch()
    for session in early:
        session.finish()
    return reservation
