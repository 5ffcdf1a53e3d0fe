"""The `variants` stage: each part's augmentation variants, as params.yaml defines them, in
work/variants/<part>.yaml — the params file its train and evaluate stages depend on instead of
the whole `augmentations` map, so a variant added to params.yaml re-runs only the parts that
train with it (`augment: all`, or a list naming it).

DVC cannot template this itself: a params key per variant would need a list (a part's `augment`
may be a list or `all`) where dvc.yaml's templating interpolates scalars only. This stage runs in
a second and rewrites every file; a part's stages re-run only when its file's content changed.
"""

from __future__ import annotations

from pathlib import Path

from tlstudy import params as P
from tlstudy.lib import yamlio
from tlstudy.lib.atomic import write_text

ROOT = Path("work/variants")


def specs(params: dict, part: str) -> dict[str, list]:
    """A part's variants by name, each with its transform list: what training reads of them."""
    return {v: params["augmentations"][v] for v in P.part(params, part).variants}


def run(params: dict) -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    parts = P.all_parts(params)
    for part in parts:
        write_text(ROOT / f"{part}.yaml", yamlio.dump(specs(params, part)))
    for old in ROOT.glob("*.yaml"):  # a part no longer declared (DVC removes them itself)
        if old.stem not in parts:
            old.unlink()
    print(f"variants: the augmentation variants of {len(parts)} parts in {ROOT}/")
