"""Stage `fetch`: get the images (PACS download, a local folder or synthetic), split them into
the manifest and decode them once into the cache.

PACS comes from a pinned public copy (params `data.url`, `data.sha256`) and is unpacked into
`data.path` in the `<class>/<file>.jpg` layout with the official split lists, matched to the
official file names by the sha256 of each JPEG (resources/pacs_cartoon.csv). A folder that is
already complete there (for example after `dvc pull data.dvc`) is used as it is.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
import urllib.parse
import zipfile
from importlib import resources
from pathlib import Path

from tlstudy import data as D
from tlstudy import synthetic
from tlstudy.atomic import torch_save
from tlstudy.download import DownloadError, download, sha256_of

CACHE = Path("work/images.pt")
MANIFEST = Path("manifest.csv")
SYNTHETIC_ROOT = Path("work/synthetic")
# Outside data/, which data.dvc pins; TLSTUDY_DOWNLOADS moves it to a cache that outlives the
# checkout (the container keeps it on its /cache volume).
DOWNLOADS = Path(os.environ.get("TLSTUDY_DOWNLOADS", "work/downloads"))
RETRIES, BACKOFF_S = 5, 2.0
OFFLINE_HINT = (
    "To use a copy you already have, set in params.yaml:\n"
    "  data:\n    source: local\n    path: /path/to/pacs_cartoon   # <class>/<file>.jpg, optional splits/\n"
    "or run `dvc pull data.dvc` from a DVC remote that holds data/, or try the demo: `make demo`."
)


class FetchError(RuntimeError):
    pass


def reference(name: str = "pacs_cartoon.csv") -> list[dict]:
    """Official images of PACS, path and sha256 of the file's bytes: the 2,344 cartoon ones (with
    their official subset) or, in pacs_sources.csv, the 7,647 of the three other domains."""
    text = resources.files("tlstudy.resources").joinpath(name).read_text()
    return list(csv.DictReader(io.StringIO(text)))


def pacs_reference() -> list[dict]:
    return reference("pacs_cartoon.csv")


def pacs_complete(root: Path) -> bool:
    return all((root / r["path"]).is_file() for r in pacs_reference()) and D.find_split_lists(root) is not None


def write_pacs_split_lists(root: Path, reference: list[dict]) -> None:
    classes = sorted({r["path"].split("/")[0] for r in reference})
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for subset in ("train", "crossval"):
        lines = [
            f"cartoon/{r['path']} {classes.index(r['path'].split('/')[0]) + 1}\n"
            for r in reference
            if r["official_subset"] == subset
        ]
        (root / "splits" / f"cartoon_{subset}_kfold.txt").write_text("".join(lines))


def _iter_archive(archive: Path):
    """(name, bytes) of every image in a PACS archive: the HF parquet or a zip of the release."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if Path(name).suffix.lower() in D.IMAGE_SUFFIXES:
                    yield name, z.read(name)
        return
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(archive)
    for batch in pf.iter_batches(batch_size=256, columns=["image"]):
        for image in batch.column("image").to_pylist():
            yield image.get("path") or "", image["bytes"]


def unpack_pacs(archive: Path, root: Path) -> None:
    """Keep the cartoon images whose bytes match the official ones, under their official names."""
    ref = pacs_reference()
    extract(archive, root, ref, "PACS cartoon", lambda staging: write_pacs_split_lists(staging, ref))


def extract(archive: Path, root: Path, ref: list[dict], what: str, finish=None) -> None:
    """Write the archive's images whose sha256 is in `ref` under their reference paths; the
    folder appears complete or not at all."""
    wanted = {r["sha256"]: r["path"] for r in ref}
    staging = root.with_name(root.name + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    found = 0
    for _, blob in _iter_archive(archive):
        rel = wanted.get(hashlib.sha256(blob).hexdigest())
        if rel is None:
            continue
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
        found += 1
    if found < len(wanted):
        shutil.rmtree(staging, ignore_errors=True)
        raise FetchError(
            f"{archive}: holds {found} of the {len(wanted)} {what} images "
            "(matched by sha256 of the image bytes); is it the PACS release?"
        )
    if finish is not None:
        finish(staging)
    if root.exists():
        shutil.rmtree(root)
    staging.rename(root)


def get_pacs(params: dict) -> Path:
    cfg = params["data"]
    root = Path(cfg["path"])
    if pacs_complete(root):
        print(f"fetch: using the PACS cartoon images already in {root}")
        return root
    archive = download_pacs(params, OFFLINE_HINT)
    print(f"fetch: {archive} ({sha256_of(archive)[:12]}…) → {root}")
    unpack_pacs(archive, root)
    return root


def download_pacs(params: dict, hint: str) -> Path:
    """The PACS archive (all four domains) in work/downloads/; a complete one is not fetched again."""
    cfg = params["data"]
    name = Path(urllib.parse.urlparse(cfg["url"]).path).name or "pacs.parquet"
    try:
        return download(cfg["url"], DOWNLOADS / name, cfg.get("sha256"), retries=RETRIES, backoff=BACKOFF_S)
    except DownloadError as exc:
        raise FetchError(f"could not download PACS: {exc}\n{hint}") from exc


SOURCES_HINT = (
    "To use a copy you already have, point the backbone at a folder of <domain>/<class>/<image>:\n"
    "  pretrain:\n    <name>:\n      source: local\n      path: /path/to/pacs_sources\n"
    "or try the demo: `make demo`."
)


def sources_complete(root: Path) -> bool:
    return all((root / r["path"]).is_file() for r in reference("pacs_sources.csv"))


def get_sources(params: dict, root: Path, domains: list[str], stage: str) -> Path:
    """PACS's other domains for pretraining, as <domain>/<class>/<image> under `root`: a complete
    folder there is used as it is, else they are unpacked from the archive fetch downloads."""
    if sources_complete(root):
        print(f"{stage}: using the PACS source domains already in {root}")
        return root
    archive = download_pacs(params, SOURCES_HINT)
    print(f"{stage}: unpacking PACS's other domains from {archive} → {root}")
    extract(archive, root, reference("pacs_sources.csv"), "PACS source-domain")
    return root


def source_root(params: dict) -> Path:
    cfg = params["data"]
    if cfg["source"] == "synthetic":
        shutil.rmtree(SYNTHETIC_ROOT, ignore_errors=True)
        size = max(64, cfg["image_size"])
        return synthetic.generate(SYNTHETIC_ROOT, cfg["synthetic_per_class"], size, params["seed"])
    if cfg["source"] == "pacs":
        return get_pacs(params)
    return Path(cfg["path"])


def run(params: dict) -> None:
    cfg = params["data"]
    root = source_root(params)
    classes, entries = D.scan(root)
    cache, bad = D.build_cache(root, entries, classes, cfg["image_size"], cfg.get("on_bad_image", "error"))
    for e, why in bad:
        print(f"fetch: warning: skipped {root / e.path}: {why}")
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
    counts = {
        s: {r: sum(getattr(e, s) == r for e in entries) for r in ("train", "val", "test")} for s in ("full", "fewshot")
    }
    print(
        f"fetch: {len(cache['paths'])} images, {len(classes)} classes at "
        f"{cfg['image_size']} px from {root}; full {counts['full']}, fewshot {counts['fewshot']}"
    )
