"""The PACS archive, the Hugging Face parquet (columns image{bytes, path}, domain, label) or a zip
of the original release, unpacked into a folder that appears whole or not at all, its rows
matched to the official images (resources/pacs_cartoon.csv, pacs_sources.csv).

The cartoon domain becomes `<class>/<file>` with split lists, by the first route the archive
allows (the route is the split's provenance):

1. `official lists`: every official cartoon image found by the sha256 of its bytes, under its
   official name, with the official lists;
2. `official lists, matched by name`: the rest found by what the archive says of a row: domain
   cartoon, class from `label`, the basename of `image.path` an official `<class>/<file>`
   (the same images, re-encoded: the split is the official one, the pixels are not the reference's);
3. `derived`: otherwise, the archive's own cartoon rows by their domain and label columns, split
   seeded and stratified with the official number of crossval images per class.

Routes 2 and 3 leave `<folder>/provenance.json`; a folder without one proves route 1 by its
bytes, so data.dvc pins the same tree as ever. Pretraining's source domains become
`<domain>/<class>/<file>`, under their official names where the archive gives every one, else
named from its columns, with a provenance.json that also marks the folder complete.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import json
import re
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from tlstudy import data as D
from tlstudy.atomic import disk_full, out_of_space
from tlstudy.errors import StudyError

PROVENANCE_FILE = "provenance.json"  # in an unpacked folder: how it was made
OFFICIAL = "official lists"
BY_NAME = "official lists, matched by name"
DERIVED = "derived"
# A constant, not params' seed: the unpacked folder is pinned by data.dvc and shared, so it must
# depend on the archive alone.
DERIVED_SEED = 0
# PACS's classes and domains in the order the Hugging Face copy numbers them (its ClassLabel),
# for an archive whose integer columns come without their names.
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")


class ArchiveError(StudyError, RuntimeError):
    """An archive that is not the PACS release, or an unpacked folder whose provenance is unreadable."""


def reference(name: str = "pacs_cartoon.csv") -> list[dict]:
    """Official images of PACS, path and sha256 of the file's bytes: the 2,344 cartoon ones (with
    their official subset) or, in pacs_sources.csv, the 7,647 of the three other domains."""
    text = resources.files("tlstudy.resources").joinpath(name).read_text()
    return list(csv.DictReader(io.StringIO(text)))


def pacs_reference() -> list[dict]:
    return reference("pacs_cartoon.csv")


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


def pacs_complete(root: Path) -> bool:
    """Split lists whose every file is there, made by this module (its provenance file) or naming
    every official image (a folder from the official route, or from before provenance files)."""
    lists = D.find_split_lists(root)
    if lists is None:
        return False
    try:
        named = [n for p in lists for n in D.read_split_list(p)]
    except (OSError, D.DataError):
        return False
    if not named or not all((root / n).is_file() for n in named):
        return False
    return (root / PROVENANCE_FILE).is_file() or all((root / r["path"]).is_file() for r in pacs_reference())


def write_pacs_split_lists(root: Path, reference: list[dict]) -> None:
    classes = sorted({r["path"].split("/")[0] for r in reference})
    for subset in ("train", "crossval"):
        lines = [
            f"cartoon/{r['path']} {classes.index(r['path'].split('/')[0]) + 1}\n"
            for r in reference
            if r["official_subset"] == subset
        ]
        _write(root / "splits" / f"cartoon_{subset}_kfold.txt", "".join(lines).encode())


# --- reading an archive ------------------------------------------------------------------------


@dataclass
class Row:
    """One image of an archive and what the archive says of it."""

    index: int
    name: str  # the basename it gives the image; "" where it gives none
    domain: str | None
    cls: str | None  # one of PACS_CLASSES, or None where the archive gives no usable class
    blob: bytes


def _word(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip().lower().replace(" ", "_").replace("-", "_")


def _column_names(schema, column: str) -> list[str] | None:
    """The names a Hugging Face ClassLabel column gives its integers (the file's metadata)."""
    meta = (schema.metadata or {}).get(b"huggingface")
    try:
        feature = json.loads(meta)["info"]["features"][column]
        names = feature["names"] if feature.get("_type") == "ClassLabel" else None
    except (TypeError, ValueError, KeyError):
        return None
    return [_word(n) for n in names] if isinstance(names, list) else None


def _named(value, names: list[str] | tuple[str, ...]) -> str | None:
    """A column's value as a name: an integer indexes `names`, a string is the name itself."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return names[value] if 0 <= value < len(names) else None
    word = _word(value)
    if word.isdigit():  # a label stored as the text of its number
        return _named(int(word), names)
    return word or None


def _rows(archive: Path) -> Iterator[Row]:
    """Every image of a PACS archive: the HF parquet (columns image{bytes, path}, domain, label)
    or a zip of the release (`<domain>/<class>/<file>` names)."""
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            for index, name in enumerate(n for n in z.namelist() if D.is_image_name(Path(n).name)):
                parts = name.split("/")
                cls = _word(parts[-2]) if len(parts) >= 3 else None
                cls = cls if cls in PACS_CLASSES else None
                domain = _word(parts[-3]) if cls else None
                yield Row(index, parts[-1], domain, cls, z.read(name))
        return
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(archive)
    present = pf.schema_arrow.names
    if "image" not in present:
        raise ArchiveError(f"{archive}: no 'image' column (columns: {', '.join(present)}); is it the PACS parquet?")
    columns = [c for c in ("image", "domain", "label") if c in present]
    class_names = _column_names(pf.schema_arrow, "label") or PACS_CLASSES
    domain_names = _column_names(pf.schema_arrow, "domain") or PACS_DOMAINS
    index = 0
    for batch in pf.iter_batches(batch_size=256, columns=columns):
        cols = {c: batch.column(c).to_pylist() for c in columns}
        for i, image in enumerate(cols["image"]):
            blob, path = (image.get("bytes"), image.get("path")) if isinstance(image, dict) else (image, None)
            if blob:
                domain = _named(cols["domain"][i], domain_names) if "domain" in cols else None
                cls = _named(cols["label"][i], class_names) if "label" in cols else None
                name = re.split(r"[/\\]", path)[-1] if path else ""
                yield Row(index, name, domain, cls if cls in PACS_CLASSES else None, blob)
            index += 1


# --- unpacking -----------------------------------------------------------------------------------


def _json(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def _write(path: Path, blob: bytes) -> None:
    """A file of the staging folder: plain writes (the folder appears whole by one rename), so
    that its files keep the usual permissions rather than a temp file's 0600."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    except OSError as exc:
        exc.filename = exc.filename or str(path)  # for the disk-full message: write() errors name no file
        raise


@contextmanager
def _unpacking(root: Path, archive: Path):
    """A staging folder beside `root` that becomes `root` only when complete; removed on any failure."""
    staging = root.with_name(root.name + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield staging
        shutil.rmtree(staging / ".held", ignore_errors=True)
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        full = out_of_space(exc)
        if full is not None:
            # After the removal, so that the free space it reports is what is left.
            raise disk_full(
                full.filename or staging,
                full,
                left="the half-unpacked folder was removed",
                then=f"run the same command again (the download is kept in {archive.parent})",
                doing=f", unpacking the archive into {root}",
            ) from exc
        raise


@dataclass
class Held:
    """A row of a wanted domain that matched no official image by its bytes, kept aside on disk."""

    index: int
    name: str
    domain: str | None
    cls: str | None
    head: bytes
    path: Path


@dataclass
class Sorted:
    found: dict[str, str]  # official path -> "sha256" or "name"
    extra: list[Held]  # rows of the wanted domains that are no official image
    rows: collections.Counter  # rows per domain in the archive


def _sort(archive: Path, staging: Path, ref: list[dict], domains: set[str], key_of) -> Sorted:
    """Write the archive's official images under their official names: by sha256, then by
    (domain, class, file name) = key_of(official path); keep the other rows of `domains` aside."""
    by_sha = collections.defaultdict(list)
    for r in ref:
        by_sha[r["sha256"]].append(r["path"])
    by_key = {key_of(r["path"]): r["path"] for r in ref}
    found: dict[str, str] = {}
    held: list[Held] = []
    rows: collections.Counter = collections.Counter()
    for row in _rows(archive):
        rows[row.domain] += 1
        rel = next((p for p in by_sha.get(hashlib.sha256(row.blob).hexdigest(), []) if p not in found), None)
        if rel is not None:
            _write(staging / rel, row.blob)
            found[rel] = "sha256"
        elif row.domain in domains:
            path = staging / ".held" / f"{row.index:06d}"
            _write(path, row.blob)
            held.append(Held(row.index, row.name, row.domain, row.cls, row.blob[:8], path))
    extra = []
    # By name only after every row was read: an image found by its bytes later in the archive
    # takes its name before a look-alike does.
    for h in held:
        rel = by_key.get((h.domain, h.cls, h.name)) if h.name and h.cls else None
        if rel is not None and rel not in found:
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            h.path.rename(staging / rel)
            found[rel] = "name"
        else:
            extra.append(h)
    return Sorted(found, extra, rows)


SUFFIX_BY_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"BM", ".bmp"))


