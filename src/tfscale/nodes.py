"""The cluster's nodes as the driver sees them: which are alive, and why one died.

Ray's GCS marks a node dead when its raylet stops answering health checks (about 15 s after
a crash with Ray's defaults) or says goodbye; `ray.nodes()` then has `Alive: false` and a
`DeathReasonMessage`. Sessions poll this while they wait on a node, so a node that dies is
noticed within seconds, not after a reservation or point timeout. The table is read at most
once per `POLL_S` for all the driver's threads together.
"""

from __future__ import annotations

import threading
import time

import ray

from tfscale.groups import NodeInfo

POLL_S = 1.0

_lock = threading.Lock()
_cache: tuple[float, list[dict]] = (float("-inf"), [])


def node_table(max_age_s: float = POLL_S) -> list[dict]:
    """`ray.nodes()`, read again when the last read is older than max_age_s."""
    global _cache
    with _lock:
        read_at, table = _cache
        if time.monotonic() - read_at >= max_age_s:
            table = ray.nodes()
            _cache = (time.monotonic(), table)
        return table


def alive_nodes(max_age_s: float = 0.0) -> list[NodeInfo]:
    nodes = []
    for node in node_table(max_age_s):
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


def node_death(node_ids: list[str]) -> str | None:
    """Why the first of these nodes that is no longer alive died; None while all are alive."""
    table = {node["NodeID"]: node for node in node_table()}
    for node_id in node_ids:
        node = table.get(node_id)
        if node is None:
            return f"node {node_id[:8]} left the cluster"
        if not node.get("Alive"):
            why = (node.get("DeathReasonMessage") or "no reason given").rstrip(". ")
            return f"node {node.get('NodeManagerAddress', '?')} ({node_id[:8]}) died: {why}"
    return None


class NodeLost(Exception):
    """A node a group runs on died: its remaining points must move, or wait for a resume."""
