"""Rows tfscale did not write itself: `report`, `compare` and `--resume` read any results.jsonl
whose rows carry the contract's fields (DESIGN.md "Result row"), derive the rest, and stop at
a row they cannot trust with one located line, exit 2, and nothing written."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.conftest import MINIMAL
from tfscale import analysis, compare, config, report
from tfscale.cli import main
from tfscale.results import RowError, normalize, point_of
from tfscale.store import RunStore

PREVIOUS_RELEASE = Path(__file__).parent / "data" / "previous_release.jsonl"
GROUPS = MINIMAL.replace("groups: [cpu]", "groups: [cpu, gpu, mirrored:2]")


def contract_row(group: str, m: int, samples: list[float], point_id: str | None = None) -> dict:
    """An ok row as another tool (or a person) would write it: the contract's fields only,
    numbers worked out here by hand, none of the statistics tfscale derives."""
    k = n = 64
    median = sorted(samples)[len(samples) // 2]
    return {
        "point_id": point_id or f"{group}-{m}",
        "group": group,
        "replicas": 1,
        "emulated": False,
        "devices": ["/device:CPU:0"],
        "node": "10.0.0.7",
        "m": m,
        "k": k,
        "n": n,
        "dtype": "float32",
        "data": "device",
        "flops": 2 * m * k * n,
        "bytes": 4 * (m * k + k * n + m * n),
        "status": "ok",
        "reason": None,
        "samples_s": samples,
        "median_s": median,
        "iqr_s": 0.0,
        "inner": 10,
        "gflops": 2 * m * k * n / median / 1e9,
        "gbps": 4 * (m * k + k * n + m * n) / median / 1e9,
        "started_at": "2026-01-02T03:04:05+00:00",
        "attempt": 1,
        "op": "matmul",
        "scaling": "strong",
        "precision": "fp32",
    }


def minimal_rows(slowdown: float = 1.0) -> list[dict]:
    """cpu grows with m, gpu pays 1 ms up front: gpu pays off from m = 1,000 on."""
    rows = []
    for m in (1, 10, 100, 1000, 10000):
        cpu, gpu = 1e-5 * m * slowdown, 1e-3 + 1e-7 * m
        rows.append(contract_row("cpu", m, [cpu * f for f in (0.98, 1.0, 1.01, 1.02, 0.99)]))
        rows.append(contract_row("gpu", m, [gpu * f for f in (0.98, 1.0, 1.01, 1.02, 0.99)]))
    return rows


def run_folder(path: Path, lines: list[str], text: str = GROUPS) -> Path:
    """A run folder as `ray rsync-down` would fetch it: config.yaml and results.jsonl."""
    path.mkdir(parents=True)
    experiment = path.parent / f"{path.name}.yaml"
    experiment.write_text(text)
    store = RunStore.create(path, config.load(experiment))
    (store.path / "results.jsonl").write_text("".join(line + "\n" for line in lines))
    return store.path


def as_lines(rows: list[dict]) -> list[str]:
    return [json.dumps(row) for row in rows]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_report_reads_rows_with_only_the_contracts_fields(tmp_path, capsys):
    run = run_folder(tmp_path / "run", as_lines(minimal_rows()))
    assert main(["report", str(run)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    summary = (run / "summary.md").read_text()
    assert "gpu beats cpu from m = 1,000 on" in summary
    assert {p.name for p in (run / "plots").glob("*.png")} >= {"time.png", "speedup.png"}
    table = {
        (r["group"], r["m"]): r
        for r in csv.DictReader(io.StringIO((run / "results.csv").read_text()))
    }
    # derived from the samples with the writer's quartiles (inclusive method)
    cpu_1000 = table[("cpu", "1000")]
    assert float(cpu_1000["q1_s"]) == pytest.approx(0.01 * 0.99)
    assert float(cpu_1000["q3_s"]) == pytest.approx(0.01 * 1.01)
    assert float(cpu_1000["min_s"]) == pytest.approx(0.01 * 0.98)
    assert cpu_1000["repeats"] == "5"


def test_compare_reads_rows_with_only_the_contracts_fields(tmp_path, capsys):
    before = run_folder(tmp_path / "a", as_lines(minimal_rows()))
    after = run_folder(tmp_path / "b", as_lines(minimal_rows(slowdown=1.5)))
    assert main(["compare", str(before), str(after)]) == 0
    out = capsys.readouterr()
    assert "10 points compared: 5 regressions, 0 improvements, 5 within noise" in out.out
    assert "Traceback" not in out.err
    assert (after / "compare.md").exists()


def test_report_and_compare_read_the_previous_releases_rows(tmp_path, capsys):
    lines = PREVIOUS_RELEASE.read_text().splitlines()
    assert not any(key in json.loads(lines[0]) for key in ("op", "scaling", "precision"))
    run = run_folder(tmp_path / "old", lines)
    assert main(["report", str(run)]) == 0
    summary = (run / "summary.md").read_text()
    assert "6 ok, 1 skipped, 2 unavailable" in summary
    assert "gpu (emulated)" in summary and "beats cpu" in summary
    other = run_folder(tmp_path / "new", lines)
    assert main(["compare", str(run), str(other)]) == 0
    assert "6 points compared: 0 regressions, 0 improvements, 6 within noise" in (
        capsys.readouterr().out
    )


def test_rows_of_the_previous_release_get_this_releases_defaults(tmp_path):
    run = run_folder(tmp_path / "old", PREVIOUS_RELEASE.read_text().splitlines())
    rows, warnings = RunStore.open(run).rows()
    assert warnings == [] and len(rows) == 9
    assert {(r["op"], r["scaling"], r["precision"]) for r in rows} == {("matmul", "strong", "fp32")}
    # the point rebuilt from a row is the point the plan made: --resume skips exactly these
    assert all(point_of(row).point_id == row["point_id"] for row in rows)


@pytest.mark.parametrize(
    "dtype, precision",
    [
        ("float32", "fp32"),
        ("bfloat16", "bf16"),
        ("float16", "fp16"),
        ("float64", "fp64"),
        ("tf32", "tf32"),
    ],
)
def test_precision_defaults_to_the_dtypes_name(dtype, precision):
    row = {**contract_row("cpu", 1, [1.0]), "dtype": dtype}
    del row["precision"]
    assert normalize(row)["precision"] == precision


def test_a_stated_precision_is_kept():
    row = {**contract_row("gpu", 1, [1.0]), "precision": "tf32"}
    assert normalize(row)["precision"] == "tf32"


def test_derived_statistics_match_what_the_writer_stores():
    from tfscale.plan import Point
    from tfscale.results import ok_row

    samples = [3.0, 1.0, 2.0, 5.0, 4.0, 9.0]
    written = ok_row(Point("cpu", 8, 64, 64, "float32", "device"), samples, emulated=False)
    derived = ("iqr_s", "q1_s", "q3_s", "min_s", "repeats", "gflops", "gbps", "warnings")
    read = normalize({key: value for key, value in written.items() if key not in derived})
    assert {key: read[key] for key in derived} == {key: written[key] for key in derived}
    assert read["warnings"] == ["noisy: IQR is 71% of the median"]


def test_a_row_missing_median_is_a_located_error_and_nothing_is_written(tmp_path, capsys):
    lines = as_lines(minimal_rows())
    broken = json.loads(lines[2])
    del broken["median_s"]
    lines[2] = json.dumps(broken)
    run = run_folder(tmp_path / "run", lines)
    main(["report", str(run_folder(tmp_path / "good", as_lines(minimal_rows())))])
    shutil.copytree(tmp_path / "good" / "plots", run / "plots", dirs_exist_ok=True)
    capsys.readouterr()
    before = snapshot(run)

    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err == f"tfscale: error: {run / 'results.jsonl'}:3: median_s: missing\n"
    assert snapshot(run) == before

    good = run_folder(tmp_path / "other", as_lines(minimal_rows()))
    assert main(["compare", str(good), str(run)]) == 2
    assert capsys.readouterr().err.endswith(":3: median_s: missing\n")
    assert not (run / "compare.md").exists() and snapshot(run) == before

    assert main(["run", "--resume", str(run)]) == 2  # stops before it connects to Ray
    assert capsys.readouterr().err.endswith(":3: median_s: missing\n")
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"median_s": "fast"}, "median_s", "expected positive seconds"),
        ({"median_s": 0}, "median_s", "expected positive seconds"),
        ({"samples_s": []}, "samples_s", "expected a list of positive seconds"),
        ({"samples_s": [1.0, None]}, "samples_s", "expected a list of positive seconds"),
        ({"m": 1.5}, "m", "expected a size"),
        ({"group": "tpu"}, "group", "unknown group"),
        ({"dtype": "int8"}, "dtype", "expected one of"),
        ({"status": "fine"}, "status", "expected one of"),
        ({"q1_s": "low"}, "q1_s", "expected positive seconds"),
        ({"q3_s": 0}, "q3_s", "expected positive seconds"),  # speedup ranges divide by it
        ({"gflops": float("nan")}, "gflops", "expected a number >= 0"),
        ({"inner": 0}, "inner", "expected >= 1"),
        ({"dtype": ["float32"]}, "dtype", "expected one of"),
        ({"emulated": "no"}, "emulated", "expected true or false"),
    ],
)
def test_a_garbled_field_is_located_too(tmp_path, capsys, change, field, words):
    rows = minimal_rows()
    rows[4].update(change)
    run = run_folder(tmp_path / "run", as_lines(rows))
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tfscale: error: {run / 'results.jsonl'}:5: {field}: {words}")
    assert err.count("\n") == 1


@pytest.mark.parametrize("field", ["point_id", "group", "m", "status", "samples_s", "emulated"])
def test_each_required_field_of_an_ok_row_is_required(field):
    row = contract_row("cpu", 1, [1.0])
    del row[field]
    with pytest.raises(RowError) as caught:
        normalize(row)
    assert (caught.value.field, caught.value.message) == (field, "missing")


def test_a_failed_row_needs_its_reason_not_samples():
    row = {
        key: value
        for key, value in contract_row("cpu", 1, [1.0]).items()
        if key not in ("samples_s", "median_s", "iqr_s", "gflops", "gbps", "inner")
    }
    row.update(status="failed", reason="worker died")
    assert normalize(row)["status"] == "failed"
    del row["reason"]
    with pytest.raises(RowError, match="reason: missing"):
        normalize(row)


def test_a_truncated_last_line_is_still_only_a_warning(tmp_path, capsys):
    lines = as_lines(minimal_rows())
    run = run_folder(tmp_path / "run", [*lines[:-1], lines[-1][:40]])
    (run / "results.jsonl").write_text((run / "results.jsonl").read_text().rstrip("\n"))
    assert main(["report", str(run)]) == 0
    assert "truncated last line" in capsys.readouterr().err


def test_null_stands_for_a_field_another_tool_did_not_fill():
    failed = {key: None for key in contract_row("cpu", 1, [1.0])}
    failed.update(contract_row("cpu", 1, [1.0]), status="failed", reason="out of memory")
    failed.update(samples_s=None, median_s=None, gflops=None, op=None, precision=None)
    read = normalize(failed)
    assert (read["op"], read["precision"], read["median_s"]) == ("matmul", "fp32", None)
    ok = {**contract_row("cpu", 1, [1.0, 2.0, 3.0]), "q1_s": None, "gflops": None}
    read = normalize(ok)
    assert read["q1_s"] == 1.5 and read["gflops"] == pytest.approx(8192 / 2.0 / 1e9)
    assert read["iqr_s"] == 0.0  # stated by the row, kept


def test_a_failed_row_needs_a_reason_that_says_why():
    row = {**contract_row("cpu", 1, [1.0]), "status": "oom", "reason": None}
    with pytest.raises(RowError, match="reason: expected text saying why"):
        normalize(row)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.sampled_from([0, -1, 0.0, -0.5, 1e-300, 1e300, 2**63])
    | st.integers(-3, 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["cpu", "gpu", "mirrored:2", "float32", "host", "ok", "failed"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children)
    ),
    max_leaves=6,
)
CONTRACT = list(contract_row("cpu", 1, [1.0]))


@settings(max_examples=500, deadline=None)
@example(status="ok", changed={"q3_s": 1e300}, dropped=set())  # overflowed the noise advice
@given(
    status=st.sampled_from(["ok", "failed"]),
    changed=st.dictionaries(
        st.sampled_from(CONTRACT + ["q1_s", "q3_s", "min_s", "repeats"]), json_values, max_size=3
    ),
    dropped=st.sets(st.sampled_from(CONTRACT)),
)
def test_a_garbled_row_is_a_row_error_or_a_row_every_reader_can_use(status, changed, dropped):
    """Never a traceback: whatever a row holds, normalize refuses it with a RowError, or the
    analysis, the summary, compare and the CSV all work on what it returns."""
    rows = [normalize(r) for r in minimal_rows()]
    assert (rows[7]["group"], rows[7]["m"]) == ("gpu", 1000)
    row = {**contract_row("gpu", 1000, [1e-3, 2e-3, 3e-3]), "status": status, **changed}
    for field in dropped:
        row.pop(field, None)
    try:
        read = normalize(row)
    except RowError as error:
        assert error.field and error.message
        return
    rows[7] = read
    verdicts = analysis.verdicts(rows, ["cpu", "gpu"], "cpu")
    report.summary(rows, verdicts, "garbled", [])
    compare.compare_runs(rows, rows)
    report.table_csv(rows)
