"""Device groups: names, and what each needs from a cluster (one function, pure).

A group is `cpu`, `gpu` (one GPU), `mirrored:k` (k GPUs of one node under MirroredStrategy) or
`multiworker:NxK` (N nodes with K GPUs each, K=0 for CPU workers, MultiWorkerMirroredStrategy).
GPU groups may be *emulated*: k logical CPU devices stand in for k GPUs, always labelled so; a
multi-worker group whose nodes share one machine is labelled emulated too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_GROUP = re.compile(
    r"^(cpu|gpu|mirrored:([1-9][0-9]{0,2})|multiworker:([1-9][0-9]{0,2})x([0-9]{1,2}))$"
)


def parse_group(name: str) -> tuple[str, int]:
    """'mirrored:4' -> ('mirrored', 4), 'multiworker:2x4' -> ('multiworker', 8): kind, replicas."""
    kind, workers, per_worker = _parse(name)
    return kind, workers * max(per_worker, 1)


def workers_of(name: str) -> tuple[int, int]:
    """'multiworker:2x4' -> (2, 4): workers (nodes) and GPUs per worker (0: CPU workers)."""
    _, workers, per_worker = _parse(name)
    return workers, per_worker


def _parse(name: str) -> tuple[str, int, int]:
    match = _GROUP.match(str(name))
    if not match:
        raise ValueError(
            f"unknown group {name!r}; expected cpu, gpu, mirrored:K (K GPUs of one node) or "
            "multiworker:NxK (N nodes, K GPUs each; K=0: CPU workers)"
        )
    kind = match.group(1).split(":")[0]
    if kind == "multiworker":
        return kind, int(match.group(3)), int(match.group(4))
    return kind, 1, int(match.group(2) or 1)


@dataclass(frozen=True)
class NodeInfo:
    """One alive Ray node as the driver sees it."""

    node_id: str
    address: str
    cpus: float
    gpus: float
    memory_bytes: float


@dataclass(frozen=True)
class Placement:
    """What a group asks of the cluster, or why the cluster cannot serve it."""

    group: str
    kind: str
    replicas: int
    emulated: bool
    num_cpus: int
    num_gpus: int
    threads: int
    unavailable: str | None = None
    workers: int = 1  # multiworker: one actor with this request on each of `workers` nodes
    all_reduce: str | None = None  # the strategy's all-reduce the group asked for

    @property
    def resources(self) -> dict[str, float]:
        bundle = {"CPU": float(self.num_cpus)}
        if self.num_gpus:
            bundle["GPU"] = float(self.num_gpus)
        return bundle


def place(
    group: str,
    emulate_policy: str,
    nodes: list[NodeInfo],
    emulate: bool | None = None,
    threads: int | None = None,
) -> Placement:
    """Decide emulation and the resource request of one group on these nodes.

    CPU-measuring groups (cpu, emulated GPU groups) ask for every CPU they compute with, by
    default all CPUs of the largest node, so nothing else runs beside them. Real GPU groups ask
    for their GPUs on one node and one CPU to drive them.
    """
    kind, replicas = parse_group(group)
    max_cpus = int(max((node.cpus for node in nodes), default=0))
    max_gpus = int(max((node.gpus for node in nodes), default=0))
    if kind == "multiworker":
        return _place_multiworker(group, nodes, threads)
    if kind == "cpu":
        emulated = False
    elif emulate is not None:
        emulated = emulate
    else:
        emulated = emulate_policy == "always" or (
            emulate_policy == "missing" and max_gpus < replicas
        )

    if kind == "cpu" or emulated:
        want = threads or max_cpus
        placement = Placement(group, kind, replicas, emulated, want, 0, want)
        if want < 1 or want > max_cpus:
            return _unavailable(
                placement, f"needs {want} CPUs on one node; the largest node has {max_cpus}"
            )
        return placement

    placement = Placement(group, kind, replicas, False, 1, replicas, threads or 1)
    if max_gpus < replicas:
        return _unavailable(
            placement,
            f"needs {replicas} GPU{'s' if replicas > 1 else ''} on one node; "
            f"the largest node has {max_gpus} (emulate: {emulate_policy}; "
            "set emulate: missing to measure on labelled stand-in CPU devices)",
        )
    return placement


def _place_multiworker(group: str, nodes: list[NodeInfo], threads: int | None) -> Placement:
    """N actors on N different nodes. Emulated when those nodes share one machine (several
    `ray start` nodes on one host): the network between them is then not a network."""
    workers, per_worker = workers_of(group)
    want = threads or (1 if per_worker else int(min((n.cpus for n in nodes), default=0)) or 1)
    able = [n for n in nodes if n.cpus >= want and n.gpus >= per_worker]
    hosts = {n.address for n in able}
    placement = Placement(
        group,
        "multiworker",
        workers * max(per_worker, 1),
        len(hosts) < workers,
        want,
        per_worker,
        want,
        workers=workers,
    )
    if len(able) < workers:
        need = f"{per_worker} GPUs and " if per_worker else ""
        return _unavailable(
            placement,
            f"needs {workers} nodes with {need}{want} CPUs each; the cluster has {len(able)}",
        )
    return placement


def _unavailable(placement: Placement, reason: str) -> Placement:
    return Placement(**{**placement.__dict__, "unavailable": reason})


# A node's work: phases run one after another; the lanes of a phase run at the same time; a
# lane's groups run one after another, each with one actor.
NodePlan = list[list[list[str]]]


def schedule(
    placements: list[Placement], nodes: list[NodeInfo], work: dict[str, int], isolation: str
) -> tuple[dict[str, NodePlan], dict[str, str]]:
    """Assign each placeable group to one node and order the work on every node.

    Groups go to a node that holds their request, the least loaded (in points) first, so a
    cluster's nodes measure at the same time. `isolation: node`: one measurement per node at a
    time. `isolation: device`: CPU-measuring groups first and alone, then real-GPU groups in
    parallel lanes that together never ask for more GPUs than the node has.
    Returns (node_id -> plan, group -> why no single node can hold it).
    """
    placements = [p for p in placements if p.workers == 1]  # multiworker groups run apart
    load = {node.node_id: 0 for node in nodes}
    assigned: dict[str, list[Placement]] = {node.node_id: [] for node in nodes}
    impossible = {}

    def candidates(placement: Placement) -> list[NodeInfo]:
        return [n for n in nodes if n.cpus >= placement.num_cpus and n.gpus >= placement.num_gpus]

    # the most constrained groups choose first (a GPU group may fit on one node only)
    for placement in sorted(placements, key=lambda p: (len(candidates(p)), -work.get(p.group, 0))):
        fits = candidates(placement)
        if not fits:
            impossible[placement.group] = (
                f"no single node has {placement.num_cpus} CPUs and {placement.num_gpus} GPUs"
            )
            continue
        node = min(fits, key=lambda n: load[n.node_id])
        load[node.node_id] += work.get(placement.group, 0)
        assigned[node.node_id].append(placement)

    order = {p.group: i for i, p in enumerate(placements)}
    plans = {}
    for node in nodes:
        mine = sorted(assigned[node.node_id], key=lambda p: order[p.group])
        if not mine:
            continue
        gpu_groups = [p for p in mine if p.num_gpus] if isolation == "device" else []
        serial = [p.group for p in mine if p not in gpu_groups]
        phases: NodePlan = [[serial]] if serial else []
        if gpu_groups:
            widest = max(p.num_gpus for p in gpu_groups)
            lanes = [[] for _ in range(max(1, int(node.gpus) // widest))]
            for i, placement in enumerate(gpu_groups):
                lanes[i % len(lanes)].append(placement.group)
            phases.append([lane for lane in lanes if lane])
        plans[node.node_id] = phases
    return plans, impossible
