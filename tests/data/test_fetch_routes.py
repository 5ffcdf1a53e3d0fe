"""The three routes from the PACS parquet to a split, on parquets built from the real images in the
Hugging Face layout (image{bytes, path}, domain, label), served over HTTP on 127.0.0.1 and taken
through the real download, fetch stage and pretraining's source route:

1. the original bytes with their paths: the official split, matched by sha256;
2. re-encoded (JPEG, quality 90) with their paths: the official split, matched by name;
3. re-encoded without paths: a derived split of the official sizes per class, seeded.
"""

import collections
import csv
import hashlib
import io
import json

import pytest
from conftest import PROJECT, SHARED_PACS
from http_fixture import Server

from tlstudy.data import images as D
from tlstudy.data import pacs, pacs_archive, pacs_splits
from tlstudy.stages import fetch, pretrain

SHARED_SOURCES = PROJECT.parent / "shared" / "data" / "pacs_sources"
DOMAINS = ["art_painting", "photo", "sketch"]  # cartoon's sources, as params derive them
PER_CLASS = 3  # source images per domain and class: they need no names, a few show the route
URL_PATH = "/datasets/flwrlabs/pacs/data/train-00000-of-00001.parquet"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (SHARED_PACS.is_dir() and SHARED_SOURCES.is_dir()), reason=f"real PACS data not at {SHARED_PACS.parent}"
    ),
]
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def official_cartoon() -> list[dict]:
    return pacs_splits.pacs_reference()


def source_files(all_photo: bool) -> list:
    """A few images per source domain and class (every photo where `all_photo`)."""
    picked = []
    for domain in DOMAINS:
        for cls in pacs_archive.PACS_CLASSES:
            files = sorted((SHARED_SOURCES / domain / cls).iterdir())
            picked += files if all_photo and domain == "photo" else files[:PER_CLASS]
    return picked


def reencode(blob: bytes) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    with Image.open(io.BytesIO(blob)) as im:
        im.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def parquet(rows: list[tuple], paths: bool, labels: str, metadata: bool) -> bytes:
    """rows: (domain, class, file name, bytes) in the HF copy's order (domain, class, file).
    labels: "int" (the ClassLabel's integers) or "str"; metadata: the HF features in the schema."""
    image = pa.array(
        [{"bytes": b, "path": f"/data/PACS/kfold/{d}/{c}/{n}" if paths else None} for d, c, n, b in rows],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    domain = pa.array([d for d, *_ in rows], pa.string())
    if labels == "int":
        label = pa.array([pacs_archive.PACS_CLASSES.index(c) for _, c, *_ in rows], pa.int64())
    else:
        label = pa.array([c for _, c, *_ in rows], pa.string())
    table = pa.table({"image": image, "domain": domain, "label": label})
    if metadata:
        features = {
            "image": {"_type": "Image"},
            "domain": {"dtype": "string", "_type": "Value"},
            "label": {"names": list(pacs_archive.PACS_CLASSES), "_type": "ClassLabel"},
        }
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def images():
    """(domain, class, file, original bytes) of the whole cartoon domain and the source subset."""
    cartoon = [("cartoon", *r["path"].split("/"), (SHARED_PACS / r["path"]).read_bytes()) for r in official_cartoon()]
    sources = [(p.parts[-3], p.parts[-2], p.name, p.read_bytes()) for p in source_files(all_photo=True)]
    return sorted(cartoon + sources, key=lambda r: r[:3])


@pytest.fixture(scope="module")
def reencoded(images):
    """Every cartoon image and the source subset re-encoded (the full photo domain is not needed)."""
    subset = {(p.parts[-3], p.parts[-2], p.name) for p in source_files(all_photo=False)}
    return [(d, c, n, reencode(b)) for d, c, n, b in images if d == "cartoon" or (d, c, n) in subset]


def pacs_params(params, server, blob, tmp):
    server.files[URL_PATH] = blob
    params["data"].update(
        source="pacs",
        url=server.url(URL_PATH),
        sha256=hashlib.sha256(blob).hexdigest(),
        path=str(tmp / "data/pacs_cartoon"),
        image_size=32,
    )
    params["pretrain"]["pacs_sources"].update(source="pacs", path=str(tmp / "work/pacs_sources"))
    return params


def manifest_rows():
    with open("manifest.csv") as f:
        return [(r["path"], r["full"], r["fewshot"]) for r in csv.DictReader(f)]


def official_split(params):
    _, entries = D.scan(SHARED_PACS)
    D.assign_split(entries, SHARED_PACS, params["seed"], 0.2, 0.1, params["fewshot"]["per_class"])
    return [(e.path, e.full, e.fewshot) for e in entries]


def recorded(tmp):
    metric = json.loads((tmp / "metrics/data.json").read_text())
    details = json.loads((tmp / "details/data.json").read_text())
    assert set(metric) == {"split"} and metric["split"] == details["split"]
    return details


def source_tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.parent != root)


