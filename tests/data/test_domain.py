"""The target domain is a parameter (`data.domain`): a small four-domain PACS-like parquet of
generated JPEGs, served on 127.0.0.1 and taken through the real download, fetch, pretraining and
the report's pretraining lines with sketch as the target."""

import csv
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from http_fixture import Server
from PIL import Image

from tlstudy import params as P
from tlstudy.cli import main
from tlstudy.data import pacs_archive
from tlstudy.data.pacs_rows import PACS_CLASSES
from tlstudy.stages import fetch, pretrain, stats
from tlstudy.stages.report import document
from tlstudy.stages.report.inputs import Inputs
from tlstudy.tools import profile

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

PER_CLASS = 10  # per class of the target: 1 test image (data.test_fraction 0.1), 9 to draw 4 few-shot ones from
SOURCE_PER_CLASS = 3  # per class of the other domains: 1 to validate pretraining, 2 to train it (cheap)
URL_PATH = "/pacs/train.parquet"


def jpeg(domain: str, cls: str, i: int) -> bytes:
    """A 32 px JPEG of its own: noise seeded by (domain, class, index), so bytes name the row."""
    seed = [P.DOMAINS.index(domain), PACS_CLASSES.index(cls), i]
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def archive() -> tuple[bytes, dict[str, str]]:
    """The parquet in the Hugging Face layout (image{bytes, path}, domain, label as the ClassLabel's
    integer), and the domain of each image by the sha256 of its bytes."""
    rows = [
        (d, c, f"pic_{i:03d}.jpg", jpeg(d, c, i))
        for d in P.DOMAINS
        for c in PACS_CLASSES
        for i in range(PER_CLASS if d == "sketch" else SOURCE_PER_CLASS)
    ]
    image = pa.array(
        [{"bytes": b, "path": f"/data/PACS/kfold/{d}/{c}/{n}"} for d, c, n, b in rows],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    domain = pa.array([d for d, *_ in rows], pa.string())
    label = pa.array([PACS_CLASSES.index(c) for _, c, *_ in rows], pa.int64())
    buf = io.BytesIO()
    pq.write_table(pa.table({"image": image, "domain": domain, "label": label}), buf)
    return buf.getvalue(), {hashlib.sha256(b).hexdigest(): d for d, _, _, b in rows}


def pacs_params(params, server, blob, domain):
    server.files[URL_PATH] = blob
    params["data"].update(source="pacs", domain=domain, url=server.url(URL_PATH), sha256=None, image_size=32)
    params["pretrain"]["pacs_sources"].update(source="pacs", epochs=1, batch_size=16, lr=0.01)
    P.validate(params)
    return params


def domains_of(root: Path, paths, by_sha: dict[str, str]) -> set[str]:
    return {by_sha[hashlib.sha256((root / p).read_bytes()).hexdigest()] for p in paths}


def test_sketch_as_the_target_trains_on_the_other_three_and_says_so(in_tmp, params, archive, capsys):
    blob, by_sha = archive
    with Server() as server:
        p = pacs_params(params, server, blob, "sketch")
        fetch.run(p)
        stats.run(p)
        metrics = pretrain.run(p, "pacs_sources")
        assert len(server.requests) == 1, "pretraining's sources come from fetch's download"

    # Sketch is the target, unpacked to its own folder: every image of train, val and test is a
    # sketch row of the archive.
    root = in_tmp / "data/pacs_sketch"
    assert P.data_path(p) == Path("data/pacs_sketch") and not (in_tmp / "data/pacs_cartoon").exists()
    with open("manifest.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["full"] for r in rows} == {"train", "val", "test"} and len(rows) == 7 * PER_CLASS
    assert domains_of(root, [r["path"] for r in rows], by_sha) == {"sketch"}
    # The package has no official lists for sketch: a seeded split stratified by class, and the
    # details say so, with the values it was drawn with.
    assert sum(r["full"] == "test" for r in rows) == 7 and {r["class"] for r in rows if r["full"] == "test"} == set(
        PACS_CLASSES
    )
    details = json.loads(Path("details/data.json").read_text())
    assert details["domain"] == "sketch" and details["split"] == "derived"
    assert (details["seed"], details["test_fraction"]) == (p["seed"], p["data"]["test_fraction"])
    assert details["how"].startswith("no official split lists for sketch (the package ships cartoon's alone)")
    assert json.loads(Path("metrics/data.json").read_text()) == {"split": "derived"}
    assert "fetch: WARNING: split 'derived'" in capsys.readouterr().err

    # Pretraining learned from exactly the other three domains, their images the archive's rows of them.
    sources = in_tmp / "work/pacs_sources"
    assert metrics["domains"] == ["art_painting", "cartoon", "photo"] == P.source_domains(p)
    assert set(metrics["images"]) == {"art_painting", "cartoon", "photo"}
    for d in metrics["domains"]:
        assert domains_of(sources, [f.relative_to(sources) for f in (sources / d).rglob("*.jpg")], by_sha) == {d}
    assert not (sources / "sketch").exists()
    # The headline names the target beside its number, and the report and profile lines name sketch.
    headline = json.loads(Path("metrics/pretrain/pacs_sources.json").read_text())
    assert headline["target"] == "sketch" and 0 <= headline["target_test_acc"] <= 1
    assert metrics["target_test_n"] == 7 and not any("cartoon_test" in k for k in metrics)
    inp = Inputs(p)
    text = "\n".join(document.pretrain_section(p, inp, in_tmp))
    assert "## Pretraining `pacs_sources` on art_painting, cartoon, photo" in text
    assert "this 7-way model on the sketch test set, with no sketch training at all" in text
    assert document.glance_rows(inp, {})[-1]["label"] == "pretrain@pacs_sources on sketch\n(no sketch training)"
    assert "sketch test with no sketch training" in profile.summary(Path("metrics"))
    assert "cartoon" not in "\n".join(document.how_to_read(p, inp)).replace("the study's target was cartoon", "")

    # The sources folder holds sketch's sources: a cartoon target (sources art_painting, photo,
    # sketch) does not take it for complete.
    assert pacs_archive.sources_complete(sources, P.source_domains(p))
    assert not pacs_archive.sources_complete(sources, ["art_painting", "photo", "sketch"])


def test_a_folder_unpacked_for_one_domain_is_not_reused_for_another(in_tmp, params, archive):
    """data.path without {domain}: the folder sketch left is unpacked anew for photo."""
    blob, by_sha = archive
    with Server() as server:
        p = pacs_params(params, server, blob, "sketch")
        p["data"]["path"] = "data/pacs"
        p["fewshot"]["per_class"] = 1  # photo has SOURCE_PER_CLASS images a class
        fetch.run(p)
        p["data"]["domain"] = "photo"
        fetch.run(p)
    with open("manifest.csv", encoding="utf-8") as f:
        paths = [r["path"] for r in csv.DictReader(f)]
    assert domains_of(in_tmp / "data/pacs", paths, by_sha) == {"photo"}
    assert json.loads(Path("details/data.json").read_text())["domain"] == "photo"


def test_an_unknown_domain_is_refused_in_one_line_naming_the_key_and_the_accepted_ones(in_tmp, params, capsys):
    params["data"]["domain"] = "clipart"
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["fetch"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: params: 'data.domain' is 'clipart'; accepted: art_painting, cartoon, photo, sketch"
    assert not Path("manifest.csv").exists()


def test_a_backbone_listing_its_own_domains_is_refused_naming_the_rule(params):
    params["pretrain"]["pacs_sources"]["domains"] = ["art_painting", "photo", "sketch"]
    with pytest.raises(
        P.ParamsError, match=r"'pretrain.pacs_sources.domains' is no longer read: .* other than data.domain"
    ):
        P.validate(params)
