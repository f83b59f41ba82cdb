"""Exit codes a script can trust, computed from the whole results file: 0 only when every
planned point is ok (or skipped by the memory plan), 4 when the run is complete but some
points are not, 3 while points are missing (resumable). A real run that exits 4, and its
`--resume` that says the same: test_faults' stuck point."""

from __future__ import annotations

import pytest

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
