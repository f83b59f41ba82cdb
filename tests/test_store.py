"""The run folder survives crashes: rows are whole or ignored, never half-read."""

from __future__ import annotations

import json

from tests.conftest import MINIMAL
from tfscale import config
from tfscale.store import RunStore


def test_rows_are_appended_and_a_truncated_last_line_is_ignored(write_config, tmp_path):
    store = RunStore.create(tmp_path / "run", config.load(write_config(MINIMAL)))
    store.append({"point_id": "a", "status": "ok"})
    store.append({"point_id": "b", "status": "failed", "reason": "x"})
    store.close()
    results = tmp_path / "run" / "results.jsonl"
    with open(results, "a") as handle:
        handle.write('{"point_id": "c", "sta')  # the crash happened mid-write
    rows, warnings = store.rows()
    assert [r["point_id"] for r in rows] == ["a", "b"]
    assert len(warnings) == 1 and "truncated" in warnings[0]
    store.repair_tail()
    store.append({"point_id": "c", "status": "ok"})
    assert [json.loads(line)["point_id"] for line in results.read_text().splitlines()] == [
        "a",
        "b",
        "c",
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
