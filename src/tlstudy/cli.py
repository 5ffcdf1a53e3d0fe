"""`python -m tlstudy <command>`: the tools — demo, profile, compare, bench — and, for a person
typing them, the stages of dvc.yaml (which runs them as `python -m tlstudy.stage …`, so that no
stage depends on this file: see stage.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tlstudy import stage
from tlstudy.tools import exp_queue


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tlstudy",
        description="Stages of the transfer-learning study (run them through `dvc repro`).",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    sub = p.add_subparsers(dest="stage", required=True, metavar="COMMAND")
    # The stages, as dvc.yaml runs them (`python -m tlstudy.stage …`), for a person typing them.
    stage.add_parsers(sub)
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
        "--cpu-sizes",
        default="64,227",
        help="image sizes of the CPU cases, fp32/bf16 x default/channels_last (default: %(default)s; '' skips them)",
    )
    b.add_argument("--out", type=Path, default=Path("metrics/bench.json"), help="default: %(default)s")
    c = sub.add_parser(
        "compare", help="every part's test accuracy across experiments, a column each (dvc exp show, turned around)"
    )
    c.add_argument("--metric", default="test_acc", help="the metric of each group to show (default: %(default)s)")
    c.add_argument("--rev", action="append", help="a baseline revision, as dvc exp show --rev (repeatable)")
    c.add_argument("-n", "--num", type=int, default=1, help="experiments of the last N commits (default: %(default)s)")
    c.add_argument("-A", "--all", action="store_true", help="every commit of the history (dvc.api.exp_show num=-1)")
    exp_queue.add_parser(sub)
    # Listed for --help only: main() hands `slurm …` to tlstudy.tools.slurm, which no stage imports.
    sub.add_parser("slurm", help="run the pipeline as Slurm jobs, a part per job (slurm submit | slurm status)")
    d = sub.add_parser("demo", help="the demo profile on synthetic data, rebuilt in demo/ (make demo)")
    d.add_argument("--dir", default="demo", help="workspace to rebuild (default: %(default)s)")
    r = sub.add_parser("profile", help="run a profile (profiles/<name>.yaml over params.yaml) in its own workspace")
    r.add_argument("name", help="a profile under profiles/ (demo, offline) or an overlay file")
    r.add_argument("--dir", help="workspace (default: work/profiles/<name>); an existing one continues")
    r.add_argument("--fresh", action="store_true", help="rebuild the workspace from scratch")
    r.add_argument(
        "--data", type=Path, help="PACS folder of the target domain (data.domain), linked in at data.path (no download)"
    )
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
        from tlstudy.tools.slurm import main as slurm

        return slurm(argv[1:])
    args = _parser().parse_args(argv)
    if args.stage in stage.MODULES:
        return stage.run(args)
    from tlstudy.lib.errors import StudyError

    try:
        if args.stage == "demo":
            from tlstudy.tools import profile

            profile.run("demo", args.dir, args.params, fresh=True)
        elif args.stage == "profile":
            from tlstudy.tools import profile

            command = "python -m tlstudy " + " ".join(argv if argv is not None else sys.argv[1:])
            profile.run(
                args.name, args.dir, args.params, fresh=args.fresh, data=args.data, sources=args.sources,
                publish_results=args.publish, command=command, sets=args.sets,
            )  # fmt: skip
        elif args.stage == "compare":
            from tlstudy.tools import compare

            print(compare.run(args.metric, args.rev, -1 if args.all else args.num))
        elif args.stage == "queue":
            return exp_queue.serve(args.jobs)
        elif args.stage == "bench":
            from tlstudy import params as P

            _bench(P.load(args.params), args)
    except (StudyError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _bench(params: dict, args: argparse.Namespace) -> None:
    from tlstudy import params as P
    from tlstudy.tools import bench
    from tlstudy.training import engine

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
        pick(args.head_epochs, "head_epochs"), configs, args.out, params["precision"], cpu_sizes(args.cpu_sizes),
    )  # fmt: skip


def cpu_sizes(text: str) -> tuple[int, ...]:
    from tlstudy import params as P

    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise P.ParamsError(f"bench --cpu-sizes: {text!r} is not a comma-separated list of pixel sizes") from None
