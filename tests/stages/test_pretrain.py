"""Pretraining on the source domains, and the parts that start from its backbone."""

import collections
import io
import json
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import PROJECT

from tlstudy import params as P
from tlstudy.data import images as data
from tlstudy.data import pacs_archive
from tlstudy.lib import uncertainty
from tlstudy.stages import fetch, pretrain, stats, train
from tlstudy.training import curves, engine, models

SHARED_SOURCES = PROJECT.parent / "shared" / "data" / "pacs_sources"
DOMAINS = ["art_painting", "photo", "sketch"]


@pytest.fixture
def prepared(in_tmp, params):
    params["pretrain"]["pacs_sources"].update(source="synthetic", epochs=2, batch_size=16, lr=0.01)
    fetch.run(params)
    stats.run(params)
    return params


def test_pretraining_writes_a_backbone_that_a_transfer_part_starts_from(prepared):
    params = prepared
    metrics = pretrain.run(params, "pacs_sources")
    saved = torch.load(P.backbone_file("pacs_sources"), weights_only=True)
    assert json.loads(Path("details/pretrain/pacs_sources.json").read_text()) == metrics
    # What `dvc metrics diff` compares: the headline figures alone.
    headline = json.loads(Path("metrics/pretrain/pacs_sources.json").read_text())
    assert headline == {k: metrics[k] for k in ("val_acc", "target_test_acc", "epoch", "target")}
    assert metrics["target"] == "cartoon"

    per_class = params["data"]["synthetic_per_class"]
    domains = ["art_painting", "photo", "sketch"]
    assert metrics["domains"] == domains
    assert all(v["train"] + v["val"] == 7 * per_class for v in metrics["images"].values())
    assert metrics["val_n"] == sum(v["val"] for v in metrics["images"].values())
    assert 1 <= metrics["epoch"] <= 2 and set(metrics["val_acc_per_domain"]) == set(domains)

    # The leave-one-domain-out figure is the saved model on the cartoon test set, normalised as trained.
    model = models.build(7, "random", "random", 0)
    model.load_state_dict(saved["state_dict"])
    ds = data.load(Path("work/images.pt"), Path("manifest.csv"))
    x, y = ds.part("full", "test")
    col = lambda v: torch.tensor(v).view(1, 3, 1, 1)  # noqa: E731
    acc = (engine.predict(model, x, col(saved["mean"]), col(saved["std"])).argmax(1) == y).float().mean().item()
    assert metrics["target_test_acc"] == pytest.approx(acc, abs=1e-6) and metrics["target_test_n"] == len(y)
    # Every accuracy with its 95 % Wilson interval from the counts.
    lo, hi = uncertainty.wilson(round(acc * len(y)), len(y))
    assert (metrics["target_test_acc_lo"], metrics["target_test_acc_hi"]) == (round(lo, 6), round(hi, 6))
    assert metrics["val_acc_lo"] <= metrics["val_acc"] <= metrics["val_acc_hi"]
    for d in domains:
        assert (
            metrics["val_acc_per_domain_lo"][d]
            <= metrics["val_acc_per_domain"][d]
            <= metrics["val_acc_per_domain_hi"][d]
        )

    rows = Path("plots/pretrain/pacs_sources.csv").read_text().splitlines()
    assert rows[0].split(",") == curves.PLOT_COLUMNS and len(rows) == 1 + 2

    # A transfer part starts from that backbone (its head is new), and records where it came from.
    start = models.build(7, P.part(params, "finetune_pacs").init, "random", 0)
    assert torch.equal(start.conv1.weight, saved["state_dict"]["conv1.weight"])
    assert not torch.equal(start.fc.weight, saved["state_dict"]["fc.weight"])
    train.run(params, "finetune_pacs")
    runs = json.loads(Path("models/finetune_pacs/runs.json").read_text())
    assert runs["init"] == "pretrained here: pacs_sources (art_painting, photo, sketch)"


