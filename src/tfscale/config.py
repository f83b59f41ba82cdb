"""Experiment YAML -> validated `Experiment`, with `--set key=value` overrides.

Every problem becomes a `ConfigError` that names the file, the line and the dotted field, so
the CLI can print one line the user can act on. Only `yaml.safe_load`-level constructs are
accepted: tags that build Python objects are errors.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tfscale.errors import ConfigError
from tfscale.groups import parse_group
from tfscale.located import FieldAt, apply_override, first_message, located, parse

# float32 is true fp32 (workers turn TF32 off); tf32 is float32 storage with TF32 math
DTYPES = ("float16", "bfloat16", "float32", "tf32", "float64")
DATA_MODES = ("device", "host")
OPS = ("matmul", "train_step", "allreduce")
SCALINGS = ("strong", "weak")
# MirroredStrategy's cross_device_ops, and MultiWorkerMirroredStrategy's implementations
MIRRORED_ALL_REDUCE = ("nccl", "hierarchical_copy", "reduce_to_one_device")
MULTIWORKER_ALL_REDUCE = ("ring", "nccl", "auto")
MAX_SIZE = 10**12
MAX_RANGE_VALUES = 10_000
_SIZE_TEXT = re.compile(r"^[0-9][0-9_]*(\.[0-9]*)?([eE]\+?[0-9]+)?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_size(value: Any) -> int:
    """A positive whole size, written 1024, 1e8, 1.5e3 or 100_000_000 (YAML reads 1e8 as text)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 1024 or 1e8, got {value}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, float) or (isinstance(value, str) and _SIZE_TEXT.match(value.strip())):
        number = float(str(value).replace("_", ""))
        if not math.isfinite(number) or number != int(number):
            raise ValueError(f"expected a whole number, got {value}")
        size = int(number)
    else:
        raise ValueError(f"expected a size such as 1024, 1e8 or 100_000_000, got {value!r}")
    if size < 1:
        raise ValueError(f"sizes must be at least 1, got {size}")
    if size > MAX_SIZE:
        raise ValueError(f"size {size} is beyond what any device holds (max {MAX_SIZE:.0e})")
    return size


class SizeRange(_Strict):
    """A geometric range, both ends included: start, start*factor, ..., stop."""

    start: int
    stop: int
    factor: float = 2.0

    @field_validator("start", "stop", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_size(value)

    @model_validator(mode="after")
    def _ends(self) -> SizeRange:
        if not math.isfinite(self.factor) or self.factor <= 1:
            raise ValueError(
                f"factor must be > 1 or the range never reaches stop, got {self.factor}"
            )
        if self.stop < self.start:
            raise ValueError(
                f"stop ({self.stop}) is below start ({self.start}); ranges run upwards"
            )
        count = math.log(self.stop / self.start) / math.log(self.factor)
        if count > MAX_RANGE_VALUES:
            raise ValueError(f"range has about {count:.0f} values (max {MAX_RANGE_VALUES})")
        return self

    def values(self) -> list[int]:
        out, value = [], float(self.start)
        while round(value) < self.stop:
            if not out or round(value) != out[-1]:
                out.append(round(value))
            value *= self.factor
        return [*out, self.stop]


SizeSpec = int | list[int] | SizeRange
TIED = "m"  # k: m or n: m ties that dimension to m (square matmuls)


def _parse_sizes(value: Any) -> SizeSpec:
    if isinstance(value, dict):
        try:
            return SizeRange.model_validate(value)
        except ValidationError as exc:
            raise ValueError(first_message(exc)) from None
    if isinstance(value, list):
        if not value:
            raise ValueError("an empty list sweeps nothing")
        sizes = []
        for i, item in enumerate(value):
            try:
                sizes.append(parse_size(item))
            except ValueError as exc:
                raise ValueError(f"item {i}: {exc}") from None
        return sorted(set(sizes))
    return parse_size(value)


def expand_sizes(spec: SizeSpec) -> list[int]:
    if isinstance(spec, SizeRange):
        return spec.values()
    return list(spec) if isinstance(spec, list) else [spec]


def _choices(value: Any, allowed: tuple[str, ...], what: str) -> str | list[str]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError(f"an empty list of {what}s sweeps nothing")
    for item in items:
        if item not in allowed:
            hint = difflib.get_close_matches(str(item), allowed, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ValueError(
                f"unknown {what} {item!r}{extra}; expected one of {', '.join(allowed)}"
            )
    return list(dict.fromkeys(items)) if isinstance(value, list) else value


class Workload(_Strict):
    """Y[m, n] = X[m, k] @ W[k, n]; X is the data (m rows), W the mirrored weights. `op` says
    what one iteration does with them, `scaling` whether m is global or per replica."""

    op: str | list[str] = "matmul"
    scaling: str | list[str] = "strong"
    m: SizeSpec
    k: SizeSpec | Literal["m"]
    n: SizeSpec | Literal["m"]
    dtype: str | list[str] = "float32"
    data: str | list[str] = "device"

    @field_validator("op", mode="before")
    @classmethod
    def _op(cls, value: Any) -> str | list[str]:
        return _choices(value, OPS, "op")

    @field_validator("scaling", mode="before")
    @classmethod
    def _scaling(cls, value: Any) -> str | list[str]:
        return _choices(value, SCALINGS, "scaling")

    @field_validator("m", mode="before")
    @classmethod
    def _rows(cls, value: Any) -> SizeSpec:
        return _parse_sizes(value)

    @field_validator("k", "n", mode="before")
    @classmethod
    def _sizes(cls, value: Any) -> SizeSpec | str:
        return TIED if value == TIED else _parse_sizes(value)

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: Any) -> str | list[str]:
        return _choices(value, DTYPES, "dtype")

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, value: Any) -> str | list[str]:
        return _choices(value, DATA_MODES, "data mode")


