"""`tfscale run | validate | report | compare`: the user's entry point.

Exit codes of `tfscale run`, always from the whole results file (a resumed run says the same
as one that ran through): 0 every planned point `ok`, or `skipped` by the memory plan; 2 bad
config or usage (nothing run, nothing written); 3 interrupted, or the cluster lost every node
that could serve the rest (resumable with --resume); 4 complete, but some points
`unavailable`, `failed`, `oom` or `timeout`.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path

from tfscale import __version__, config, plan
from tfscale.errors import TfscaleError
from tfscale.tally import Tally, tally

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PARTIAL = 0, 2, 3, 4


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other bad input
        raise TfscaleError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tfscale", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tfscale {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run an experiment, write its run folder")
    run.add_argument("config", nargs="?", help="experiment YAML (optional with --resume)")
    run.add_argument("--out", type=Path, help="run folder (default results/<name>-<timestamp>)")
    run.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    run.add_argument("--emulate", choices=["never", "missing", "always"], help="override emulate")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any field, value read as YAML (repeatable)",
    )
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="finish an interrupted run")

    validate = commands.add_parser("validate", help="check configs and count their points")
    validate.add_argument("configs", nargs="*")
    validate.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE"
    )
    validate.add_argument("--schema", action="store_true", help="print the config JSON Schema")

    report = commands.add_parser(
        "report", help="redraw plots, summary.md, report.html, results.csv"
    )
    report.add_argument("run_dir", type=Path)

    devices = commands.add_parser("devices", help="the cluster's nodes and which groups it can run")
    devices.add_argument(
        "config",
        nargs="?",
        help="check this experiment's groups (default: cpu, gpu, mirrored:2/4/8)",
    )
    devices.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else local)")
    devices.add_argument(
        "--emulate", choices=["never", "missing", "always"], help="override emulate"
    )

    compare = commands.add_parser("compare", help="per-point ratios of two runs, beyond noise")
    compare.add_argument("run_a", type=Path, help="the earlier (reference) run")
    compare.add_argument("run_b", type=Path, help="the later run")
    compare.add_argument("--out", type=Path, help="where compare.md/.csv go (default RUN_B)")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        handlers = {
            "run": cmd_run,
            "validate": cmd_validate,
            "report": cmd_report,
            "compare": cmd_compare,
            "devices": cmd_devices,
        }
        handler = handlers[args.command]
        return handler(args)
    except TfscaleError as exc:
        print(f"tfscale: error: {exc}", file=sys.stderr)
        return exc.exit_code


def cmd_validate(args) -> int:
    if args.schema:
        print(json.dumps(config.Experiment.model_json_schema(), indent=2))
        return EXIT_OK
    if not args.configs:
        raise TfscaleError("give at least one CONFIG (or --schema)")
    for path in args.configs:
        experiment = config.load(path, args.overrides)
        points = plan.expand(experiment)
        groups = ", ".join(entry.group for entry in experiment.groups)
        print(f"{path}: ok, {len(points)} points ({groups})")
    return EXIT_OK


def _load_for_run(args) -> tuple[config.Experiment, Path | None]:
    overrides = list(args.overrides) + ([f"emulate={args.emulate}"] if args.emulate else [])
    if args.resume is None:
        if not args.config:
            raise TfscaleError("give a CONFIG to run, or --resume RUN_DIR")
        return config.load(args.config, overrides), None
    from tfscale.store import RunStore

    store = RunStore.open(args.resume)
    recorded = config.load(store.config_path)
    if overrides and not args.config:
        raise TfscaleError("--set/--emulate cannot change a run being resumed")
    if args.config:
        given = config.load(args.config, overrides)
        if given.digest() != recorded.digest():
            raise TfscaleError(
                f"{args.config} differs from the config of {args.resume} "
                f"(digest {given.digest()} vs {recorded.digest()}); resume with the run's own "
                f"config: tfscale run --resume {args.resume}"
            )
    return recorded, args.resume


def cmd_run(args) -> int:
    experiment, resume_dir = _load_for_run(args)
    points = plan.expand(experiment)

    from tfscale.store import RunStore, default_run_dir

    created = resume_dir is None
    if created:
        store = RunStore.create(args.out or default_run_dir(experiment.name), experiment)
    else:
        store = RunStore.open(resume_dir)
    rows, warnings = store.rows()
    for warning in warnings:
        print(f"tfscale: warning: {warning}", file=sys.stderr)
    store.repair_tail()
    done = {row["point_id"] for row in rows}
    todo = [point for point in points if point.point_id not in done]

    stop = _StopFlag()
    from tfscale import runner
    from tfscale.progress import Progress

    progress = Progress(len(points))
    progress.done = len(points) - len(todo)
    outcome = None
    try:
        try:
            connection = runner.connect(args.address)
        except TfscaleError:
            if created:
                store.discard()
            raise
        stop.install()
        environment = {
            **runner.driver_environment(),
            **connection,
            "experiment_digest": experiment.digest(),
            "git_commit": _git_commit(),
            "command": sys.argv,
            "resumed": resume_dir is not None,
        }
        store.write_json("environment.json", environment)
        outcome = runner.Runner(experiment, store, progress, stop).run(todo)
        environment["workers"] = outcome.workers
        store.write_json("environment.json", _merge_workers(store, environment))
    except KeyboardInterrupt:
        outcome = None
    finally:
        store.close()
        stop.uninstall()
        progress.close()
        runner.shutdown()

    from tfscale import report

    report.write_report(store, experiment)
    where = tally(store.rows()[0], [point.point_id for point in points])
    code = exit_code(where)
    if code == EXIT_INTERRUPTED:
        why = f": {'; '.join(outcome.lost)}" if outcome and outcome.lost else ""
        print(
            f"tfscale: interrupted{why}; finish with: tfscale run --resume {store.path}",
            file=sys.stderr,
        )
    print(f"tfscale: {where.line()}", file=sys.stderr)
    print(store.path)
    return code


def exit_code(where: Tally) -> int:
    """3 while planned points have no row; else 0 if all are ok or skipped, else 4."""
    if not where.complete:
        return EXIT_INTERRUPTED
    return EXIT_OK if where.all_measured else EXIT_PARTIAL


def _merge_workers(store, environment: dict) -> dict:
    """Keep workers described by earlier (resumed) sessions of the same run."""
    path = store.path / "environment.json"
    try:
        previous = json.loads(path.read_text()).get("workers", {})
    except (OSError, ValueError):
        previous = {}
    return {**environment, "workers": {**previous, **environment.get("workers", {})}}


def cmd_report(args) -> int:
    from tfscale.store import RunStore

    store = RunStore.open(args.run_dir)
    experiment = config.load(store.config_path)
    from tfscale import report

    for warning in report.write_report(store, experiment):
        print(f"tfscale: warning: {warning}", file=sys.stderr)
    print(store.path / "report.html")
    return EXIT_OK


def cmd_compare(args) -> int:
    from tfscale import compare
    from tfscale.store import RunStore

    runs = [RunStore.open(path) for path in (args.run_a, args.run_b)]
    loaded = []
    for store in runs:
        rows, warnings = store.rows()
        for warning in warnings:
            print(f"tfscale: warning: {warning}", file=sys.stderr)
        loaded.append(rows)
    changes = compare.compare_runs(*loaded)
    if not changes:
        raise TfscaleError(f"{args.run_a} and {args.run_b} have no measured point in common")
    out = args.out or runs[1].path
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(compare.markdown(changes, args.run_a, args.run_b))
    (out / "compare.csv").write_text(compare.to_csv(changes))
    compare.print_table(changes, args.run_a, args.run_b)
    print(compare.summary_line(changes))
    return EXIT_OK


STANDARD_GROUPS = ("cpu", "gpu", "mirrored:2", "mirrored:4", "mirrored:8")


def cmd_devices(args) -> int:
    from tfscale import runner
    from tfscale.groups import place

    if args.config:
        experiment = config.load(args.config)
        entries = [(e.group, e.emulate, e.threads) for e in experiment.groups]
        policy = args.emulate or experiment.emulate
    else:
        entries = [(group, None, None) for group in STANDARD_GROUPS]
        policy = args.emulate or "never"
    try:
        runner.connect(args.address)
        nodes = runner.alive_nodes()
    finally:
        runner.shutdown()
    print(f"{len(nodes)} node(s):")
    for node in nodes:
        print(
            f"  {node.node_id[:12]}  {node.address:<15}  {node.cpus:g} CPU  {node.gpus:g} GPU  "
            f"{node.memory_bytes / 2**30:.1f} GiB"
        )
    print(f"groups (emulate: {policy}):")
    for group, emulate, threads in entries:
        print(f"  {group:<12} {_can_run(place(group, policy, nodes, emulate, threads), nodes)}")
    return EXIT_OK


def _can_run(placement, nodes) -> str:
    """One line: how and where the cluster runs a group, or why it cannot."""
    from tfscale.groups import schedule

    if placement.unavailable:
        return f"unavailable: {placement.unavailable}"
    plans, impossible = schedule([placement], nodes, {}, "node")
    if impossible:
        return f"unavailable: {impossible[placement.group]}"
    if placement.emulated:
        how = "emulated on logical CPU devices"
    elif placement.num_gpus:
        how = f"{placement.num_gpus} real GPU(s)"
    else:
        how = f"CPU, {placement.threads} threads"
    return f"ok: {how}, e.g. on node {next(iter(plans))[:12]}"


class _StopFlag:
    """First Ctrl-C or SIGTERM: stop after the point in flight. Second: stop now."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ntfscale: stopping after the point in flight (again to stop now)", file=sys.stderr)

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
