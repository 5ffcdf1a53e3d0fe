"""`python -m tlstudy <stage>`: the one entry point every DVC stage calls."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tlstudy",
        description="Stages of the transfer-learning study (run them through `dvc repro`).",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    sub = p.add_subparsers(dest="stage", required=True, metavar="STAGE")
    sub.add_parser("fetch", help="get the images, write manifest.csv and the decoded cache")
    sub.add_parser("stats", help="per-channel mean and std of the training images")
    sub.add_parser("inspect", help="study part 1: SqueezeNet 1.0 on the Samoyed photo")
    sub.add_parser("report", help="regenerate report/ from the metrics and plots")
    for name, text in (
        ("train", "train a part's grid of runs and keep its selected models"),
        ("evaluate", "test a part's selected models; write its metrics and predictions"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("--part", required=True, help="a part named under `parts` in params.yaml")
    d = sub.add_parser("demo", help="build and run the offline demo workspace on synthetic data")
    d.add_argument("--dir", default="demo", help="workspace to (re)create (default: %(default)s)")
    d.add_argument("--overlay", default="demo-params.yaml", help="params overriding params.yaml")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from tlstudy import params as P
    from tlstudy.data import DataError
    from tlstudy.download import DownloadError
    from tlstudy.fetch import FetchError
    from tlstudy.models import WeightsError

    try:
        if args.stage == "demo":
            from tlstudy import demo

            demo.run(args.dir, args.overlay, args.params)
            return 0
        params = P.load(args.params)
        if args.stage == "fetch":
            from tlstudy import fetch

            fetch.run(params)
        elif args.stage == "stats":
            from tlstudy import stats

            stats.run(params)
        elif args.stage == "inspect":
            from tlstudy import inspect_model

            inspect_model.run(params)
        elif args.stage == "report":
            from tlstudy import report

            report.run(params)
        elif args.stage == "train":
            from tlstudy import train

            train.run(params, args.part)
        elif args.stage == "evaluate":
            from tlstudy import evaluate

            evaluate.run(params, args.part)
    except (P.ParamsError, DataError, DownloadError, FetchError, WeightsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