def test_original_bytes_give_the_official_split_by_sha256(in_tmp, params, images, capsys):
    blob = parquet(images, paths=True, labels="int", metadata=True)
    with Server() as server:
        p = pacs_params(params, server, blob, in_tmp)
        fetch.run(p)
        sources = pretrain.source_root(p, "pacs_sources")
        assert len(server.requests) == 1, "pretraining's sources come from fetch's download"
    assert "fetch: WARNING" not in capsys.readouterr().err

    details = recorded(in_tmp)
    assert details["split"] == "official lists"
    assert (details["matched_by_sha256"], details["matched_by_name"]) == (2344, 0)
    assert fetch.provenance()["text"].startswith("Split: official lists — all 2,344 official PACS cartoon images")
    root = in_tmp / "data/pacs_cartoon"
    # Nothing beyond the images and the official lists: the tree that data.dvc pins.
    assert not (root / pacs_archive.PROVENANCE_FILE).exists()
    assert manifest_rows() == official_split(p)

    # The source rows, all official images here, under their official names with their bytes.
    ref = {r["path"]: r["sha256"] for r in pacs_splits.reference("pacs_sources.csv")}
    served = {f"{d}/{c}/{n}" for d, c, n, _ in images if d != "cartoon"}
    tree = source_tree(sources)
    assert set(tree) == served
    assert all(hashlib.sha256((sources / t).read_bytes()).hexdigest() == ref[t] for t in tree)
    assert len(pretrain.scan(sources, DOMAINS, list(pacs_archive.PACS_CLASSES))) == len(served)
    marker = json.loads((sources / pacs_archive.PROVENANCE_FILE).read_text())
    # Not every official art_painting or sketch image is in this parquet: named from its rows.
    assert marker["names"] == pacs_archive.SOURCES_ARCHIVE and marker["matched_by_sha256"] == len(served)

    # One domain that the parquet holds whole: the official names route, and its marker makes the
    # folder complete for later (no download).
    photo = in_tmp / "work/photo_only"
    with Server() as server:
        p = pacs_params(params, server, blob, in_tmp)
        assert pacs.get_sources(p, photo, ["photo"], "pretrain@photo") == photo
        assert json.loads((photo / pacs_archive.PROVENANCE_FILE).read_text())["names"] == pacs_archive.SOURCES_OFFICIAL
        (in_tmp / "work/downloads/train-00000-of-00001.parquet").unlink()
        pacs.get_sources(p, photo, ["photo"], "pretrain@photo")
        assert pacs_archive.sources_complete(photo, ["photo"]) and not pacs_archive.sources_complete(photo, DOMAINS)
        assert server.requests == []