def _place(staging: Path, held: list[Held], folder_of) -> int:
    """Move rows kept aside to `folder_of(row)/<name>`: the archive's file name where it is unique
    and safe, else one from the row's index (stable for the same archive). Rows without a class
    are left out; returns how many were placed."""
    usable = [h for h in held if h.cls is not None]
    groups = collections.defaultdict(list)
    for h in usable:
        groups[folder_of(h)].append(h)
    for folder, members in groups.items():
        safe = [h.name if re.fullmatch(r"[\w][\w.\- ]*", h.name or "") else "" for h in members]
        counts = collections.Counter(safe)
        for h, name in zip(members, safe):
            target = staging / folder / name if name and counts[name] == 1 else None
            if target is None or target.exists():
                suffix = next((s for magic, s in SUFFIX_BY_MAGIC if h.head.startswith(magic)), ".bin")
                target = staging / folder / f"archive_row_{h.index:06d}{suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            h.path.rename(target)
    return len(usable)


def derive_split_lists(root: Path, ref: list[dict], seed: int = DERIVED_SEED) -> dict[str, int]:
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
        lines = [f"cartoon/{p} {classes.index(c) + 1}\n" for c in classes for p in members[c] if (p in test) == keep]
        _write(root / "splits" / f"cartoon_{subset}_kfold.txt", "".join(lines).encode())
    return {c: need[c] for c in classes}


