"""How sure the numbers are: which verdicts rest on noisy points, and the timing settings that
would tighten them.

Pure functions over result rows (as `store.rows()` gives them); no Ray, no TensorFlow.
A point is noisy when its IQR is over NOISY_IQR (10%) of its median, as torch.utils.benchmark
warns. Suggestions assume the noise is timing jitter that averages out within a block: the
spread of a block's mean falls as 1/sqrt(block time); beyond MAX_BLOCK_S a longer block is
not the cure (the machine itself is busy), and the summary says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tfscale import analysis
from tfscale.results import NOISY_IQR

MAX_BLOCK_S = 1.0  # longest block suggested: past it, run on an idle node instead
MEDIAN_PRECISION = NOISY_IQR / 4  # samples enough to know the median within +-2.5%
# standard error of a median of n normal samples = sqrt(pi/2) sigma / sqrt(n); sigma = IQR/1.349
MEDIAN_ERROR_PER_IQR = math.sqrt(math.pi / 2) / 1.349


def relative_iqr(row: dict) -> float:
    return (row["q3_s"] - row["q1_s"]) / row["median_s"]


def _spread(row: dict) -> float:
    """relative_iqr for the tightening arithmetic, at most 100 (an IQR 100x the median asks
    for the longest blocks and most repeats already; a garbled q3_s of 1e300 overflowed)."""
    return min(relative_iqr(row), 100.0)


def is_noisy(row: dict) -> bool:
    return relative_iqr(row) > NOISY_IQR


def block_s(row: dict) -> float:
    """How long one timed block of this point lasted: `inner` iterations of median_s."""
    return row["median_s"] * (row.get("inner") or 1)


@dataclass(frozen=True)
class NoisyVerdict:
    """A verdict and the noisy points among those it compares (both groups' rows)."""

    verdict: analysis.Verdict
    noisy: list[dict]
    points: int

    @property
    def worst(self) -> dict:
        return max(self.noisy, key=relative_iqr)

    def sentence(self) -> str:
        worst = self.worst
        title = analysis.section_title(self.verdict.op, self.verdict.scaling)
        return (
            (f"{title}: " if title else "")
            + f"{self.verdict.b} vs {self.verdict.a} ({self.verdict.dtype}, {self.verdict.data}): "
            f"{len(self.noisy)} of {self.points} points noisy, worst {worst['group']} "
            f"{self.verdict.axis} = {worst[self.verdict.axis]:,} "
            f"(IQR {relative_iqr(worst):.0%} of the median)"
        )


def noisy_verdicts(rows: list[dict], verdicts: list[analysis.Verdict]) -> list[NoisyVerdict]:
    """The verdicts that rest on at least one noisy point, each with those points."""
    if not any(is_noisy(r) for r in analysis.ok_rows(rows)):
        return []  # the usual case, and cheap: no curves to build
    by_section = {key: analysis.curves(part) for key, part in analysis.sections(rows).items()}
    out = []
    for verdict in verdicts:
        series = by_section.get((verdict.op, verdict.scaling), {})
        a = series.get((verdict.a, verdict.dtype, verdict.data), [])
        b = series.get((verdict.b, verdict.dtype, verdict.data), [])
        common = {_cell(r) for r in a} & {_cell(r) for r in b}
        compared = [r for r in a + b if _cell(r) in common]
        noisy = [r for r in compared if is_noisy(r)]
        if noisy:
            out.append(NoisyVerdict(verdict, noisy, len(compared)))
    return out


def _cell(row: dict) -> tuple:
    return (row["m"], row["k"], row["n"])


@dataclass(frozen=True)
class Tightening:
    """Timing settings that would bring the noisy points' IQRs near NOISY_IQR, and why: told
    from the point that stays noisiest under them."""

    settings: dict[str, float]
    min_block_s: float  # the block length suggested (or the run's, where it stays)
    from_block_s: float  # the noisiest point's block length as measured
    from_iqr: float  # its relative IQR as measured
    expected_iqr: float  # what 1/sqrt(block time) predicts for it under min_block_s
    point_s: float  # the least time sampling one such point then takes

    @property
    def capped(self) -> bool:
        """Longer blocks alone would not bring it to NOISY_IQR: the machine is the noise."""
        return self.expected_iqr > NOISY_IQR * (1 + 1e-9)

    def command(self) -> str:
        return " ".join(f"--set timing.{key}={value:g}" for key, value in self.settings.items())


def tighter_timing(noisy: list[dict], timing: dict) -> Tightening | None:
    """min_block_s long enough to average the jitter down to NOISY_IQR (IQR ~ 1/sqrt(block)),
    at most MAX_BLOCK_S; min_repeats enough to know the median within MEDIAN_PRECISION at the
    IQR that leaves; max_time_s room for them. None where the run's settings already do."""
    if not noisy:
        return None
    block = timing["min_block_s"]
    for row in noisy:  # a longer min_block_s helps the points whose blocks are shorter
        needed = min(block_s(row) * (_spread(row) / NOISY_IQR) ** 2, MAX_BLOCK_S)
        wanted = min(_round_up(needed), MAX_BLOCK_S)
        if wanted > block_s(row):
            block = max(block, wanted)

    def expected(row: dict) -> float:
        return _spread(row) * math.sqrt(block_s(row) / max(block, block_s(row)))

    worst = max(noisy, key=expected)
    repeats = math.ceil((MEDIAN_ERROR_PER_IQR * expected(worst) / MEDIAN_PRECISION) ** 2)
    repeats = max(repeats, timing["min_repeats"])
    point_s = repeats * max(max(block, block_s(row)) for row in noisy)
    settings: dict[str, float] = {}
    if block > timing["min_block_s"]:
        settings["min_block_s"] = block
    if repeats > timing["min_repeats"]:
        settings["min_repeats"] = repeats
    if point_s > timing["max_time_s"]:
        settings["max_time_s"] = _round_up(2 * point_s)
    if not settings:
        return None
    return Tightening(
        settings, block, block_s(worst), relative_iqr(worst), expected(worst), point_s
    )


def _round_up(value: float) -> float:
    """The next of 1, 2, 5 x 10^k at or above value: settings a person would type."""
    exponent = math.floor(math.log10(value))
    for scale in (exponent, exponent + 1):
        for step in (1, 2, 5):
            candidate = float(f"{step}e{scale}")
            if candidate >= value * (1 - 1e-9):
                return candidate
    raise AssertionError(value)
