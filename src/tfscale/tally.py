"""Where a run stands, from its rows alone: how many planned points have which status, and how
many have no row yet. Pure; the CLI turns it into the exit code and the count line.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from tfscale.results import STATUSES

COMPLETE = ("ok", "skipped")  # what a run that measured everything it planned consists of


@dataclass(frozen=True)
class Tally:
    """Where a run stands: each planned point's status (from its row), and the points with no
    row yet. Counted over the whole results file, so a resumed run says the same as one run."""

    planned: int
    counts: tuple[tuple[str, int], ...]  # (status, points), in STATUSES order
    missing: int

    @property
    def complete(self) -> bool:
        return self.missing == 0

    @property
    def all_measured(self) -> bool:
        """Every planned point ok, or skipped by the memory plan."""
        return self.complete and all(status in COMPLETE for status, _ in self.counts)

    def line(self) -> str:
        """'8 ok, 3 failed, 1 unavailable, 4 not run yet (of 16 points)'."""
        parts = [f"{count} {status}" for status, count in self.counts]
        if self.missing:
            parts.append(f"{self.missing} not run yet")
        return f"{', '.join(parts) or 'nothing'} (of {self.planned} points)"


def tally(rows: Iterable[dict], planned_ids: Iterable[str]) -> Tally:
    """The status of every planned point (its last row wins); rows of other points ignored."""
    planned = set(planned_ids)
    status = {row["point_id"]: row["status"] for row in rows if row.get("point_id") in planned}
    counts = Counter(status.values())
    ordered = tuple((s, counts[s]) for s in STATUSES if counts[s])
    return Tally(len(planned), ordered, len(planned) - len(status))