def describe_split(prov: dict) -> str:
    """One sentence on how the split of `prov` came about, for the warning and the report."""
    n, sha, name = prov.get("official_images"), prov.get("matched_by_sha256", 0), prov.get("matched_by_name", 0)
    if prov["split"] == OFFICIAL:
        return f"all {n:,} official PACS cartoon images, found by the sha256 of their bytes; the official split lists"
    if prov["split"] == BY_NAME:
        return (
            f"the official split lists; of the {n:,} official images {sha:,} found by their bytes and {name:,} by the "
            "archive's domain, label and file name only (re-encoded: their pixels are not the reference copy's)"
        )
    return (
        f"NOT the official split: of the {n:,} official images the archive gave {sha:,} by their bytes and {name:,} "
        f"by name, so the split lists are derived from its {prov['images']:,} cartoon images by their domain and "
        f"label columns, seeded (seed {prov['seed']}) and stratified with the official number of test images per "
        f"class ({sum(prov['test_images_per_class'].values()):,}); accuracies are not comparable image for image "
        "with results on the official split"
    )


def unpack_pacs(archive: Path, root: Path, hint: str = "") -> dict:
    """The archive's cartoon images under `root` with split lists, by the first route that the
    archive allows (see the module's docstring); returns the split's provenance. `hint`, what to
    do instead, ends the error for an archive that is not PACS."""
    ref = pacs_reference()
    with _unpacking(root, archive) as staging:
        s = _sort(archive, staging, ref, {"cartoon"}, lambda p: ("cartoon", *p.split("/")))
        n_sha = sum(v == "sha256" for v in s.found.values())
        prov = {"official_images": len(ref), "matched_by_sha256": n_sha, "matched_by_name": len(s.found) - n_sha}
        if len(s.found) == len(ref):
            if s.extra:
                print(f"fetch: {len(s.extra)} more cartoon row(s) of {archive} are no official image; left out")
            write_pacs_split_lists(staging, ref)
            prov = {"split": OFFICIAL if n_sha == len(ref) else BY_NAME, **prov, "images": len(ref)}
        else:
            placed = _place(staging, s.extra, lambda h: h.cls)
            unlabelled = len(s.extra) - placed
            held = (
                f"{archive}: holds {n_sha} of the {len(ref)} PACS cartoon images by their bytes and "
                f"{len(s.found) - n_sha} by their names, and {s.rows['cartoon']} rows of domain cartoon in all"
                + (f" ({unlabelled} without a PACS class in its label column)" if unlabelled else "")
            )
            try:
                test = derive_split_lists(staging, ref)
            except ArchiveError as exc:
                raise ArchiveError(f"{held}: {exc}; is it the PACS release?" + (f"\n{hint}" if hint else "")) from exc
            prov |= {"split": DERIVED, "from_archive_columns": placed, "without_class": unlabelled}
            prov |= {"images": len(s.found) + placed, "seed": DERIVED_SEED, "test_images_per_class": test}
        prov = {"split": prov.pop("split"), **prov}
        prov["how"] = describe_split(prov)
        if prov["split"] != OFFICIAL:
            _write(staging / PROVENANCE_FILE, _json(prov))
    return prov


