"""The image set: scanning a `<class>/<file>` folder, the seeded split manifest and the
decoded-image cache that training reads instead of JPEGs.

Manifest columns: path, class, full, fewshot, excluded. `full` and `fewshot` hold the image's
role in that subset (train, val, test or empty); `excluded` says why an image is left out.
The manifest and the split lists are UTF-8 whatever the locale; a name that is not UTF-8 is
refused at the scan (see `scan`).
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tlstudy.lib.errors import StudyError

# An image, by name, is what torchvision's ImageFolder accepts: one of its suffixes, in any case,
# and not hidden. What else a folder copied from a desktop holds (Thumbs.db,
# desktop.ini, a README.txt, .DS_Store, macOS's ._pic_001.jpg) is left out and counted in one
# warning, never an error; whether a file named as an image decodes is decided by its content.
# torchvision.datasets.folder.IMG_EXTENSIONS, written out (a test checks they are equal): importing
# torchvision costs every stage that reads images about 1.5 s, and stats needs nothing else of it.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
MANIFEST_COLUMNS = ["path", "class", "full", "fewshot", "excluded"]


class DataError(StudyError, ValueError):
    pass


@dataclass
class Entry:
    path: str  # relative to the data root, `<class>/<file>`
    cls: str
    full: str = ""
    fewshot: str = ""
    excluded: str = ""


# --- scanning and splitting --------------------------------------------------------------


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIXES)


def readable(path) -> str:
    """A path as a person can read it on one line: bytes that are not UTF-8 as \\xNN, control
    characters escaped, any other letter as it is."""
    text = str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _name_problem(name: str) -> str | None:
    """Why `name` (as os.listdir gave it) cannot go into the manifest: "bytes" for bytes that are
    not UTF-8, "locale" for a UTF-8 name that Python decoded otherwise; None if it can."""
    raw = os.fsencode(name)
    try:
        as_utf8 = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes"
    return None if as_utf8 == name else "locale"


def refuse_names(root: Path, names: list[str]) -> None:
    """Refuse, in one line listing them all, names (paths relative to `root`) that are not UTF-8.

    Refused rather than carried: the manifest (CSV), the split lists, the details (JSON), the
    report and DVC (which reads plots and params as UTF-8) hold text, and a name's undecodable
    bytes (Python's surrogate escapes) cannot be written as UTF-8; carrying them in an escaped
    form would give the same file a second name that every reader must know how to undo."""
    problems = {n: _name_problem(n) for n in names}
    locale = sorted(n for n, why in problems.items() if why == "locale")
    if locale:
        raise DataError(
            f"{root}: Python reads file names here as {sys.getfilesystemencoding()} (the locale), so "
            f"{len(locale)} UTF-8 name(s) would be misread, e.g. {', '.join(readable(n) for n in locale[:3])}; "
            "run under a UTF-8 locale (LANG=C.UTF-8) or with PYTHONUTF8=1"
        )
    bad = sorted((n for n, why in problems.items() if why == "bytes"), key=os.fsencode)
    if bad:
        raise DataError(
            f"{root}: {len(bad)} name(s) not valid UTF-8 (shown with each such byte as \\xNN): "
            f"{', '.join(readable(n) for n in bad)}; the manifest, split lists and report are UTF-8 text, "
            "so rename them to UTF-8 (names from Windows or an older system are often Latin-1: "
            f"`convmv -r -f latin1 -t utf-8 --notest {readable(root)}` renames them all)"
        )


def scan(root: Path, log=print) -> tuple[list[str], list[Entry]]:
    """Class folders (sorted, which is PACS's label order; hidden ones skipped) and their image
    files; files that are not images by name are left out, with one warning line."""
    if not root.is_dir():
        raise DataError(f"{root}: no such data folder; expected <class>/<image> sub-folders")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "splits" and p.name[0] != ".")
    if len(classes) < 2:
        raise DataError(f"{root}: found {len(classes)} class folder(s); need at least 2")
    entries, left_out = [], []
    for cls in classes:
        files = sorted(p for p in (root / cls).iterdir() if p.is_file())
        images = [p for p in files if is_image_name(p.name)]
        left_out += [p for p in files if not is_image_name(p.name)]
        if not images:
            others = f" ({len(files)} file(s), none an image by name)" if files else ""
            raise DataError(f"{readable(root / cls)}: empty class folder{others}; remove it or add images")
        entries += [Entry(f"{cls}/{p.name}", cls) for p in images]
    # Before anything is decoded or written, all at once: a class folder by its own name (not once
    # per file in it), a file by its own.
    refuse_names(root, [f"{c}/" for c in classes] + [e.path for e in entries if _name_problem(e.path.split("/")[-1])])
    if left_out:
        # Left out, so never written: a name that is not UTF-8 is only shown escaped.
        names = sorted({readable(p.name) for p in left_out})
        shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
        log(
            f"warning: left out {len(left_out)} file(s) under {root} that are not images by name ({shown}); "
            f"an image is a file named *{', *'.join(IMAGE_SUFFIXES)} (any case), not hidden"
        )
    return classes, entries


def read_split_list(path: Path) -> list[str]:
    """Paths of one official PACS list (`cartoon/<class>/<file> <label>`), domain dropped.

    The label is the line's last word, so a name may hold spaces. The list is UTF-8 (a BOM, as
    Windows editors write it, is allowed)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        shown = readable(raw.splitlines()[line - 1].decode("utf-8", "surrogateescape"))
        raise DataError(
            f"{path}:{line}: not UTF-8 ({shown}); save the list as UTF-8, naming the files by their UTF-8 names"
        ) from exc
    names, seen = [], set()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        labelled = re.fullmatch(r"(.+?)\s+\d+", line.strip())
        rel = labelled[1] if labelled else line.strip()
        rel = rel.split("/", 1)[1] if rel.count("/") >= 2 else rel
        if rel in seen:
            raise DataError(f"{path}:{lineno}: {rel} is listed twice")
        seen.add(rel)
        names.append(rel)
    return names


def find_split_lists(root: Path) -> tuple[Path, Path] | None:
    splits = root / "splits"
    train = sorted(splits.glob("*_train_kfold.txt"))
    test = sorted(splits.glob("*_crossval_kfold.txt"))
    return (train[0], test[0]) if train and test else None


def assign_split(
    entries: list[Entry],
    root: Path,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    fewshot_per_class: int,
) -> None:
    """Fill `full` and `fewshot` of every usable entry, deterministically from the seed."""
    usable = [e for e in entries if not e.excluded]
    by_path = {e.path: e for e in usable}
    lists = find_split_lists(root)
    if lists:
        pool_names, test_names = (read_split_list(p) for p in lists)
        known = {e.path for e in entries}
        for list_path, names in zip(lists, (pool_names, test_names)):
            missing = [n for n in names if n not in known]
            if missing:
                raise DataError(
                    f"{list_path}: names {len(missing)} file(s) not under {root}, e.g. {', '.join(missing[:3])}"
                )
        pool = [by_path[n] for n in pool_names if n in by_path]
        test = [by_path[n] for n in test_names if n in by_path]
        listed = set(pool_names) | set(test_names)
        for e in usable:
            if e.path not in listed:
                e.excluded = "not in the split lists"
        for cls in sorted({e.cls for e in entries} - {e.cls for e in pool + test}):
            raise DataError(
                f"{root / cls}: no image of this class folder is in {lists[0].name} or {lists[1].name}; "
                "remove the folder or add its images to the lists"
            )
    else:
        rng = np.random.default_rng([seed, 0])
        pool, test = [], []
        for cls in sorted({e.cls for e in usable}):
            members = [e for e in usable if e.cls == cls]
            order = rng.permutation(len(members))
            n_test = max(1, round(test_fraction * len(members)))
            test += [members[i] for i in order[:n_test]]
            pool += [members[i] for i in order[n_test:]]
    # Path order, not list order: the same images give the same split from any source.
    pool.sort(key=lambda e: e.path)
    for e in test:
        e.full = e.fewshot = "test"

    rng = np.random.default_rng([seed, 1])
    order = rng.permutation(len(pool))
    n_val = int(val_fraction * len(pool))
    for rank, i in enumerate(order):
        pool[i].full = "val" if rank < n_val else "train"

    rng = np.random.default_rng([seed, 2])
    few = []
    for cls in sorted({e.cls for e in pool}):
        members = [e for e in pool if e.cls == cls]
        if len(members) < fewshot_per_class:
            # Taking what there is would make the few-shot parts train on the full set, silently.
            raise DataError(
                f"params: 'fewshot.per_class' is {fewshot_per_class}, but class {cls!r} has only {len(members)} "
                f"image(s) to draw from (its training and validation images under {root}); set "
                f"fewshot.per_class to at most {min(sum(e.cls == c for e in pool) for c in {e.cls for e in pool})}"
            )
        pick = rng.permutation(len(members))[:fewshot_per_class]
        few += [members[i] for i in sorted(pick)]
    order = rng.permutation(len(few))
    n_val = int(val_fraction * len(few))
    for rank, i in enumerate(order):
        few[i].fewshot = "val" if rank < n_val else "train"


def write_manifest(path: Path, entries: list[Entry]) -> None:
    from tlstudy.lib.atomic import replacing

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    for e in entries:
        w.writerow([e.path, e.cls, e.full, e.fewshot, e.excluded])
    # UTF-8 whatever the locale: the node that reads it may not have the writer's locale.
    with replacing(path, "wb") as f:
        f.write(buf.getvalue().encode("utf-8"))


def read_manifest(path: Path) -> list[Entry]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [Entry(r["path"], r["class"], r["full"], r["fewshot"], r["excluded"]) for r in rows]


# --- decoding and the cache --------------------------------------------------------------


def decode(path: Path, size: int) -> torch.Tensor:
    """One image file as a 3×size×size uint8 tensor (grayscale, alpha and CMYK become RGB).

    PIL decodes: torchvision.io's decoders are deprecated from 0.29 on, and PIL says what is
    wrong with a file it cannot read. Whatever stops the decoder (a format it does not know, a
    truncated or corrupt file, its decompression-bomb limit, a mode it cannot convert) is a
    DataError naming the reason, so that build_cache can list the file or skip it.
    """
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as F

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the file ({exc.strerror or exc})") from exc
    if not data:
        raise DataError("empty file")
    try:
        with warnings.catch_warnings():
            # Between MAX_IMAGE_PIXELS and twice that PIL only warns, then decodes all the same:
            # gigabytes of pixels from a small file, only to be shrunk to `size`.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                arr = np.asarray(im.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        found = f"{int(pixels[1]):,} pixels" if pixels else str(exc)
        raise DataError(
            f"refused as a possible decompression bomb: {found}, over PIL.Image.MAX_IMAGE_PIXELS = "
            f"{Image.MAX_IMAGE_PIXELS:,}; if it is a real image, downscale it"
        ) from exc
    except UnidentifiedImageError as exc:
        raise DataError("not a readable image (not a format PIL knows: JPEG, PNG, BMP, …)") from exc
    except MemoryError as exc:
        raise DataError("not decodable in the memory this machine has") from exc
    # Any other exception is the decoder refusing this file (corrupt headers make some plugins
    # raise struct.error, IndexError, EOFError …); one bad file must not end the stage.
    except Exception as exc:
        raise DataError(
            f"not a readable image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from exc
    img = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    if img.shape[-2:] != (size, size):
        img = F.resize(img, [size, size], antialias=True)
    return img.contiguous()


def check_decoding_fits(n: int, size: int) -> None:
    """Refuse, before decoding, a cache that would not fit: its images are held twice while they
    are stacked into one tensor."""
    from tlstudy.lib import memory

    memory.check(
        memory.rss() + 2 * n * 3 * size * size, f"data.image_size = {size}", f"decoding {n} images at {size} px",
        "lower data.image_size (PACS's images are 227 px)",
    )  # fmt: skip


def check_fits(nbytes: int, available: int | None, what: str, where: str) -> None:
    if available is not None and nbytes > available:
        raise DataError(
            f"{what} needs {nbytes / 2**30:.2f} GiB but {where} has {available / 2**30:.2f} GiB free; "
            "lower data.image_size or use a machine with more memory"
        )


def build_cache(root: Path, entries: list[Entry], classes: list[str], size: int, on_bad: str):
    """Decode every non-excluded image once; bad files stop the stage or are excluded."""
    check_decoding_fits(sum(not e.excluded for e in entries), size)
    images, bad = [], []
    for e in entries:
        if e.excluded:
            continue
        try:
            images.append((e, decode(root / e.path, size)))
        except (DataError, RuntimeError, OSError) as exc:
            bad.append((e, str(exc).splitlines()[0]))
    if bad and on_bad == "error":
        listing = "\n".join(f"  {readable(root / e.path)}: {why}" for e, why in bad)
        raise DataError(
            f"{len(bad)} unreadable image(s) under {root}:\n{listing}\n"
            "fix or remove them, or set data.on_bad_image: skip to leave them out"
        )
    for e, why in bad:
        e.excluded = f"unreadable: {why}"
    kept = [(e, img) for e, img in images if not e.excluded]
    index = {c: i for i, c in enumerate(classes)}
    return {
        "classes": list(classes),
        "paths": [e.path for e, _ in kept],
        "labels": torch.tensor([index[e.cls] for e, _ in kept], dtype=torch.long),
        "images": torch.stack([img for _, img in kept]) if kept else torch.empty(0, 3, size, size, dtype=torch.uint8),
    }, bad


@dataclass
class Dataset:
    classes: list[str]
    paths: list[str]
    images: torch.Tensor  # N×3×H×W uint8
    labels: torch.Tensor  # N long
    roles: dict[str, dict[str, torch.Tensor]]  # subset -> role -> indices into images

    def part(self, subset: str, role: str) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.roles[subset][role]
        return self.images[idx], self.labels[idx]


def load(cache_path: Path, manifest_path: Path) -> Dataset:
    cache = torch.load(cache_path, weights_only=True)
    position = {p: i for i, p in enumerate(cache["paths"])}
    roles: dict[str, dict[str, list[int]]] = {"full": {}, "fewshot": {}}
    for e in read_manifest(manifest_path):
        if e.excluded:
            continue
        if e.path not in position:
            raise DataError(f"{manifest_path}: {e.path} is not in {cache_path}; re-run the fetch stage")
        for subset, role in (("full", e.full), ("fewshot", e.fewshot)):
            if role:
                roles[subset].setdefault(role, []).append(position[e.path])
    return Dataset(
        classes=cache["classes"],
        paths=cache["paths"],
        images=cache["images"],
        labels=cache["labels"],
        roles={s: {r: torch.tensor(ix, dtype=torch.long) for r, ix in rs.items()} for s, rs in roles.items()},
    )
