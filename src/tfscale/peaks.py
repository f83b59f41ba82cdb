"""Datasheet peaks of common GPUs, per precision: "% of peak" in the summary (driver side).

Dense figures (no 2:4 sparsity), TFLOP/s per GPU, and memory bandwidth in GB/s, from NVIDIA's
datasheets. fp64 is the FP64 Tensor Core figure where cuBLAS's DGEMM uses those cores (A100,
H100, H200); fp16 and bf16 are Tensor Core figures with FP32 accumulation; None where the GPU
has no such math (TF32 and bf16 before Ampere). A config's `peaks` overrides these; the
summary says which one a figure used.

Sources (datasheets, as published by NVIDIA):
  A100: https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf
  H100: https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet
  H200: https://nvdam.widen.net/s/nb5zzzsjdf/hpc-datasheet-sc23-h200-datasheet-3002446
  L4:   https://nvdam.widen.net/s/rvq98gbwsw/l4-datasheet-2595652
  L40S: https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413
  A10 (A10G is AWS's A10): https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a10/pdf/datasheet-new/nvidia-a10-datasheet.pdf
  T4:   https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf
  V100: https://images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Peak:
    model: str
    tflops: dict[str, float | None]  # by precision: fp64, fp32, tf32, bf16, fp16
    gbps: float


def _peak(model, fp64, fp32, tf32, bf16, fp16, gbps) -> Peak:
    return Peak(model, {"fp64": fp64, "fp32": fp32, "tf32": tf32, "bf16": bf16, "fp16": fp16}, gbps)


# (pattern on the name TensorFlow reports, e.g. "NVIDIA A100-SXM4-80GB", the peak); first wins
TABLE: list[tuple[str, Peak]] = [
    (r"H200", _peak("H200 SXM", 67, 67, 494.7, 989.4, 989.4, 4800)),
    (r"H100.*PCIe", _peak("H100 PCIe", 51, 51, 378, 756, 756, 2000)),
    (r"H100.*NVL", _peak("H100 NVL", 60, 60, 417.5, 835, 835, 3900)),
    (r"H100", _peak("H100 SXM", 67, 67, 494.7, 989.4, 989.4, 3350)),
    (
        r"A100.*80GB.*PCIe|A100.*PCIe.*80GB",
        _peak("A100 80GB PCIe", 19.5, 19.5, 156, 312, 312, 1935),
    ),
    (r"A100.*80GB", _peak("A100 80GB SXM", 19.5, 19.5, 156, 312, 312, 2039)),
    (r"A100", _peak("A100 40GB", 19.5, 19.5, 156, 312, 312, 1555)),
    (r"L40S", _peak("L40S", None, 91.6, 183, 362.05, 362.05, 864)),
    (r"\bL4\b", _peak("L4", None, 30.3, 60, 121, 121, 300)),
    (r"A10G?\b", _peak("A10/A10G", None, 31.2, 62.5, 125, 125, 600)),
    (r"\bT4\b", _peak("T4", None, 8.1, None, None, 65, 320)),
    (r"V100.*PCIe", _peak("V100 PCIe", 7, 14, None, None, 112, 900)),
    (r"V100", _peak("V100 SXM2", 7.8, 15.7, None, None, 125, 900)),
]


def datasheet(model: str) -> Peak | None:
    """The built-in peak of the GPU model TensorFlow names, or None (not in the table)."""
    for pattern, peak in TABLE:
        if re.search(pattern, model or ""):
            return peak
    return None


def group_peak(model: str, precision: str, replicas: int) -> tuple[float | None, float | None]:
    """(TFLOP/s, GB/s) of a group of `replicas` such GPUs at this precision, from the table."""
    peak = datasheet(model)
    if peak is None:
        return None, None
    tflops = peak.tflops.get(precision)
    return (tflops * replicas if tflops else None), peak.gbps * replicas
