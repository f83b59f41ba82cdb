"""What a person sees: figures (read through matplotlib), summary, HTML, CSV, compare."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess

import pytest

from tests.conftest import MINIMAL
from tests.test_analysis import SIZES, rows_for
from tfscale import compare, config, plots, report
from tfscale.cli import main
from tfscale.store import RunStore


def sweep(emulated_gpu: bool = True) -> list[dict]:
    return (
        rows_for("cpu", {m: 1e-5 * m for m in SIZES})
        + rows_for("gpu", {m: 1e-3 + 1e-7 * m for m in SIZES}, emulated=emulated_gpu)
        + rows_for("mirrored:2", {m: 2e-3 + 5e-8 * m for m in SIZES}, emulated=emulated_gpu)
    )


def test_figures_have_units_log_axes_and_say_emulated():
    figs = plots.figures(sweep(), "cpu")
    assert {"time", "throughput", "speedup", "efficiency"} <= set(figs)
    ax = figs["time"].axes[0]
    assert ax.get_xlabel() == "m (rows of X)" and "(s," in ax.get_ylabel()
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["cpu", "gpu (emulated)", "mirrored:2 (emulated)"]
    styles = {line.get_label(): line.get_linestyle() for line in ax.get_lines()}
    assert styles["cpu"] == "-" and styles["gpu (emulated)"] == "--"
    speedup = [t.get_text() for t in figs["speedup"].axes[0].get_legend().get_texts()]
    assert "payoff: gpu (emulated)" in speedup  # the payoff point is marked


def test_roofline_only_when_the_sweep_spans_intensities():
    assert "roofline" not in plots.figures(rows_for("cpu", {1: 1.0, 2: 1.0}), "cpu")
    assert "roofline" in plots.figures(sweep(), "cpu")  # m = 1 .. 10^4 at k = n = 64


def write_run(tmp_path, rows, text=MINIMAL) -> RunStore:
    store = RunStore.create(tmp_path / "run", config.load(_file(tmp_path, text)))
    for row in rows:
        store.append(row)
    store.close()
    return store


def _file(tmp_path, text):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_report_writes_summary_html_and_csv_from_rows_alone(tmp_path):
    text = MINIMAL.replace("groups: [cpu]", "groups: [cpu, gpu, mirrored:2]")
    text += "peaks: {cpu: {tflops: 0.001}}\n"
    store = write_run(tmp_path, sweep(), text)
    assert main(["report", str(store.path)]) == 0
    summary = (store.path / "summary.md").read_text()
    assert summary.index("## Verdicts") < summary.index("## Per group")
    assert "gpu (emulated) beats cpu from m = 1,000 on" in summary
    assert "of 0.001 TFLOP/s" in summary
    page = (store.path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "<script" not in page
    table = list(csv.DictReader(io.StringIO((store.path / "results.csv").read_text())))
    assert len(table) == 15 and float(table[0]["median_s"]) > 0
    assert ";" in table[0]["samples_s"]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
def test_html_report_renders_in_a_browser(tmp_path):
    store = write_run(tmp_path, sweep(), MINIMAL.replace("[cpu]", "[cpu, gpu, mirrored:2]"))
    assert main(["report", str(store.path)]) == 0
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            (store.path / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    from matplotlib import image

    pixels = image.imread(shot)[..., :3]
    assert pixels.std() > 0.05  # text and plots, not a blank page
    assert (pixels < 0.5).mean() > 0.01  # dark pixels: text and lines were drawn
    # the embedded plots were decoded and drawn: the three groups' curve colours (matplotlib's
    # C0, C1, C2) are on the page, which no text, table or broken-image icon has
    for rgb in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):
        near = (abs(pixels - [c / 255 for c in rgb]) < 0.06).all(axis=-1)
        assert near.sum() > 200, rgb


def test_compare_flags_a_planted_regression_and_not_noise():
    before = rows_for("cpu", {m: 1e-3 for m in SIZES}, spread=0.05)
    after = rows_for("cpu", {m: 1e-3 * (2.0 if m == 100 else 1.02) for m in SIZES}, spread=0.05)
    changes = {c.point.m: c for c in compare.compare_runs(before, after)}
    assert changes[100].verdict == "regression" and changes[100].ratio == pytest.approx(2.0)
    assert all(c.verdict == "within noise" for m, c in changes.items() if m != 100)
    assert "1 regressions, 0 improvements, 4 within noise" in compare.summary_line(
        list(changes.values())
    )


def test_compare_command_writes_markdown_and_csv(tmp_path, capsys):
    a = write_run(tmp_path / "a", rows_for("cpu", {m: 1e-3 for m in SIZES}))
    b = write_run(tmp_path / "b", rows_for("cpu", {m: 5e-4 for m in SIZES}))
    assert main(["compare", str(a.path), str(b.path)]) == 0
    assert "5 improvements" in capsys.readouterr().out
    assert "improvement" in (b.path / "compare.md").read_text()
    assert len((b.path / "compare.csv").read_text().splitlines()) == 6


def test_summary_without_common_points_says_so():
    text = report.summary(rows_for("cpu", {1: 1.0}), [], "x", [])
    assert "No pair of groups" in text
