"""Stage `fetch`: get the images (PACS download, a local folder or synthetic), split them into
the manifest and decode them once into the cache.

PACS comes from a pinned public copy: its target domain (`data.domain`) is downloaded and unpacked
into `data.path` by tlstudy.data.pacs, whose route (official lists; official lists, matched by name;
derived) is the split's provenance; a domain whose official lists the package lacks (all but
cartoon) is split here, seeded and stratified by class. Anything but the official lists is
printed as a warning. The provenance is recorded in `metrics/data.json` (the label alone) and in
`details/data.json` (with the domain, the rule and the counts). A folder that is already complete
(for example after `dvc pull data.dvc`) is used as it is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tlstudy import params as P
from tlstudy.data import images as D
from tlstudy.data import synthetic
from tlstudy.data.download import sha256_of
from tlstudy.data.pacs import get_pacs, warn_provenance
from tlstudy.data.pacs_splits import (
    BY_NAME,
    DERIVED,
    OFFICIAL,
    describe_split,
    domain_reference,
    has_official_lists,
    read_provenance,
)
from tlstudy.lib.atomic import torch_save, write_json

CACHE = Path("work/images.pt")
MANIFEST = Path("manifest.csv")
SYNTHETIC_ROOT = Path("work/synthetic")
# The split's provenance: the label alone as a metric (one column in `dvc exp show`), the counts
# beside it.
METRIC = Path("metrics/data.json")
DETAILS = Path("details/data.json")
SYNTHETIC = "derived (synthetic demo data)"


def folder_provenance(root: Path, domain: str) -> dict:
    """How the split of the folder `root` (images of `domain`) came about: its provenance file
    where fetch wrote one; else split lists naming the official images with their official bytes
    are the official split."""
    recorded = read_provenance(root)
    if recorded is not None:
        return recorded
    if D.find_split_lists(root) is None:
        return {"split": DERIVED, "how": f"no split lists in {root / 'splits'}: a seeded split by data.test_fraction"}
    ref = domain_reference(domain)
    if not has_official_lists(ref) or not all((root / r["path"]).is_file() for r in ref):
        return {"split": OFFICIAL, "how": f"the split lists in {root / 'splits'}"}
    n_sha = sum(sha256_of(root / r["path"]) == r["sha256"] for r in ref)
    prov = {"split": OFFICIAL if n_sha == len(ref) else BY_NAME, "domain": domain, "official_images": len(ref)}
    prov |= {"matched_by_sha256": n_sha, "matched_by_name": len(ref) - n_sha, "images": len(ref)}
    return prov | {"how": describe_split(prov)}


def record_provenance(prov: dict, source: str, root: Path, domain: str) -> None:
    """metrics/data.json: the label alone (one column in `dvc exp show`); details/data.json: all of
    it, with the target domain."""
    write_json(METRIC, {"split": prov["split"]})
    write_json(DETAILS, {**prov, "domain": domain, "source": source, "path": str(root)})


def provenance(details: Path = DETAILS, metric: Path = METRIC) -> dict | None:
    """The split's provenance as the fetch stage last recorded it, for the top of the report:
    `split` (the label), the counts where known and `text`, one sentence to print; None where
    fetch has not recorded one."""
    for path in (details, metric):
        if path.is_file():
            prov = json.loads(path.read_text())
            prov["text"] = f"Split: {prov['split']}" + (f" — {prov['how']}." if prov.get("how") else ".")
            return prov
    return None


# --- the stage -----------------------------------------------------------------------------------


def source_root(params: dict) -> Path:
    cfg = params["data"]
    if cfg["source"] == "synthetic":
        # Refused here, before images of that size are drawn, as build_cache would refuse them.
        D.check_decoding_fits(cfg["synthetic_per_class"] * len(synthetic.CLASSES), cfg["image_size"])
        shutil.rmtree(SYNTHETIC_ROOT, ignore_errors=True)
        size = max(64, cfg["image_size"])
        return synthetic.generate(SYNTHETIC_ROOT, cfg["synthetic_per_class"], size, params["seed"])
    if cfg["source"] == "pacs":
        return get_pacs(params)
    return P.data_path(params)


def run(params: dict) -> None:
    cfg = params["data"]
    domain = P.target_domain(params)
    root = source_root(params)
    if cfg["source"] == "synthetic":
        prov = {"split": SYNTHETIC, "how": "the demo's generated images, split by data.test_fraction"}
    else:
        prov = folder_provenance(root, domain)
        # PACS without its official split; a folder of one's own without lists is split as documented.
        if prov["split"] != OFFICIAL and "official_images" in prov:
            warn_provenance(f"split {prov['split']!r}", prov["how"])
    classes, entries = D.scan(root)
    cache, bad = D.build_cache(root, entries, classes, cfg["image_size"], cfg.get("on_bad_image", "error"))
    for e, why in bad:
        print(f"fetch: warning: skipped {D.readable(root / e.path)}: {why}")
    D.assign_split(
        entries,
        root,
        seed=params["seed"],
        val_fraction=cfg["val_fraction"],
        test_fraction=cfg["test_fraction"],
        fewshot_per_class=params["fewshot"]["per_class"],
    )
    torch_save(CACHE, cache)
    D.write_manifest(MANIFEST, entries)
    if D.find_split_lists(root) is None:
        # The rule assign_split applied, with the values it applied it with.
        prov = {**prov, "seed": params["seed"], "test_fraction": cfg["test_fraction"]}
    record_provenance(prov, cfg["source"], root, domain)
    counts = {
        s: {r: sum(getattr(e, s) == r for e in entries) for r in ("train", "val", "test")} for s in ("full", "fewshot")
    }
    print(
        f"fetch: {len(cache['paths'])} images, {len(classes)} classes at "
        f"{cfg['image_size']} px from {root}; full {counts['full']}, fewshot {counts['fewshot']}; "
        f"split: {prov['split']}; target domain: {domain}"
    )
