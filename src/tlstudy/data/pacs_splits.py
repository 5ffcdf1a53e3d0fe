"""PACS's official images and split lists as the package ships them (resources/pacs_cartoon.csv:
the cartoon images with their official subset; pacs_sources.csv: the other three domains, names
and sha256 only), the split lists an unpacked target domain gets, and the provenance file that
says how its split came about."""

from __future__ import annotations

import collections
import csv
import io
import json
from importlib import resources
from pathlib import Path

import numpy as np

from tlstudy.data.pacs_rows import ArchiveError

PROVENANCE_FILE = "provenance.json"  # in an unpacked folder: how it was made
OFFICIAL = "official lists"
BY_NAME = "official lists, matched by name"
DERIVED = "derived"
# A constant, not params' seed: the unpacked folder is pinned by data.dvc and shared, so it must
# depend on the archive alone.
DERIVED_SEED = 0


def reference(name: str = "pacs_cartoon.csv") -> list[dict]:
    """Official images of PACS, path and sha256 of the file's bytes: the 2,344 cartoon ones (with
    their official subset) or, in pacs_sources.csv, the 7,647 of the three other domains."""
    text = resources.files("tlstudy.resources").joinpath(name).read_text()
    return list(csv.DictReader(io.StringIO(text)))


def pacs_reference() -> list[dict]:
    return reference("pacs_cartoon.csv")


def domain_reference(domain: str) -> list[dict]:
    """A domain's official images as `<class>/<file>` paths; only cartoon's carry their official
    subset (`official_subset`), the one domain whose split lists the package ships."""
    if domain == "cartoon":
        return pacs_reference()
    prefix = f"{domain}/"
    return [
        {"path": r["path"][len(prefix) :], "sha256": r["sha256"]}
        for r in reference("pacs_sources.csv")
        if r["path"].startswith(prefix)
    ]


def has_official_lists(ref: list[dict]) -> bool:
    return bool(ref) and all(r.get("official_subset") for r in ref)


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def write_file(path: Path, blob: bytes) -> None:
    """A file of the staging folder: plain writes (the folder appears whole by one rename), so
    that its files keep the usual permissions rather than a temp file's 0600."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    except OSError as exc:
        exc.filename = exc.filename or str(path)  # for the disk-full message: write() errors name no file
        raise


def read_provenance(root: Path) -> dict | None:
    path = root / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArchiveError(f"{path}: not readable JSON ({exc}); delete it and run fetch again to unpack anew") from exc
    if not isinstance(recorded, dict) or not isinstance(recorded.get("split", recorded.get("names")), str):
        raise ArchiveError(f"{path}: no 'split' (or 'names') label in it; delete it and run fetch again")
    return recorded


def write_pacs_split_lists(root: Path, reference: list[dict], domain: str = "cartoon") -> None:
    classes = sorted({r["path"].split("/")[0] for r in reference})
    for subset in ("train", "crossval"):
        lines = [
            f"{domain}/{r['path']} {classes.index(r['path'].split('/')[0]) + 1}\n"
            for r in reference
            if r["official_subset"] == subset
        ]
        write_file(root / "splits" / f"{domain}_{subset}_kfold.txt", "".join(lines).encode())


def derive_split_lists(
    root: Path, ref: list[dict], seed: int = DERIVED_SEED, domain: str = "cartoon"
) -> dict[str, int]:
    """Split lists for the images under `root` in the official lists' format: per class, as many
    crossval (test) images as the official list has, drawn seeded; the rest train. Returns the
    test images per class."""
    need = collections.Counter(r["path"].split("/")[0] for r in ref if r["official_subset"] == "crossval")
    classes = sorted({r["path"].split("/")[0] for r in ref})
    members = {
        c: sorted(f"{c}/{p.name}" for p in (root / c).iterdir() if p.is_file()) for c in classes if (root / c).is_dir()
    }
    short = [
        f"{c} {len(members.get(c, []))} (needs more than {need[c]})"
        for c in classes
        if len(members.get(c, [])) <= need[c]
    ]
    if short:
        raise ArchiveError(
            "too few images to derive a split with the official number of test images per class: " + ", ".join(short)
        )
    rng = np.random.default_rng([seed, 7])
    test = set()
    for c in classes:
        order = rng.permutation(len(members[c]))
        test |= {members[c][i] for i in order[: need[c]]}
    for subset, keep in (("train", False), ("crossval", True)):
        lines = [f"{domain}/{p} {classes.index(c) + 1}\n" for c in classes for p in members[c] if (p in test) == keep]
        write_file(root / "splits" / f"{domain}_{subset}_kfold.txt", "".join(lines).encode())
    return {c: need[c] for c in classes}


def describe_split(prov: dict) -> str:
    """One sentence on how the split of `prov` came about, for the warning and the report."""
    n, sha, name = prov.get("official_images"), prov.get("matched_by_sha256", 0), prov.get("matched_by_name", 0)
    domain = prov.get("domain", "cartoon")  # provenance written before data.domain was cartoon's
    if prov["split"] == OFFICIAL:
        return f"all {n:,} official PACS {domain} images, found by the sha256 of their bytes; the official split lists"
    if prov["split"] == BY_NAME:
        return (
            f"the official split lists; of the {n:,} official images {sha:,} found by their bytes and {name:,} by the "
            "archive's domain, label and file name only (re-encoded: their pixels are not the reference copy's)"
        )
    if "test_images_per_class" not in prov:  # no lists written: fetch splits the folder (data.assign_split)
        return (
            f"no official split lists for {domain} (the package ships cartoon's alone): its {prov['images']:,} "
            "images are split seeded (params seed) and stratified by class, data.test_fraction of each class for "
            "test; accuracies are not comparable image for image with results on an official split"
        )
    return (
        f"NOT the official split: of the {n:,} official images the archive gave {sha:,} by their bytes and {name:,} "
        f"by name, so the split lists are derived from its {prov['images']:,} {domain} images by their domain and "
        f"label columns, seeded (seed {prov['seed']}) and stratified with the official number of test images per "
        f"class ({sum(prov['test_images_per_class'].values()):,}); accuracies are not comparable image for image "
        "with results on the official split"
    )
