"""`python -m tlstudy.stage <stage> [--part P | --backbone B]`: what every dvc.yaml stage runs.

It imports the one module its stage needs (MODULES) and nothing else of the package, so that a
stage's code is that module's import closure: the files DVC hashes as the stage's deps and the
resume fingerprint hashes (deps.py derives them; a test checks dvc.yaml against them). The tools
— demo, profile, compare, bench, slurm … — live in cli.py, which no stage imports: changing a
tool never re-runs a stage. `python -m tlstudy <stage>` runs the same code for a person typing it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from tlstudy.lib.atomic import disk_full, out_of_space
from tlstudy.lib.errors import StudyError

# Stage command -> its module under tlstudy; dvc.yaml's transfer / evaluate_transfer stages run
# the train / evaluate commands on the parts under `transfer`.
MODULES = {
    "inspect": "stages.inspect_model",
    "fetch": "stages.fetch",
    "stats": "stages.stats",
    "variants": "stages.variants",
    "pretrain": "stages.pretrain",
    "train": "stages.train",
    "evaluate": "stages.evaluate",
    "report": "stages.report",
}
# The stages that build augmentation variants, so that a variant torchvision refuses stops them
# before any work; the others check each variant's steps by name only, and the ones that need no
# torchvision (fetch, stats, report) then never import it: about 1.5 s a stage.
BUILDS_TRANSFORMS = {"variants", "pretrain", "train"}
HELP = {
    "inspect": "study part 1: SqueezeNet 1.0 on the Samoyed photo",
    "fetch": "get the images, write manifest.csv and the decoded cache",
    "stats": "per-channel mean and std of the training images",
    "variants": "write each part's augmentation variants to work/variants/<part>.yaml",
    "pretrain": "pretrain a backbone on PACS's other domains",
    "train": "train a part's grid of runs and keep its selected models",
    "evaluate": "test a part's selected models; write its metrics and predictions",
    "report": "regenerate report/ from the metrics and plots",
}


def add_parsers(sub) -> None:
    """The stage sub-commands, on this runner's parser and on cli.py's."""
    for name in MODULES:
        s = sub.add_parser(name, help=HELP[name])
        if name == "pretrain":
            s.add_argument("--backbone", required=True, help="a backbone named under `pretrain` in params.yaml")
        elif name in ("train", "evaluate"):
            s.add_argument("--part", required=True, help="a part named under `parts` or `transfer` in params.yaml")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tlstudy.stage", description="Run one stage of dvc.yaml.")
    p.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    add_parsers(p.add_subparsers(dest="stage", required=True, metavar="STAGE"))
    return p


def run(args: argparse.Namespace) -> int:
    """Run a parsed stage command; a user's error (a StudyError, a missing file, a full disk) is
    one `error:` line and exit status 2, never a traceback."""
    from tlstudy import params as P

    try:
        params = P.load(args.params, transforms=args.stage in BUILDS_TRANSFORMS)
        module = importlib.import_module(f"tlstudy.{MODULES[args.stage]}")
        target = getattr(args, "part", None) or getattr(args, "backbone", None)
        module.run(params, *([target] if target is not None else []))
    except (StudyError, FileNotFoundError) as exc:
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


def main(argv: list[str] | None = None) -> int:
    return run(_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
