"""One module per op (worker side). The arithmetic the driver writes into every row (flops,
bytes, grad_bytes, memory) is in plan.py, where the driver can read it without TensorFlow."""

from tfscale.worker.ops.allreduce import AllReduce
from tfscale.worker.ops.base import Op
from tfscale.worker.ops.matmul import MatMul
from tfscale.worker.ops.train_step import TrainStep

OPS: dict[str, Op] = {op.name: op for op in (MatMul(), TrainStep(), AllReduce())}
