"""What the executed graph proves (worker side): the partitioned, optimised graphs TensorFlow
really ran for a function, read from its run metadata.

The traced graph says where ops were *asked* to run; Grappler and the placer may move,
fold or prune them. The partition graphs are what executed: one per device, with the
transfers between devices made explicit as _Send/_Recv pairs. From them we read which devices
ran the op's kernels inside the timed loop, how many transfers each loop iteration makes, and
how many iterations may run at once (parallel_iterations of the loop frames).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

TRANSFERS = ("_Send", "_Recv", "_HostSend", "_HostRecv")
# TensorFlow's oneDNN pass rewrites CPU kernels on Intel CPUs (MatMul -> _MklMatMul) and the
# remapper fuses some (MatMul + BiasAdd -> _FusedMatMul): the same op, under another name
_REWRITTEN = ("_MklNative", "_Mkl", "_Fused")


def kernel(op: str) -> str:
    """The op a kernel computes, whatever rewrote it: '_MklMatMul' -> 'MatMul'."""
    for prefix in _REWRITTEN:
        if op.startswith(prefix):
            op = op[len(prefix) :]
    return op.removeprefix("Fused") if op.startswith("FusedMatMul") else op


def short_device(name: str) -> str:
    """'/job:localhost/replica:0/task:0/device:GPU:1' -> 'GPU:1'; other jobs keep the task:
    '/job:worker/replica:0/task:1/device:CPU:0' -> 'worker1/CPU:0'."""
    if not name:
        return "?"
    device = name.rsplit("device:", 1)[-1]
    if "/job:worker" in name and "/task:" in name:
        return f"worker{name.split('/task:')[1].split('/')[0]}/{device}"
    return device


@dataclass(frozen=True)
class Executed:
    """Facts about one executed function."""

    partitions: tuple[str, ...]  # the device of each partition graph
    kernels: tuple[str, ...]  # devices of the watched kernels inside the loop, one per node
    loop_transfers: int  # _Send/_Recv nodes inside the loop, all partitions together
    parallel_iterations: tuple[int, ...]  # of every loop frame that ran
    kernel_ops: tuple[str, ...] = ()  # the watched kernels' names as executed ('_MklMatMul')

    def fields(self) -> dict:
        return {
            "kernels": sorted(set(self.kernel_ops)),
            "partitions": len(self.partitions),
            "loop_transfers": self.loop_transfers,
            "parallel_iterations": sorted(set(self.parallel_iterations)),
        }


def _in_loop(name: str) -> bool:
    return "while/" in name or "/while" in name or name.startswith("_cloop")


def read(run_metadata, kernels: tuple[str, ...]) -> Executed | None:
    """Executed facts from the run metadata of a function's first call; None if the call
    instantiated no new loop (the function ran before: its graphs were recorded then)."""
    partitions, found, transfers, parallel, names = [], [], 0, [], []
    for function in run_metadata.function_graphs:
        if not any(_in_loop(n.name) for g in function.partition_graphs for n in g.node):
            # a helper TensorFlow instantiated beside an already recorded function (seen when
            # a point repeats the previous one's shapes): not the timed loop
            continue
        for graph in function.partition_graphs:
            devices = Counter(node.device for node in graph.node if node.device)
            partitions.append(short_device(devices.most_common(1)[0][0]) if devices else "?")
            for node in graph.node:
                if not _in_loop(node.name):
                    continue
                if kernel(node.op) in kernels:
                    found.append(short_device(node.device))
                    names.append(node.op)
                elif node.op in TRANSFERS:
                    transfers += 1
                elif node.op == "Enter" and "parallel_iterations" in node.attr:
                    parallel.append(node.attr["parallel_iterations"].i)
    if not partitions:
        return None
    return Executed(
        tuple(sorted(partitions)), tuple(sorted(found)), transfers, tuple(parallel), tuple(names)
    )


def call_recorded(fn, *args):
    """Call `fn(*args)` with run metadata recorded; (its result, the metadata)."""
    from tensorflow.python.eager import context

    context.enable_run_metadata()
    try:
        out = fn(*args)
    finally:
        metadata = context.export_run_metadata()
        context.disable_run_metadata()
    return out, metadata
