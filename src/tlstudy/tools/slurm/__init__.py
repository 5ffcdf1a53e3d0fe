"""The cluster route: `python -m tlstudy slurm submit|status`. Slurm runs the parts side by side,
each in a working copy of its own; DVC's run-cache carries every stage's outputs between the
jobs and into the user's checkout, where a final job assembles one result as `dvc repro` (or
`dvc exp run -S …`) would. No stage imports this package: it drives DVC, it is not part of the
pipeline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tlstudy slurm",
        description="A job per part on Slurm; DVC's run-cache assembles one result (docs/cluster.md)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("submit", help="submit the pipeline (or an experiment, -S) as Slurm jobs that follow dvc.yaml")
    s.add_argument(
        "-S", "--set-param", action="append", default=[], dest="overrides", metavar="[FILE:]KEY=VALUE",
        help="as `dvc exp run -S`: the final job records an experiment with these params (repeatable)",
    )  # fmt: skip
    s.add_argument("-n", "--name", help="the experiment's name (with -S), as `dvc exp run -n`")
    s.add_argument("--wait", action="store_true", help="block until the final job ends; exit 1 when any job failed")
    s.add_argument(
        "--remote", metavar="NAME",
        help="share outputs through this DVC remote (dvc push/pull --run-cache) instead of the checkout's cache "
        "directory, for nodes that do not share it",
    )  # fmt: skip
    s.add_argument("--config", type=Path, help="resources per job kind (default: slurm.yaml in the checkout, optional)")
    sub.add_parser("status", help="every job of the last submission: its state, job id and log")
    return p


def main(argv: list[str]) -> int:
    from tlstudy.tools.slurm.errors import SlurmError

    args = _parser().parse_args(argv)
    try:
        if args.command == "submit":
            from tlstudy.tools.slurm import submit

            return submit.run(Path.cwd(), args.overrides, args.remote, args.name, args.config, args.wait)
        from tlstudy.tools.slurm import submit

        return submit.main_status(Path.cwd())
    except SlurmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