def test_the_validation_share_is_stratified_by_domain_and_class():
    keys = [(d, c) for d in ("a", "b") for c in ("x", "y", "z") for _ in range(10 if d == "a" else 4)]
    mask = pretrain.stratified_val(keys, 0.2, seed=0)
    taken = collections.Counter(k for k, m in zip(keys, mask.tolist()) if m)
    assert taken == {("a", c): 2 for c in "xyz"} | {("b", c): 1 for c in "xyz"}
    assert torch.equal(mask, pretrain.stratified_val(keys, 0.2, seed=0))
    assert not torch.equal(mask, pretrain.stratified_val(keys, 0.2, seed=1))


def test_a_source_domain_whose_classes_differ_from_the_cartoon_ones_is_refused(tmp_path):
    for domain, classes in (("photo", ("dog", "horse")), ("sketch", ("dog", "cat"))):
        for cls in classes:
            (tmp_path / domain / cls).mkdir(parents=True)
            (tmp_path / domain / cls / "a.jpg").write_bytes(b"x")
    with pytest.raises(data.DataError, match=r"sketch: class folders \['cat', 'dog'\]; the cartoon data has"):
        pretrain.scan(tmp_path, ["photo", "sketch"], ["dog", "horse"])


@pytest.mark.skipif(not SHARED_SOURCES.is_dir(), reason=f"real PACS sources not at {SHARED_SOURCES}")
def test_source_images_are_taken_from_the_archive_by_their_bytes(tmp_path):
    every = sorted(SHARED_SOURCES.glob("*/dog/*"))
    picked = every[:: len(every) // 6][:6]
    assert {p.parts[-3] for p in picked} == set(DOMAINS)

    def archive(name, files):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for i, p in enumerate(files):  # other names than the reference's: matched by content
                z.writestr(f"kfold/x/{i}{p.suffix}", p.read_bytes())
            z.writestr("kfold/x/other.jpg", b"\xff\xd8 not one of them")
        (tmp_path / name).write_bytes(buf.getvalue())
        return tmp_path / name

    prov = pacs_archive.unpack_sources(archive("pacs.zip", picked), tmp_path / "sources", DOMAINS)
    for p in picked:
        assert (tmp_path / "sources" / p.relative_to(SHARED_SOURCES)).read_bytes() == p.read_bytes()
    files = sorted(
        f.relative_to(tmp_path / "sources").as_posix() for f in (tmp_path / "sources").rglob("*") if f.is_file()
    )
    assert files == sorted([pacs_archive.PROVENANCE_FILE] + [p.relative_to(SHARED_SOURCES).as_posix() for p in picked])
    # Not every official image is there, so the folder is what the archive gives, and says so.
    assert prov["names"] == pacs_archive.SOURCES_ARCHIVE and prov["matched_by_sha256"] == 6
    assert prov["files"] == {d: sum(p.parts[-3] == d for p in picked) for d in DOMAINS}
    assert pacs_archive.sources_complete(tmp_path / "sources", DOMAINS)

    photos = [p for p in picked if p.parts[-3] == "photo"]
    with pytest.raises(pacs_archive.ArchiveError, match=r"pacs_photo.zip: no images of domain sketch"):
        pacs_archive.unpack_sources(archive("pacs_photo.zip", photos), tmp_path / "incomplete", ["photo", "sketch"])
    assert not (tmp_path / "incomplete").exists() and not (tmp_path / "incomplete.unpacking").exists()


def test_a_diverged_pretraining_names_the_rate_to_lower(prepared):
    prepared["pretrain"]["pacs_sources"].update(lr=1e30, epochs=1)
    with pytest.raises(
        P.ParamsError,
        match=r"pretrain@pacs_sources: the run diverged at epoch 1; lower 'pretrain.pacs_sources.lr' \(now 1e\+30\)",
    ):
        pretrain.run(prepared, "pacs_sources")
    assert not P.backbone_file("pacs_sources").exists()
