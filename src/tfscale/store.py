"""The run folder: config.yaml, environment.json, results.jsonl (append-only), resume.

Rows are appended, flushed and fsynced one by one, so a crash loses at most the point in
flight; a truncated last line (the crash happened mid-write) is ignored with a warning.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from tfscale.config import Experiment
from tfscale.errors import TfscaleError
from tfscale.results import RowError, normalize

RESULTS, CONFIG, ENVIRONMENT = "results.jsonl", "config.yaml", "environment.json"


def default_run_dir(name: str, root: Path = Path("results")) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, n = root / f"{name}-{stamp}", 2
    while path.exists():
        path, n = root / f"{name}-{stamp}-{n}", n + 1
    return path


class RunStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._handle = None

    @classmethod
    def create(cls, path: Path, experiment: Experiment) -> RunStore:
        """A new run folder holding the resolved config; refuses a folder that holds a run."""
        path = Path(path)
        if (path / RESULTS).exists() or (path / CONFIG).exists():
            raise TfscaleError(f"{path}: already holds a run; use --resume {path} to finish it")
        try:
            (path / "plots").mkdir(parents=True, exist_ok=True)
            probe = path / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise TfscaleError(f"{path}: cannot write the run folder: {exc.strerror}") from None
        store = cls(path)
        header = f"# resolved by tfscale; digest {experiment.digest()}\n"
        store.write_text(CONFIG, header + yaml.safe_dump(experiment.resolved(), sort_keys=False))
        (path / RESULTS).touch()
        return store

    @classmethod
    def open(cls, path: Path) -> RunStore:
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise TfscaleError(f"{path}: not a run folder (no {CONFIG})")
        return cls(path)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    def append(self, row: dict) -> None:
        if self._handle is None:
            self._handle = open(self.path / RESULTS, "a", encoding="utf-8")
        self._handle.write(json.dumps(row, allow_nan=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def discard(self) -> None:
        """Remove a run folder that never got a row (the run could not start)."""
        import shutil

        self.close()
        if not any(line.strip() for line in self._lines()):
            shutil.rmtree(self.path, ignore_errors=True)

    def _lines(self) -> list[str]:
        results = self.path / RESULTS
        return results.read_text(encoding="utf-8").split("\n") if results.exists() else []

    def rows(self) -> tuple[list[dict], list[str]]:
        """All complete rows, normalised (`results.normalize`: any row with the contract's
        fields will do), and warnings about lines that are not JSON objects. Every reader
        (report, compare, --resume) goes through here. A JSON object that lacks a field
        readers need is a RowError located at its line: its numbers cannot be trusted."""
        rows, warnings = [], []
        results = self.path / RESULTS
        if not results.exists():
            return rows, [f"{results}: missing"]
        lines = results.read_text(encoding="utf-8").split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a result row")
            except ValueError:
                last = number >= len(lines) - 1
                what = "truncated last line (the run was cut off mid-write)" if last else "bad line"
                warnings.append(f"{results}:{number}: {what}; ignored")
                continue
            try:
                rows.append(normalize(row))
            except RowError as exc:
                exc.file, exc.line = str(results), number
                raise
        return rows, warnings

    def repair_tail(self) -> None:
        """Drop a truncated last line so appended rows start on a line of their own."""
        results = self.path / RESULTS
        data = results.read_bytes() if results.exists() else b""
        if data and not data.endswith(b"\n"):
            results.write_bytes(data[: data.rfind(b"\n") + 1])

    def write_text(self, name: str, text: str) -> None:
        """Write a whole file atomically: a reader never sees half of it."""
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)

    def write_json(self, name: str, data: dict) -> None:
        self.write_text(name, json.dumps(data, indent=2, default=str) + "\n")