def test_reencoded_images_with_paths_keep_the_official_split_by_name(in_tmp, params, reencoded, capsys):
    blob = parquet(reencoded, paths=True, labels="str", metadata=False)
    with Server() as server:
        p = pacs_params(params, server, blob, in_tmp)
        fetch.run(p)
        sources = pretrain.source_root(p, "pacs_sources")
    err = capsys.readouterr().err
    assert "WARNING: split 'official lists, matched by name'" in err

    details = recorded(in_tmp)
    assert details["split"] == "official lists, matched by name"
    assert (details["matched_by_sha256"], details["matched_by_name"]) == (0, 2344)
    root = in_tmp / "data/pacs_cartoon"
    for name in ("cartoon_train_kfold.txt", "cartoon_crossval_kfold.txt"):
        lines = lambda path: sorted(path.read_text().splitlines())  # noqa: E731
        assert lines(root / "splits" / name) == lines(SHARED_PACS / "splits" / name)
    assert manifest_rows() == official_split(p)

    served = {f"{d}/{c}/{n}" for d, c, n, _ in reencoded if d != "cartoon"}
    assert set(source_tree(sources)) == served  # official names, from the rows' paths
    marker = json.loads((sources / pacs_archive.PROVENANCE_FILE).read_text())
    assert (marker["matched_by_sha256"], marker["matched_by_name"]) == (0, len(served))

    # Used again later (no download), the folder still says how its split came about.
    first = manifest_rows()
    with Server() as server:
        p = pacs_params(params, server, b"", in_tmp)
        fetch.run(p)
        assert server.requests == []
    assert recorded(in_tmp)["split"] == "official lists, matched by name"
    assert manifest_rows() == first


def test_reencoded_images_without_paths_get_a_seeded_split_of_the_official_sizes(in_tmp, params, reencoded, capsys):
    blob = parquet(reencoded, paths=False, labels="int", metadata=False)
    with Server() as server:
        p = pacs_params(params, server, blob, in_tmp)
        fetch.run(p)
        sources = pretrain.source_root(p, "pacs_sources")
    err = capsys.readouterr().err
    assert "WARNING: split 'derived': NOT the official split" in err

    details = recorded(in_tmp)
    assert details["split"] == "derived"
    assert (details["matched_by_sha256"], details["matched_by_name"], details["from_archive_columns"]) == (0, 0, 2344)
    assert fetch.provenance()["text"].startswith("Split: derived — NOT the official split")
    root = in_tmp / "data/pacs_cartoon"
    assert json.loads((root / pacs_archive.PROVENANCE_FILE).read_text())["split"] == "derived"

    # Stratified with the official sizes: per class, as many test images as the official list has,
    # and every image of the class in one of the lists.
    official = official_cartoon()
    test_size = collections.Counter(r["path"].split("/")[0] for r in official if r["official_subset"] == "crossval")
    class_size = collections.Counter(r["path"].split("/")[0] for r in official)
    lists = D.find_split_lists(root)
    pool, test = (D.read_split_list(x) for x in lists)
    assert collections.Counter(n.split("/")[0] for n in test) == test_size
    assert collections.Counter(n.split("/")[0] for n in pool + test) == class_size
    rows = list(csv.DictReader(open("manifest.csv")))
    assert collections.Counter(r["class"] for r in rows if r["full"] == "test") == test_size
    # The derived names come from the rows (there are no others), in the label's class folder.
    assert all(n.split("/")[1].startswith("archive_row_") for n in pool + test)

    # Seeded: the same archive gives the same split again.
    archive = in_tmp / "work/downloads/train-00000-of-00001.parquet"
    pacs_archive.unpack_pacs(archive, in_tmp / "again")
    for x in lists:
        assert (in_tmp / "again/splits" / x.name).read_bytes() == x.read_bytes()

    # Pretraining's sources need no names: every row by its domain and label columns.
    expected = collections.Counter((d, c) for d, c, *_ in reencoded if d != "cartoon")
    tree = source_tree(sources)
    assert collections.Counter(tuple(t.split("/")[:2]) for t in tree) == expected
    assert all(t.split("/")[2].startswith("archive_row_") for t in tree)
    assert len(pretrain.scan(sources, DOMAINS, list(pacs_archive.PACS_CLASSES))) == sum(expected.values())
    assert "pretrain@pacs_sources: WARNING: source images named from the archive's columns: 0 of the 7,647" in err