class GroupEntry(_Strict):
    """One device group; `emulate` and `threads` override the experiment-wide choice;
    `all_reduce` picks the strategy's all-reduce (default: TensorFlow's choice)."""

    group: str
    emulate: bool | None = None
    threads: int | None = Field(default=None, ge=1, le=4096)
    all_reduce: str | None = None

    @field_validator("group")
    @classmethod
    def _known(cls, value: str) -> str:
        parse_group(value)
        return value

    @model_validator(mode="after")
    def _emulate_only_gpus(self) -> GroupEntry:
        if self.emulate is not None and self.group == "cpu":
            raise FieldAt(("emulate",), "applies to GPU groups (gpu, mirrored:k), not cpu")
        if self.all_reduce is not None:
            kind = parse_group(self.group)[0]
            allowed = {"mirrored": MIRRORED_ALL_REDUCE, "multiworker": MULTIWORKER_ALL_REDUCE}
            if kind not in allowed:
                raise FieldAt(
                    ("all_reduce",),
                    f"applies to mirrored:k and multiworker groups, not {self.group}",
                )
            try:
                _choices(self.all_reduce, allowed[kind], f"all_reduce for {kind}")
            except ValueError as exc:
                raise FieldAt(("all_reduce",), str(exc)) from None
        return self


class Timing(_Strict):
    warmup: int = Field(default=2, ge=1, le=1000)
    min_repeats: int = Field(default=5, ge=1, le=100_000)
    min_time_s: float = Field(default=0.2, ge=0, le=86_400)
    max_time_s: float = Field(default=10.0, gt=0, le=86_400)
    min_block_s: float = Field(default=0.01, gt=0, le=3600)

    @model_validator(mode="after")
    def _order(self) -> Timing:
        if self.max_time_s < self.min_time_s:
            raise FieldAt(
                ("max_time_s",), f"{self.max_time_s:g} is below min_time_s ({self.min_time_s:g})"
            )
        return self


class RunOptions(_Strict):
    isolation: Literal["node", "device"] = "node"
    max_attempts: int = Field(default=2, ge=1, le=100)
    point_timeout_s: float = Field(default=600.0, gt=0)
    start_timeout_s: float = Field(default=60.0, gt=0)
    memory_fraction: float = Field(default=0.8, gt=0, le=1)


class DeclaredPeak(_Strict):
    """A device's datasheet peaks, to report measured throughput as a share of them."""

    tflops: float | None = Field(default=None, gt=0)
    gbps: float | None = Field(default=None, gt=0)


class Experiment(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=100)
    description: str | None = None
    workload: Workload
    groups: list[GroupEntry] = Field(min_length=1)
    emulate: Literal["never", "missing", "always"] = "never"
    baseline: str | None = None
    timing: Timing = Timing()
    run: RunOptions = RunOptions()
    peaks: dict[str, DeclaredPeak] = {}

    @field_validator("groups", mode="before")
    @classmethod
    def _group_strings(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"group": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _groups_and_baseline(self) -> Experiment:
        names = [entry.group for entry in self.groups]
        for i, name in enumerate(names):
            if name in names[:i]:
                first = names.index(name)
                raise FieldAt(("groups", i), f"{name} is listed twice (first as groups[{first}])")
        among = f"is not among the groups ({', '.join(names)})"
        for name in self.peaks:
            if name not in names:
                raise FieldAt(("peaks", name), f"{name!r} {among}")
        if self.baseline is not None and self.baseline not in names:
            raise FieldAt(("baseline",), f"{self.baseline!r} {among}")
        return self

    @property
    def baseline_group(self) -> str:
        names = [entry.group for entry in self.groups]
        return self.baseline or ("cpu" if "cpu" in names else names[0])

    def resolved(self) -> dict[str, Any]:
        """The experiment as plain data, defaults filled in: what config.yaml of a run holds."""
        return self.model_dump(mode="json", exclude_none=True)

    def digest(self) -> str:
        """Stable hash of the resolved experiment; `--resume` refuses a different one."""
        text = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- loading, with file:line locations -------------------------------------------------------


def load(path: str | Path, overrides: list[str] = ()) -> Experiment:
    """Read, override and validate one experiment file; raise ConfigError on any problem."""
    path = Path(path)
    file = str(path)
    try:
        raw_bytes = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("no such file", file=file) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a YAML file", file=file) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=file) from None
    if b"\0" in raw_bytes:
        raise ConfigError("is a binary file, expected YAML text", file=file)
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("is not UTF-8 text, expected YAML", file=file) from None
    return loads(text, file=file, overrides=overrides)


def loads(text: str, file: str = "<config>", overrides: list[str] = ()) -> Experiment:
    tree = parse(text, file)
    data = tree.data
    overridden = []
    for item in overrides:
        field = apply_override(data, item)
        overridden.append(field)
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        raise located(exc, tree, file, overridden, Experiment) from None
