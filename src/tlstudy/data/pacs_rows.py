"""Reading a PACS archive row by row: the Hugging Face parquet (columns image{bytes, path},
domain, label) or a zip of the original release (`<domain>/<class>/<file>` names)."""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tlstudy.data import images as D
from tlstudy.lib.errors import StudyError
from tlstudy.params import DOMAINS

# PACS's classes and domains in the order the Hugging Face copy numbers them (its ClassLabel),
# for an archive whose integer columns come without their names; its domain order is params'.
PACS_CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
PACS_DOMAINS = DOMAINS


class ArchiveError(StudyError, RuntimeError):
    """An archive that is not the PACS release, or an unpacked folder whose provenance is unreadable."""


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


def read_rows(archive: Path) -> Iterator[Row]:
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