# --- pretraining's source domains ------------------------------------------------------------------

SOURCES_OFFICIAL = "official names"
SOURCES_BY_NAME = "official names, matched by name"
SOURCES_ARCHIVE = "named from the archive's columns"


def _count_files(folder: Path) -> int:
    return sum(p.is_file() for p in folder.rglob("*")) if folder.is_dir() else 0


def _source_reference(domains: list[str] | None) -> list[dict]:
    ref = reference("pacs_sources.csv")
    return ref if domains is None else [r for r in ref if r["path"].split("/")[0] in domains]


def sources_complete(root: Path, domains: list[str] | None = None) -> bool:
    """`root` holds `domains` (default: all three): as its provenance file counted them when
    fetch unpacked them, or, in a folder without one, every official image of them."""
    try:
        recorded = read_provenance(root)
    except ArchiveError:
        return False  # unpacked anew
    if recorded is not None and isinstance(recorded.get("files"), dict):
        files = recorded["files"]
        wanted = domains if domains is not None else list(files)
        return bool(wanted) and all(d in files and _count_files(root / d) == files[d] for d in wanted)
    ref = _source_reference(domains)
    return bool(ref) and all((root / r["path"]).is_file() for r in ref)


def unpack_sources(archive: Path, root: Path, domains: list[str], hint: str = "") -> dict:
    """The images of `domains` under `root/<domain>/<class>/`: under their official names where
    the archive gives every official image (by bytes, then by name), else every row of those
    domains by its domain and label columns, named from the archive; returns the provenance,
    also written to root/provenance.json (which marks the folder complete); `hint` as above."""
    domains = list(domains)
    ref = _source_reference(domains)
    with _unpacking(root, archive) as staging:
        s = _sort(archive, staging, ref, set(domains), lambda p: tuple(p.split("/")))
        n_sha = sum(v == "sha256" for v in s.found.values())
        placed = 0
        if ref and len(s.found) == len(ref):
            names = SOURCES_OFFICIAL if n_sha == len(ref) else SOURCES_BY_NAME
        else:
            placed = _place(staging, s.extra, lambda h: f"{h.domain}/{h.cls}")
            names = SOURCES_ARCHIVE
        files = {d: _count_files(staging / d) for d in domains}
        empty = [d for d in domains if not files[d]]
        if empty:
            held = ", ".join(f"{d}: {n}" for d, n in sorted(s.rows.items(), key=str))
            raise ArchiveError(
                f"{archive}: no images of domain {', '.join(empty)} (its rows by domain: {held}); "
                "name domains it holds in pretrain.<name>.domains" + (f"\n{hint}" if hint else "")
            )
        prov = {"names": names, "domains": domains, "files": files, "official_images": len(ref)}
        prov |= {"matched_by_sha256": n_sha, "matched_by_name": len(s.found) - n_sha, "from_archive_columns": placed}
        prov["without_class"] = len(s.extra) - placed if names == SOURCES_ARCHIVE else 0
        _write(staging / PROVENANCE_FILE, _json(prov))
    return prov
