"""Run a tfscale sweep on a Ray cluster's head node; the script `ray submit` uploads.

    ray submit cluster/aws-gpu.yaml experiments/sweep.py -- configs/large_data.yaml [tfscale run options]

It runs in the project folder on the head (where the cluster's setup put it), joins the whole
cluster (address "auto"), streams progress to your terminal, and prints the run folder and
the `ray rsync-down` command that fetches it. Thin on purpose: everything else is `tfscale run`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def project_root() -> Path:
    """TFSCALE_HOME, else the checkout tfscale is installed from (editable), else the cwd."""
    if os.environ.get("TFSCALE_HOME"):
        return Path(os.environ["TFSCALE_HOME"]).expanduser()
    import tfscale

    checkout = Path(tfscale.__file__).resolve().parents[2]
    return checkout if (checkout / "configs").is_dir() else Path.cwd()


def main(argv: list[str]) -> int:
    from tfscale import cli, config
    from tfscale.errors import TfscaleError
    from tfscale.store import default_run_dir

    os.chdir(project_root())
    args = list(argv)
    if "--address" not in args and not os.environ.get("RAY_ADDRESS"):
        args += ["--address", "auto"]
    if "--out" not in args and "--resume" not in args and args and not args[0].startswith("-"):
        try:
            name = config.load(args[0]).name
        except TfscaleError as exc:
            print(f"tfscale: error: {exc}", file=sys.stderr)
            return 2
        args += ["--out", str(default_run_dir(name))]
    code = cli.main(["run", *args])
    out = args[args.index("--out") + 1] if "--out" in args else args[args.index("--resume") + 1]
    where = (Path.cwd() / out).resolve()
    if where.exists():
        print(f"run folder on the head: {where}", file=sys.stderr)
        print(
            f"fetch it with: ray rsync-down CLUSTER.yaml {where}/ results/{where.name}/",
            file=sys.stderr,
        )
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
