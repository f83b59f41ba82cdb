"""The worker side: everything that imports TensorFlow lives in this package, and runs inside
Ray actors (or a test's own process). The driver imports only `members` (to declare the actor
classes), which imports TensorFlow inside its methods. Nothing here imports Ray's scheduling.

    members   the objects a Ray actor wraps: one group, or one member of a multi-worker group
    devices   TensorFlow's set-up in the process: threads, placement, TF32, logical devices
    gpus      what the GPUs are (model, memory, driver), parsed without TensorFlow
    replicas  where operands live and how a step runs on every replica (strategy or not)
    ops       one module per op: operands, step, numerical check
    measure   the shared protocol: warm-up, executed-graph evidence, timed blocks
    graph     what the executed (partitioned) graph proves: placement, transfers in the loop
    scatter   data: host across nodes (multi-worker groups)
"""

from tfscale.worker.members import CollectiveMember, GroupWorker

__all__ = ["CollectiveMember", "GroupWorker"]
