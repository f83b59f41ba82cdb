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
from tfscale.plan import Point
from tfscale.results import ok_row
from tfscale.store import RunStore


@pytest.fixture(autouse=True)
def close_figures():
    """Figures are read through matplotlib, then closed: many open ones cost memory."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


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


# ---- uncertainty: what the IQRs allow, drawn and said -----------------------------------------


def planted(group: str, time_s: float, noisy: dict[int, float] | None = None) -> list[dict]:
    """Rows of one group timed in blocks of 10 iterations, 1% spread except where `noisy`
    plants a wider one (samples t(1-s), t, t(1+s): q1 = t(1-s/2), q3 = t(1+s/2), IQR = s)."""
    out = []
    for m in SIZES:
        s = (noisy or {}).get(m, 0.01)
        point = Point(group, m, 64, 64, "float32", "device")
        samples = [time_s * (1 - s), time_s, time_s * (1 + s)]
        out.append(ok_row(point, samples, emulated=False, inner=10))
    return out


def band(ax, label: str) -> dict[float, tuple[float, float]]:
    """The shaded band drawn around the curve `label`: x -> (low, high)."""
    (collection,) = [c for c in ax.collections if c.get_gid() == f"band: {label}"]
    at: dict[float, list[float]] = {}
    for x, y in collection.get_paths()[0].vertices:
        at.setdefault(float(x), []).append(float(y))
    return {x: (min(ys), max(ys)) for x, ys in at.items()}


def test_speedup_plot_shades_the_range_both_groups_iqrs_allow():
    # gpu 10% faster than cpu everywhere, but at m = 100 its IQR is 40% of the median
    rows = planted("cpu", 1e-3) + planted("gpu", 0.9e-3, noisy={100: 0.4})
    shade = band(plots.figures(rows, "cpu")["speedup"].axes[0], "gpu")
    low, high = shade[100]
    assert low == pytest.approx(1e-3 * 0.995 / (0.9e-3 * 1.2))  # cpu q1 / gpu q3
    assert high == pytest.approx(1e-3 * 1.005 / (0.9e-3 * 0.8))  # cpu q3 / gpu q1
    assert low < 1 < high  # the 1.11x there could be noise, and the plot shows it
    low, high = shade[1000]
    assert low == pytest.approx(0.995 / (0.9 * 1.005)) and low > 1  # quiet: surely faster


def test_throughput_and_time_plots_shade_each_points_iqr():
    rows = planted("cpu", 1e-3, noisy={10: 0.4})
    figs = plots.figures(rows, "cpu")
    flops = 2 * 10 * 64 * 64
    assert band(figs["throughput"].axes[0], "cpu")[10] == pytest.approx(
        (flops / 1.2e-3 / 1e9, flops / 0.8e-3 / 1e9)
    )
    assert band(figs["time"].axes[0], "cpu")[10] == pytest.approx((0.8e-3, 1.2e-3))


def test_efficiency_plot_shades_the_range_both_groups_iqrs_allow():
    rows = planted("gpu", 1e-3) + planted("mirrored:2", 0.6e-3, noisy={1000: 0.5})
    shade = band(plots.figures(rows, "gpu")["efficiency"].axes[0], "mirrored:2")
    assert shade[1000] == pytest.approx((0.995 / (0.6 * 1.25) / 2, 1.005 / (0.6 * 0.75) / 2))
    assert shade[10] == pytest.approx((0.995 / (0.6 * 1.005) / 2, 1.005 / (0.6 * 0.995) / 2))


def test_summary_says_which_verdicts_rest_on_noisy_points_and_how_to_tighten_them(tmp_path):
    rows = planted("cpu", 1e-3) + planted("gpu", 0.9e-3, noisy={100: 0.3, 1000: 0.3})
    store = write_run(tmp_path, rows, MINIMAL.replace("[cpu]", "[cpu, gpu]"))
    assert main(["report", str(store.path)]) == 0
    summary = (store.path / "summary.md").read_text()
    assert "rests on 2 of 10 points with an IQR over 10% of the median" in summary
    noise_section = summary[summary.index("## Noise") : summary.index("## Per group")]
    assert "1 of 1 verdicts rest on points whose IQR is over 10%" in noise_section
    assert "gpu vs cpu (float32, device): 2 of 10 points noisy, worst gpu m = 100" in summary
    # blocks of 10 x 0.9e-3 s at a 30% IQR: 0.009 s x (30/10)^2 = 0.081 s -> 0.1 s, leaving
    # 30% x sqrt(0.009/0.1) = 9%; the median within 2.5% then takes
    # (0.929 x 9% / 2.5%)^2 = 11.2 -> 12 samples
    assert "`--set timing.min_block_s=0.1 --set timing.min_repeats=12`" in noise_section
    assert "should bring it to about 9%" in noise_section
    page = (store.path / "report.html").read_text()
    assert "<h2>Noise</h2>" in page and "--set timing.min_block_s=0.1" in page


def test_a_quiet_run_has_no_noise_section(tmp_path):
    rows = planted("cpu", 1e-3) + planted("gpu", 0.9e-3)
    store = write_run(tmp_path, rows, MINIMAL.replace("[cpu]", "[cpu, gpu]"))
    assert main(["report", str(store.path)]) == 0
    summary = (store.path / "summary.md").read_text()
    assert "## Noise" not in summary and "rests on" not in summary
    assert "<h2>Noise</h2>" not in (store.path / "report.html").read_text()
