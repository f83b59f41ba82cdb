"""Exit codes a script can trust, computed from the whole results file: 0 only when every
planned point is ok (or skipped by the memory plan), 4 when the run is complete but some
points are not, 3 while points are missing (resumable)."""

from __future__ import annotations

import pytest

from tests.conftest import read_rows, tfscale
from tfscale.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, exit_code
from tfscale.tally import tally

PLANNED = ["a", "b", "c", "d"]


def rows(*statuses: str) -> list[dict]:
    return [{"point_id": pid, "status": s} for pid, s in zip(PLANNED, statuses, strict=False)]


@pytest.mark.parametrize(
    ("statuses", "code", "line"),
    [
        (("ok", "ok", "ok", "ok"), EXIT_OK, "4 ok (of 4 points)"),
        (("ok", "skipped", "ok", "skipped"), EXIT_OK, "2 ok, 2 skipped (of 4 points)"),
        (("failed",) * 4, EXIT_PARTIAL, "4 failed (of 4 points)"),
        (
            ("ok", "unavailable", "oom", "timeout"),
            EXIT_PARTIAL,
            "1 ok, 1 oom, 1 timeout, 1 unavailable (of 4 points)",
        ),
        (("ok", "failed"), EXIT_INTERRUPTED, "1 ok, 1 failed, 2 not run yet (of 4 points)"),
        ((), EXIT_INTERRUPTED, "4 not run yet (of 4 points)"),
    ],
)
def test_exit_code_and_count_line_come_from_every_planned_point(statuses, code, line):
    where = tally(rows(*statuses), PLANNED)
    assert exit_code(where) == code
    assert where.line() == line


def test_a_resumed_point_counts_once_with_its_last_row_and_foreign_rows_do_not_count():
    resumed = [*rows("ok", "ok", "ok"), {"point_id": "d", "status": "ok"}]
    stray = {"point_id": "not-planned", "status": "failed"}
    where = tally([{"point_id": "d", "status": "timeout"}, *resumed, stray], PLANNED)
    assert exit_code(where) == EXIT_OK and where.line() == "4 ok (of 4 points)"


CONFIG = """\
name: codes
workload: {m: [1, 2], k: 64, n: 64}
groups: [{group: cpu, threads: 1}]
timing: {warmup: 1, min_repeats: 3, min_time_s: 0.05, max_time_s: 1, min_block_s: 0.002}
run: {point_timeout_s: 3}
"""


@pytest.mark.slow
def test_a_run_with_a_timed_out_point_exits_4_and_so_does_its_resume(tmp_path):
    pytest.importorskip("tensorflow")
    (tmp_path / "c.yaml").write_text(CONFIG)
    first = tfscale(
        "run", "c.yaml", "--out", "run", cwd=tmp_path, env={"TFSCALE_TEST_STALL": "2:60"}
    )
    assert first.returncode == 4, first.stderr[-3000:]
    assert [r["status"] for r in read_rows(tmp_path / "run")] == ["ok", "timeout"]
    assert "tfscale: 1 ok, 1 timeout (of 2 points)" in first.stderr.splitlines()

    again = tfscale("run", "--resume", "run", cwd=tmp_path)  # nothing left to do
    assert again.returncode == 4, again.stderr[-3000:]
    assert "tfscale: 1 ok, 1 timeout (of 2 points)" in again.stderr.splitlines()
