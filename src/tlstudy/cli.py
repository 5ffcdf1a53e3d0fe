"""`python -m tlstudy <stage>`: the one entry point every DVC stage calls."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    s = sub.add_parser("pretrain", help="pretrain a backbone on PACS's other domains")
    s.add_argument("--backbone", required=True, help="a backbone named under `pretrain` in params.yaml")
    for name, text in (
        ("train", "train a part's grid of runs and keep its selected models"),
        ("evaluate", "test a part's selected models; write its metrics and predictions"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("--part", required=True, help="a part named under `parts` or `transfer` in params.yaml")
    b = sub.add_parser("bench", help="time the engine against the study's style of loop; write metrics/bench.json")
    b.add_argument("--data", type=Path, help="folder of class folders of JPEGs (default: data.path, else synthetic)")
    b.add_argument("--size", type=int, help="image size in px (default: 64 on the CPU, 227 on a GPU)")
    b.add_argument("--per-class", type=int, help="training images per class")
    b.add_argument("--val-per-class", type=int, help="validation images per class (head-only grid)")
    b.add_argument("--batch-size", type=int, help="default: batch_size from params")
    b.add_argument("--repeats", type=int, help="timed repeats of each measurement")
    b.add_argument(
        "--workers", type=int, help="baseline DataLoader workers (default: 0 on the CPU, all cores on a GPU)"
    )
    b.add_argument("--head-epochs", type=int, help="epochs of each run in the head-only grid")
    b.add_argument(
        "--configs",
        default="none/sgd,none/adam,hflip_rot10/sgd,blur9/sgd",
        help="full-training cases as variant/optimizer, variants from params (default: %(default)s)",
    )
    b.add_argument(
        "--layout-sizes",
        default="64,227",
        help="image sizes of the CPU layout case, channels_last vs the default (default: %(default)s; '' skips it)",
    )
    b.add_argument("--out", type=Path, default=Path("metrics/bench.json"), help="default: %(default)s")
    c = sub.add_parser(
        "compare", help="every part's test accuracy across experiments, a column each (dvc exp show, turned around)"
    )
    c.add_argument("--metric", default="test_acc", help="the metric of each group to show (default: %(default)s)")
    c.add_argument("dvc_args", nargs="*", help="passed to `dvc exp show`, e.g. -A or --rev main (after --)")
    # Listed for --help only: main() hands `slurm …` to tlstudy.slurm, which no stage imports.
    sub.add_parser("slurm", help="run the pipeline as Slurm jobs, a part per job (slurm submit | slurm status)")
    d = sub.add_parser("demo", help="the demo profile on synthetic data, rebuilt in demo/ (make demo)")
    d.add_argument("--dir", default="demo", help="workspace to rebuild (default: %(default)s)")
    r = sub.add_parser("profile", help="run a profile (profiles/<name>.yaml over params.yaml) in its own workspace")
    r.add_argument("name", help="a profile under profiles/ (demo, offline) or an overlay file")
    r.add_argument("--dir", help="workspace (default: work/profiles/<name>); an existing one continues")
    r.add_argument("--fresh", action="store_true", help="rebuild the workspace from scratch")
    r.add_argument("--data", type=Path, help="PACS cartoon folder, linked in at data.path (no download)")
    r.add_argument("--sources", type=Path, help="PACS's other domains, <domain>/<class>/<image>, linked in")
    r.add_argument("--publish", action="store_true", help="copy the results to results/<name>/")
    r.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="sets",
        help="after the overlay, set a dotted key of params to a YAML value, e.g. --set epochs=2 "
        "--set pretrain.pacs_sources.epochs=1 (repeatable; null removes the key)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["slurm"]:
        from tlstudy.slurm import main as slurm

        return slurm(argv[1:])
    args = _parser().parse_args(argv)
    from tlstudy import params as P
    from tlstudy.atomic import DiskFullError, disk_full, out_of_space
    from tlstudy.data import DataError
    from tlstudy.download import DownloadError
    from tlstudy.fetch import FetchError
    from tlstudy.models import WeightsError

    try:
        if args.stage in ("demo", "profile"):
            from tlstudy import profile

            if args.stage == "demo":
                profile.run("demo", args.dir, args.params, fresh=True)
            else:
                command = "python -m tlstudy " + " ".join(argv if argv is not None else sys.argv[1:])
                profile.run(
                    args.name, args.dir, args.params, fresh=args.fresh, data=args.data, sources=args.sources,
                    publish_results=args.publish, command=command, sets=args.sets,
                )  # fmt: skip
            return 0
        if args.stage == "compare":
            from tlstudy import compare, profile

            print(compare.run(profile.tool_argv("dvc"), args.metric, args.dvc_args))
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
        elif args.stage == "pretrain":
            from tlstudy import pretrain

            pretrain.run(params, args.backbone)
        elif args.stage == "train":
            from tlstudy import train

            train.run(params, args.part)
        elif args.stage == "evaluate":
            from tlstudy import evaluate

            evaluate.run(params, args.part)
        elif args.stage == "bench":
            _bench(params, args)
    except (P.ParamsError, DataError, DownloadError, FetchError, WeightsError, FileNotFoundError, DiskFullError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # A full disk met by a write that does not go through atomic.replacing (a library's own
        # file, say) is still the user's to fix, not a bug: one line, not a traceback.
        full = out_of_space(exc)
        if full is None:
            raise
        print(f"error: {disk_full(None, full, left='the file it was writing may be incomplete')}", file=sys.stderr)
        return 2
    return 0


def _bench(params: dict, args: argparse.Namespace) -> None:
    from tlstudy import bench, engine
    from tlstudy import params as P

    d = bench.defaults(engine.device())
    configs = []
    for case in args.configs.split(","):
        name, _, opt = case.partition("/")
        if name not in params["augmentations"] or opt not in P.OPTIMIZERS:
            raise P.ParamsError(
                f"bench --configs: {case!r} is not variant/optimizer with a variant under 'augmentations' "
                f"in {args.params} and an optimizer in {', '.join(P.OPTIMIZERS)}"
            )
        configs.append((name, opt, params["augmentations"][name]))
    source = args.data
    if source is None and params["data"]["source"] != "synthetic" and Path(params["data"]["path"]).is_dir():
        source = Path(params["data"]["path"])
    if source is not None and not source.is_dir():
        raise FileNotFoundError(f"bench --data: {source} is not a folder of class folders of JPEGs")
    pick = lambda value, key: d[key] if value is None else value  # noqa: E731
    bench.run(
        source, pick(args.size, "size"), pick(args.per_class, "per_class"), pick(args.val_per_class, "n_val"),
        args.batch_size or params["batch_size"], pick(args.repeats, "repeats"), pick(args.workers, "workers"),
        pick(args.head_epochs, "head_epochs"), configs, args.out, params["precision"], layout_sizes(args.layout_sizes),
    )  # fmt: skip


def layout_sizes(text: str) -> tuple[int, ...]:
    from tlstudy import params as P

    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise P.ParamsError(f"bench --layout-sizes: {text!r} is not a comma-separated list of pixel sizes") from None
