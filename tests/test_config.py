"""The experiment file: what it accepts, and one clear located error for everything else."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import MINIMAL, ROOT
from tfscale import config
from tfscale.cli import main
from tfscale.errors import ConfigError


def error_of(write_config, text: str, overrides=()) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config.load(write_config(text), list(overrides))
    return caught.value


def test_minimal_config_gets_documented_defaults(write_config):
    experiment = config.load(write_config(MINIMAL))
    assert experiment.emulate == "never"
    assert experiment.baseline_group == "cpu"
    assert experiment.timing.min_block_s == 0.01
    assert experiment.run.isolation == "node"
    assert experiment.workload.dtype == "float32" and experiment.workload.data == "device"


def test_sizes_accept_scientific_and_underscore_notation(write_config):
    experiment = config.load(
        write_config(MINIMAL.replace("m: [1, 64]", "m: [1e3, 100_000, 2.5e2]"))
    )
    assert experiment.workload.m == [250, 1000, 100000]


def test_geometric_range_includes_both_ends():
    assert config.SizeRange(start=100, stop=1000, factor=3).values() == [100, 300, 900, 1000]
    assert config.SizeRange(start=1, stop=8, factor=2).values() == [1, 2, 4, 8]
    assert config.SizeRange(start=5, stop=5).values() == [5]


def test_ops_scalings_tf32_and_all_reduce_choices_are_accepted(write_config):
    text = MINIMAL.replace(
        "n: 64",
        "n: 64\n  op: [matmul, train_step, allreduce]\n  scaling: [strong, weak]\n"
        "  dtype: [float32, tf32]",
    ).replace(
        "groups: [cpu]",
        "groups: [{group: mirrored:2, all_reduce: nccl}, "
        '{group: "multiworker:2x4", all_reduce: ring}]',
    )
    experiment = config.load(write_config(text))
    assert experiment.workload.op == ["matmul", "train_step", "allreduce"]
    assert experiment.workload.dtype == ["float32", "tf32"]
    assert [g.all_reduce for g in experiment.groups] == ["nccl", "ring"]


def test_groups_as_strings_or_mappings(write_config):
    text = MINIMAL.replace("groups: [cpu]", "groups: [cpu, {group: mirrored:2, emulate: true}]")
    experiment = config.load(write_config(text))
    assert [g.group for g in experiment.groups] == ["cpu", "mirrored:2"]
    assert experiment.groups[1].emulate is True


def test_overrides_set_any_leaf_with_yaml_values(write_config):
    experiment = config.load(
        write_config(MINIMAL), ["workload.k=2048", "groups=[cpu, gpu]", "timing.warmup=3"]
    )
    assert experiment.workload.k == 2048
    assert [g.group for g in experiment.groups] == ["cpu", "gpu"]
    assert experiment.timing.warmup == 3


def test_resolved_config_loads_back_with_the_same_digest(write_config, tmp_path):
    import yaml

    experiment = config.load(write_config(MINIMAL + "emulate: missing\n"))
    again = tmp_path / "resolved.yaml"
    again.write_text(yaml.safe_dump(experiment.resolved()))
    assert config.load(again).digest() == experiment.digest()


@pytest.mark.parametrize(
    "text, line, field, words",
    [
        (MINIMAL.replace("k: 64", "kk: 64"), 4, "workload.kk", "did you mean 'k'"),
        (MINIMAL + "timing: {warmpu: 3}\n", 7, "timing.warmpu", "did you mean 'warmup'"),
        (MINIMAL.replace("k: 64", "k: -3"), 4, "workload.k", "at least 1"),
        (MINIMAL.replace("k: 64", "k: 0"), 4, "workload.k", "at least 1"),
        (MINIMAL.replace("k: 64", "k: lots"), 4, "workload.k", "size such as"),
        (MINIMAL.replace("k: 64", "k: 1.5"), 4, "workload.k", "whole number"),
        (MINIMAL.replace("k: 64", "k: true"), 4, "workload.k", "size such as"),
        (MINIMAL.replace("k: 64", "k: []"), 4, "workload.k", "empty list"),
        (
            MINIMAL.replace("k: 64", "k: {start: 64, stop: 8, factor: 2}"),
            4,
            "workload.k",
            "ranges run upwards",
        ),
        (
            MINIMAL.replace("k: 64", "k: {start: 1, stop: 8, factor: 1}"),
            4,
            "workload.k",
            "never reaches stop",
        ),
        (
            MINIMAL.replace("k: 64", "k: {start: 1, stop: 8, step: 1}"),
            4,
            "workload.k",
            "a range takes start, stop and factor",
        ),
        (MINIMAL.replace("k: 64", "k: 1e20"), 4, "workload.k", "beyond"),
        (MINIMAL.replace("n: 64", "n: 64\n  dtype: float8"), 6, "workload.dtype", "unknown dtype"),
        (MINIMAL.replace("n: 64", "n: 64\n  data: gpu"), 6, "workload.data", "unknown data mode"),
        (MINIMAL.replace("groups: [cpu]", "groups: [tpu]"), 6, "groups[0].group", "unknown group"),
        (
            MINIMAL.replace("groups: [cpu]", "groups: [mirrored:0]"),
            6,
            "groups[0].group",
            "unknown group",
        ),
        (MINIMAL.replace("groups: [cpu]", "groups: []"), 6, "groups", "at least 1"),
        (MINIMAL.replace("groups: [cpu]", "groups: [cpu, cpu]"), 6, "groups[1]", "listed twice"),
        (MINIMAL + "baseline: gpu\n", 7, "baseline", "not among the groups"),
        (MINIMAL.replace("name: tiny", "name: ../../etc"), 1, "name", "letters, digits"),
        (MINIMAL.replace("name: tiny", "name: .."), 1, "name", "letters, digits"),
        (MINIMAL.replace("name: tiny\n", ""), 1, "name", "required"),
        (MINIMAL + "emulate: sometimes\n", 7, "emulate", "never"),
        (MINIMAL + "run: {memory_fraction: 1.5}\n", 7, "run.memory_fraction", "less than or equal"),
        (
            MINIMAL + "timing: {min_time_s: 5, max_time_s: 1}\n",
            7,
            "timing.max_time_s",
            "below min_time_s",
        ),
        (
            MINIMAL.replace("groups: [cpu]", "groups: [{group: cpu, emulate: true}]"),
            6,
            "groups[0].emulate",
            "GPU groups",
        ),
        (MINIMAL + "name: again\n", 7, "name", "appears twice"),
        (MINIMAL.replace("n: 64", "n: 64\n  op: trainstep"), 6, "workload.op", "'train_step'"),
        (MINIMAL.replace("n: 64", "n: 64\n  scaling: [weak, x]"), 6, "workload.scaling", "weak"),
        (
            MINIMAL.replace("groups: [cpu]", "groups: [{group: gpu, all_reduce: nccl}]"),
            6,
            "groups[0].all_reduce",
            "mirrored:k and multiworker",
        ),
        (
            MINIMAL.replace("groups: [cpu]", "groups: [{group: mirrored:2, all_reduce: ring}]"),
            6,
            "groups[0].all_reduce",
            "hierarchical_copy",
        ),
    ],
)
def test_bad_field_is_named_with_its_line(write_config, text, line, field, words):
    error = error_of(write_config, text)
    assert words in error.message
    assert error.field == field
    assert error.line == line


SPREAD_OUT = """\
name: spread-out
workload:
  m: [1, 64]
  k: 64
  n: 64
