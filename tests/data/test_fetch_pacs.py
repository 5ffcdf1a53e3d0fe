"""The `pacs` source end to end: a real archive of the real images, served over HTTP on 127.0.0.1."""

import collections
import csv
import hashlib
import io
import json
import subprocess
import zipfile

import pytest
import yaml
from conftest import PROJECT, SHARED_PACS
from http_fixture import Server

from tlstudy.cli import main
from tlstudy.data import images as D
from tlstudy.data import pacs, pacs_archive
from tlstudy.stages import fetch
from tlstudy.tools.profile import tool

pytestmark = pytest.mark.skipif(not SHARED_PACS.is_dir(), reason=f"real PACS data not at {SHARED_PACS}")


@pytest.fixture(scope="module")
def pacs_zip() -> bytes:
    """The images in the original release's layout, plus another domain that must be ignored."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for p in sorted(SHARED_PACS.glob("*/*.jpg")):
            z.writestr(f"kfold/cartoon/{p.parent.name}/{p.name}", p.read_bytes())
        z.writestr("kfold/sketch/dog/pic_001.jpg", b"\xff\xd8 not the cartoon image")
    return buf.getvalue()


def pacs_params(params, url, sha256, path):
    params["data"].update(source="pacs", url=url, sha256=sha256, path=str(path), image_size=32)
    return params


def test_download_unpacks_the_cartoon_domain_with_official_names_and_splits(in_tmp, params, pacs_zip, monkeypatch):
    monkeypatch.setattr(pacs, "BACKOFF_S", 0.01)
    with Server() as server:
        server.files["/PACS.zip"] = pacs_zip
        server.faults = ["cut"]  # the first response drops half-way: the download resumes
        # params.yaml's own path and domain: cartoon, the study's, unpacks where data.dvc pins it.
        p = pacs_params(params, server.url("/PACS.zip"), hashlib.sha256(pacs_zip).hexdigest(), "data/pacs_{domain}")
        assert p["data"]["domain"] == "cartoon"
        fetch.run(p)
    root = in_tmp / "data/pacs_cartoon"
    details = json.loads((in_tmp / "details/data.json").read_text())
    assert (details["split"], details["domain"], details["path"]) == ("official lists", "cartoon", "data/pacs_cartoon")
    for name in ("cartoon_train_kfold.txt", "cartoon_crossval_kfold.txt"):
        lines = lambda path: sorted(path.read_text().splitlines())  # noqa: E731
        assert lines(root / "splits" / name) == lines(SHARED_PACS / "splits" / name)
    assert sorted(x.relative_to(root) for x in root.glob("*/*.jpg")) == sorted(
        x.relative_to(SHARED_PACS) for x in SHARED_PACS.glob("*/*.jpg")
    )
    rows = list(csv.DictReader(open("manifest.csv")))
    assert collections.Counter(r["full"] for r in rows) == {"train": 1686, "val": 421, "test": 237}
    # The same split as reading the shared copy with its official lists (source: local).
    _, local = D.scan(SHARED_PACS)
    D.assign_split(local, SHARED_PACS, p["seed"], 0.2, 0.1, p["fewshot"]["per_class"])
    assert [(r["path"], r["full"], r["fewshot"]) for r in rows] == [(e.path, e.full, e.fewshot) for e in local]
    # data.dvc pins exactly the folder that the fetch stage unpacks.
    subprocess.run([tool("dvc"), "init", "--no-scm", "-q"], cwd=in_tmp, check=True)
    subprocess.run([tool("dvc"), "add", "-q", "data"], cwd=in_tmp, check=True)
    pinned = yaml.safe_load((PROJECT / "data.dvc").read_text())["outs"][0]
    assert yaml.safe_load((in_tmp / "data.dvc").read_text())["outs"][0]["md5"] == pinned["md5"]
    # A second fetch finds the complete folder and downloads nothing.
    (in_tmp / "work/downloads/PACS.zip").unlink()
    with Server() as server:
        fetch.run(pacs_params(params, server.url("/PACS.zip"), None, root))
        assert server.requests == []


def test_parquet_copy_is_matched_by_content(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    files = sorted(SHARED_PACS.glob("*/*.jpg"))
    images = [{"bytes": p.read_bytes(), "path": None} for p in files] + [{"bytes": b"other domain", "path": "x.jpg"}]
    table = pa.table({"image": images, "domain": ["cartoon"] * len(files) + ["photo"], "label": [0] * len(images)})
    pq.write_table(table, tmp_path / "train.parquet")
    pacs_archive.unpack_pacs(tmp_path / "train.parquet", tmp_path / "pacs")
    assert pacs_archive.pacs_complete(tmp_path / "pacs")
    assert (tmp_path / "pacs/dog/pic_001.jpg").read_bytes() == (SHARED_PACS / "dog/pic_001.jpg").read_bytes()
    assert D.find_split_lists(tmp_path / "pacs") is not None


def test_an_archive_without_the_cartoon_images_is_rejected_and_nothing_is_left(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.zip", "w") as z:
        z.writestr("kfold/cartoon/dog/pic_001.jpg", b"wrong bytes")
    with pytest.raises(pacs_archive.ArchiveError, match="holds 0 of the 2344 PACS cartoon images"):
        pacs_archive.unpack_pacs(tmp_path / "x.zip", tmp_path / "pacs")
    assert not (tmp_path / "pacs").exists() and not (tmp_path / "pacs.unpacking").exists()


def test_offline_fails_with_one_message_naming_the_local_route(in_tmp, params, capsys, monkeypatch):
    with Server() as server:
        url = server.url("/gone.zip")
    params = pacs_params(params, url, None, in_tmp / "data/pacs")
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.setattr(pacs, "BACKOFF_S", 0.01)
    assert main(["fetch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not download PACS")
    assert "source: local" in err and "dvc pull data.dvc" in err and "Traceback" not in err
