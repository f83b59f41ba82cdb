"""The run folder survives crashes: rows are whole or ignored, never half-read."""

from __future__ import annotations

import json

from tests.conftest import MINIMAL
from tfscale import config
from tfscale.plan import Point
from tfscale.results import ok_row, terminal_row
from tfscale.store import RunStore


def test_rows_are_appended_and_a_truncated_last_line_is_ignored(write_config, tmp_path):
    a, b, c = (Point("cpu", m, 64, 64, "float32", "device") for m in (1, 2, 3))
    store = RunStore.create(tmp_path / "run", config.load(write_config(MINIMAL)))
    store.append(ok_row(a, [1e-3], emulated=False))
    store.append(terminal_row(b, "failed", "x"))
    store.close()
    results = tmp_path / "run" / "results.jsonl"
    with open(results, "a") as handle:
        handle.write(f'{{"point_id": "{c.point_id}", "sta')  # the crash happened mid-write
    rows, warnings = store.rows()
    assert [r["point_id"] for r in rows] == [a.point_id, b.point_id]
    assert len(warnings) == 1 and "truncated" in warnings[0]
    store.repair_tail()
    store.append(ok_row(c, [1e-3], emulated=False))
    assert [json.loads(line)["point_id"] for line in results.read_text().splitlines()] == [
        a.point_id,
        b.point_id,
        c.point_id,
    ]


def test_a_folder_holding_a_run_is_not_overwritten(write_config, tmp_path):
    experiment = config.load(write_config(MINIMAL))
    RunStore.create(tmp_path / "run", experiment)
    try:
        RunStore.create(tmp_path / "run", experiment)
    except Exception as error:
        assert "--resume" in str(error)
    else:
        raise AssertionError("overwrote a run")


def test_resolved_config_is_saved_with_the_run(write_config, tmp_path):
    experiment = config.load(write_config(MINIMAL), ["workload.k=128"])
    store = RunStore.create(tmp_path / "run", experiment)
    assert config.load(store.config_path).digest() == experiment.digest()