groups:
  - cpu
  - gpu
  - cpu
baseline: mirrored:2
peaks:
  cpu: {tflops: 1}
  mirrored:4: {tflops: 2}
"""


def test_a_duplicate_group_is_located_at_its_list_item(write_config):
    error = error_of(write_config, SPREAD_OUT)
    assert (error.line, error.field) == (9, "groups[2]")
    assert error.message == "cpu is listed twice (first as groups[0])"


def without_duplicate_and_bad_peak(text: str) -> str:
    return text.replace("  - cpu\n", "", 1).replace("  mirrored:4: {tflops: 2}\n", "")


def test_a_baseline_outside_the_groups_is_located_at_baseline(write_config):
    error = error_of(write_config, without_duplicate_and_bad_peak(SPREAD_OUT))
    assert (error.line, error.field) == (9, "baseline")
    assert error.message == "'mirrored:2' is not among the groups (gpu, cpu)"


def test_an_unknown_peaks_key_is_located_at_that_key(write_config):
    text = SPREAD_OUT.replace("  - cpu\n", "", 1).replace("baseline: mirrored:2\n", "")
    error = error_of(write_config, text)
    assert (error.line, error.field) == (11, "peaks.mirrored:4")
    assert "not among the groups" in error.message


def test_cli_prints_a_cross_field_error_at_the_line_at_fault(write_config, capsys):
    path = write_config(without_duplicate_and_bad_peak(SPREAD_OUT))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"tfscale: error: {path}:9: baseline: 'mirrored:2' is not among the groups (gpu, cpu)\n"
    )


def test_a_cross_field_error_from_an_override_names_the_override(write_config):
    error = error_of(write_config, MINIMAL, ["baseline=gpu"])
    assert (error.field, error.line) == ("--set baseline", None)
    error = error_of(write_config, MINIMAL, ["groups=[cpu, gpu, gpu]"])
    assert (error.field, error.line) == ("--set groups", None)
    assert "gpu is listed twice" in error.message


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "empty"),
        ("# only a comment\n", "empty"),
        ("- a\n- b\n", "expected a mapping"),
        ("name: [unclosed\n", "expected"),
        ("name: !!python/object/apply:os.system ['echo hacked']\n", "not allowed"),
    ],
)
def test_malformed_files_are_rejected_cleanly(write_config, text, words):
    assert words in error_of(write_config, text).message


def test_binary_and_missing_files(tmp_path):
    binary = tmp_path / "x.yaml"
    binary.write_bytes(b"\x00\x01\x02name: x")
    with pytest.raises(ConfigError, match="binary"):
        config.load(binary)
    with pytest.raises(ConfigError, match="no such file"):
        config.load(tmp_path / "missing.yaml")


def test_bad_override_names_the_override(write_config):
    error = error_of(write_config, MINIMAL, ["workload.k=-1"])
    assert error.field == "--set workload.k" and error.line is None
    assert "KEY=VALUE" in error_of(write_config, MINIMAL, ["workload.k"]).message


def test_cli_prints_one_located_line_and_exits_2(write_config, capsys):
    path = write_config(MINIMAL.replace("k: 64", "kk: 64"))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"tfscale: error: {path}:4: workload.kk: unknown field")


def test_run_with_bad_config_writes_nothing(write_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(write_config("name: x\n")), "--out", str(out)]) == 2
    assert not out.exists()
    assert "Traceback" not in capsys.readouterr().err


def test_shipped_configs_validate(capsys):
    paths = sorted(str(p) for p in (ROOT / "configs").glob("*.yaml"))
    assert main(["validate", *paths]) == 0
    assert capsys.readouterr().out.count(": ok,") == len(paths)


def test_committed_schema_is_current():
    committed = json.loads((ROOT / "schema" / "experiment.schema.json").read_text())
    assert committed == config.Experiment.model_json_schema()


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**13),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["cpu", "gpu", "mirrored:2", "1e3", "m"]),
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "name",
                    "workload",
                    "m",
                    "k",
                    "n",
                    "groups",
                    "group",
                    "start",
                    "stop",
                    "factor",
                    "timing",
                    "run",
                    "dtype",
                    "data",
                    "emulate",
                    "baseline",
                    "x",
                ]
            ),
            children,
            max_size=5,
        ),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_random_config_trees_never_raise_anything_but_config_error(tree):
    import yaml

    try:
        text = yaml.safe_dump(tree)
    except yaml.YAMLError:
        return
    try:
        config.loads(text, file="random.yaml")
    except ConfigError as error:
        assert str(error)
