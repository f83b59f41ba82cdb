"""What a worker's GPUs are: model, memory, driver, compute capability (worker side, no
TensorFlow import here, so the parsing is unit-tested on recorded outputs).

Why not `nvidia-smi -i $CUDA_VISIBLE_DEVICES`: nvidia-smi numbers GPUs in PCI order while CUDA
(and so TensorFlow and Ray's CUDA_VISIBLE_DEVICES) uses its own order by default, and `-i`
fails on MIG UUIDs. TensorFlow itself says which physical GPU each of its devices is
("pci bus id: 0000:07:00.0" in its device description) and how much memory it may use; the
driver version comes from nvidia-smi's row with the same PCI bus id.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

SMI_FIELDS = "index,uuid,pci.bus_id,name,memory.total,driver_version"
_DESCRIPTION = re.compile(
    r"name: (?P<name>.*?), pci bus id: (?P<bus>[0-9A-Fa-f:.]+)"
    r"(?:, compute capability: (?P<cc>[0-9.]+))?"
)


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as TensorFlow sees it, completed from nvidia-smi where it answered."""

    name: str
    pci_bus_id: str
    compute_capability: str | None
    memory_bytes: int | None  # what TensorFlow may allocate on it
    uuid: str | None = None
    driver: str | None = None


def bus_key(bus_id: str) -> str:
    """'00000000:07:00.0' (nvidia-smi) and '0000:07:00.0' (CUDA) -> '0:07:00.0'."""
    domain, _, rest = bus_id.strip().lower().rpartition(":")
    domain, _, bus = domain.rpartition(":") if domain.count(":") else ("0", "", domain)
    return f"{int(domain or '0', 16):x}:{bus}:{rest}"


def parse_nvidia_smi(csv: str) -> dict[str, dict]:
    """`nvidia-smi --query-gpu=SMI_FIELDS --format=csv,noheader,nounits` -> rows by bus key."""
    rows = {}
    for line in csv.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 6:
            continue
        index, uuid, bus, name, memory, driver = cells
        rows[bus_key(bus)] = {
            "index": index,
            "uuid": uuid,
            "name": name,
            "memory_bytes": int(memory) * 2**20 if memory.isdigit() else None,
            "driver": driver,
        }
    return rows


def parse_description(description: str, memory_limit: int | None) -> GpuInfo | None:
    """TensorFlow's physical_device_desc of one GPU, e.g. 'device: 0, name: NVIDIA A100-SXM4-
    40GB, pci bus id: 0000:07:00.0, compute capability: 8.0'."""
    match = _DESCRIPTION.search(description)
    if not match:
        return None
    return GpuInfo(match["name"], match["bus"], match["cc"], memory_limit or None)


def complete(gpus: list[GpuInfo], smi: dict[str, dict]) -> list[GpuInfo]:
    """Add uuid and driver from nvidia-smi's row of the same PCI bus; memory from it too
    where TensorFlow gave none (a MIG slice keeps TensorFlow's figure: the row is the card's)."""
    out = []
    for gpu in gpus:
        row = smi.get(bus_key(gpu.pci_bus_id), {})
        out.append(
            GpuInfo(
                gpu.name,
                gpu.pci_bus_id,
                gpu.compute_capability,
                gpu.memory_bytes or row.get("memory_bytes"),
                row.get("uuid"),
                row.get("driver"),
            )
        )
    return out


def nvidia_smi() -> dict[str, dict]:
    """nvidia-smi's view of every GPU of the machine; empty where it is missing."""
    command = ["nvidia-smi", f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_nvidia_smi(result.stdout)


def supports_tf32(compute_capability: str | None) -> bool:
    """TF32 tensor cores exist from Ampere (compute capability 8.0) on."""
    if not compute_capability:
        return False
    return int(compute_capability.split(".")[0]) >= 8
