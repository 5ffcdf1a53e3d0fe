"""Unpacking a PACS archive (tlstudy.data.pacs_rows reads it) into a folder that appears whole or not at
all, its rows matched to the official images (tlstudy.data.pacs_splits: resources/pacs_cartoon.csv,
pacs_sources.csv).

The target domain (params `data.domain`) becomes `<class>/<file>`, by the first route the archive
allows (the route is the split's provenance):

1. `official lists`: every official image of the domain found by the sha256 of its bytes, under
   its official name, with the official lists;
2. `official lists, matched by name`: the rest found by what the archive says of a row: the
   domain, class from `label`, the basename of `image.path` an official `<class>/<file>` (the
   same images, re-encoded: the split is the official one, the pixels are not the reference's);
3. `derived`: otherwise, the archive's own rows of the domain by their domain and label columns,
   split seeded and stratified with the official number of crossval images per class.

Only cartoon's official lists ship with the package: another domain is unpacked under its official
names where the archive gives every one (else named from its columns) with no split lists, and
fetch splits it seeded and stratified (`derived`, said in its provenance). Every route but 1 leaves
`<folder>/provenance.json`, which names the domain; a folder without one proves route 1 by its
bytes, so data.dvc pins the same tree as ever. Pretraining's source domains become
`<domain>/<class>/<file>`, under their official names where the archive gives every one, else
named from its columns, with a provenance.json that also marks the folder complete.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tlstudy.data import images as D
from tlstudy.data.pacs_rows import PACS_CLASSES, ArchiveError, read_rows
from tlstudy.data.pacs_splits import (
    BY_NAME,
    DERIVED,
    DERIVED_SEED,
    OFFICIAL,
    PROVENANCE_FILE,
    derive_split_lists,
    describe_split,
    domain_reference,
    has_official_lists,
    json_bytes,
    read_provenance,
    reference,
    write_file,
    write_pacs_split_lists,
)
from tlstudy.lib.atomic import disk_full, out_of_space


def _recorded_domain(root: Path) -> str:
    """The domain a folder's provenance file names; one written before data.domain existed (or
    one fetch will refuse as unreadable) was cartoon's."""
    try:
        recorded = json.loads((root / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        return "cartoon"
    return recorded.get("domain", "cartoon") if isinstance(recorded, dict) else "cartoon"


def pacs_complete(root: Path, domain: str = "cartoon") -> bool:
    """`domain`'s images under `root` as this module unpacks them: split lists whose every file
    is there, made by this module (its provenance file, naming the domain) or naming every
    official image (a folder from the official route, or from before provenance files); for a
    domain without official lists, as many images as its provenance file counted."""
    if (root / PROVENANCE_FILE).is_file() and _recorded_domain(root) != domain:
        return False
    lists = D.find_split_lists(root)
    if lists is None:
        recorded = read_provenance(root) if (root / PROVENANCE_FILE).is_file() else None
        return recorded is not None and recorded.get("images") == _count_images(root)
    try:
        named = [n for p in lists for n in D.read_split_list(p)]
    except (OSError, D.DataError):
        return False
    if not named or not all((root / n).is_file() for n in named):
        return False
    return (root / PROVENANCE_FILE).is_file() or all((root / r["path"]).is_file() for r in domain_reference(domain))


# --- unpacking -----------------------------------------------------------------------------------


@contextmanager
def _unpacking(root: Path, archive: Path):
    """A staging folder beside `root` that becomes `root` only when complete; removed on any failure."""
    staging = root.with_name(root.name + ".unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield staging
        shutil.rmtree(staging / ".held", ignore_errors=True)
        if root.is_symlink():
            # A folder a profile linked in (another target's sources, say): the link goes, what it
            # points at stays as it is.
            root.unlink()
        elif root.exists():
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
    for row in read_rows(archive):
        rows[row.domain] += 1
        rel = next((p for p in by_sha.get(hashlib.sha256(row.blob).hexdigest(), []) if p not in found), None)
        if rel is not None:
            write_file(staging / rel, row.blob)
            found[rel] = "sha256"
        elif row.domain in domains:
            path = staging / ".held" / f"{row.index:06d}"
            write_file(path, row.blob)
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


def unpack_pacs(archive: Path, root: Path, hint: str = "", domain: str = "cartoon") -> dict:
    """The archive's images of `domain` under `root`, with split lists where the package has the
    domain's official ones, by the first route that the archive allows (see the module's
    docstring); returns the split's provenance. `hint`, what to do instead, ends the error for an
    archive that is not PACS."""
    ref = domain_reference(domain)
    lists = has_official_lists(ref)
    with _unpacking(root, archive) as staging:
        s = _sort(archive, staging, ref, {domain}, lambda p: (domain, *p.split("/")))
        n_sha = sum(v == "sha256" for v in s.found.values())
        prov = {"official_images": len(ref), "matched_by_sha256": n_sha, "matched_by_name": len(s.found) - n_sha}
        if len(s.found) == len(ref):
            if s.extra:
                print(f"fetch: {len(s.extra)} more {domain} row(s) of {archive} are no official image; left out")
            placed = unlabelled = 0
        else:
            placed = _place(staging, s.extra, lambda h: h.cls)
            unlabelled = len(s.extra) - placed
        held = (
            f"{archive}: holds {n_sha} of the {len(ref)} PACS {domain} images by their bytes and "
            f"{len(s.found) - n_sha} by their names, and {s.rows[domain]} rows of domain {domain} in all"
            + (f" ({unlabelled} without a PACS class in its label column)" if unlabelled else "")
        )
        if lists and len(s.found) == len(ref):
            write_pacs_split_lists(staging, ref, domain)
            prov = {"split": OFFICIAL if n_sha == len(ref) else BY_NAME, **prov, "images": len(ref)}
        elif lists:
            try:
                test = derive_split_lists(staging, ref, domain=domain)
            except ArchiveError as exc:
                raise ArchiveError(f"{held}: {exc}; is it the PACS release?" + (f"\n{hint}" if hint else "")) from exc
            prov |= {"split": DERIVED, "from_archive_columns": placed, "without_class": unlabelled}
            prov |= {"images": len(s.found) + placed, "seed": DERIVED_SEED, "test_images_per_class": test}
        else:
            images = _count_images(staging)
            if images < 2 * len(PACS_CLASSES):
                raise ArchiveError(
                    f"{held}: too few to split ({images}); is it the PACS release?" + (f"\n{hint}" if hint else "")
                )
            prov |= {"split": DERIVED, "from_archive_columns": placed, "without_class": unlabelled, "images": images}
        prov = {"split": prov.pop("split"), "domain": domain, **prov}
        prov["how"] = describe_split(prov)
        if prov["split"] != OFFICIAL:
            write_file(staging / PROVENANCE_FILE, json_bytes(prov))
    return prov


# --- pretraining's source domains ------------------------------------------------------------------

SOURCES_OFFICIAL = "official names"
SOURCES_BY_NAME = "official names, matched by name"
SOURCES_ARCHIVE = "named from the archive's columns"


def _count_files(folder: Path) -> int:
    return sum(p.is_file() for p in folder.rglob("*")) if folder.is_dir() else 0


def _count_images(root: Path) -> int:
    """Files in the class folders of an unpacked domain (its split lists and provenance aside)."""
    return sum(_count_files(root / c) for c in PACS_CLASSES)


def _source_reference(domains: list[str] | None) -> list[dict]:
    ref = reference("pacs_sources.csv")
    if domains is None:
        return ref
    # Cartoon is a source where another domain is the target; its official images are in pacs_cartoon.csv.
    cartoon = [{**r, "path": f"cartoon/{r['path']}"} for r in domain_reference("cartoon")] * ("cartoon" in domains)
    return [r for r in ref if r["path"].split("/")[0] in domains] + cartoon


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
        write_file(staging / PROVENANCE_FILE, json_bytes(prov))
    return prov
