import collections
import csv
import shutil

import pytest
import torch
import yaml
from conftest import SHARED_PACS

from tlstudy.data import images as D
from tlstudy.data import synthetic
from tlstudy.stages import fetch

needs_pacs = pytest.mark.skipif(not SHARED_PACS.is_dir(), reason=f"real PACS data not at {SHARED_PACS}")


def split_of(root, seed=0, per_class=34):
    classes, entries = D.scan(root)
    D.assign_split(entries, root, seed=seed, val_fraction=0.2, test_fraction=0.1, fewshot_per_class=per_class)
    return classes, entries


def roles(entries, subset):
    return collections.Counter(getattr(e, subset) for e in entries if not e.excluded)


@needs_pacs
def test_pacs_split_follows_the_official_lists():
    classes, entries = split_of(SHARED_PACS)
    assert classes == ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
    full = roles(entries, "full")
    assert full == {"train": 2107 - 421, "val": 421, "test": 237}
    crossval = set(D.read_split_list(SHARED_PACS / "splits" / "cartoon_crossval_kfold.txt"))
    assert {e.path for e in entries if e.full == "test"} == crossval
    few = roles(entries, "fewshot")
    assert few["train"] + few["val"] == 7 * 34 and few["val"] == int(0.2 * 7 * 34)
    assert few["test"] == 237


@needs_pacs
def test_pacs_split_is_deterministic_and_depends_on_the_seed():
    _, a = split_of(SHARED_PACS, seed=0)
    _, b = split_of(SHARED_PACS, seed=0)
    _, c = split_of(SHARED_PACS, seed=1)
    key = lambda es: [(e.path, e.full, e.fewshot) for e in es]  # noqa: E731
    assert key(a) == key(b)
    assert key(a) != key(c)
    # The test set is the official one whatever the seed.
    assert {e.path for e in a if e.full == "test"} == {e.path for e in c if e.full == "test"}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("synth"), per_class=15, size=48, seed=3)


def test_synthetic_data_is_deterministic(tmp_path, synthetic_root):
    again = synthetic.generate(tmp_path / "again", per_class=15, size=48, seed=3)
    files = sorted(p.relative_to(synthetic_root) for p in synthetic_root.rglob("*.jpg"))
    assert len(files) == 7 * 15
    assert all((synthetic_root / f).read_bytes() == (again / f).read_bytes() for f in files)
    other = synthetic.generate(tmp_path / "other", per_class=15, size=48, seed=4)
    assert (synthetic_root / files[0]).read_bytes() != (other / files[0]).read_bytes()


def test_split_without_lists_is_stratified_and_sized(synthetic_root):
    classes, entries = split_of(synthetic_root, per_class=5)
    assert classes == sorted(synthetic.CLASSES)
    by_class = collections.defaultdict(collections.Counter)
    few_by_class = collections.Counter()
    for e in entries:
        by_class[e.cls][e.full] += 1
        few_by_class[e.cls] += e.fewshot in ("train", "val")
    for cls in classes:
        assert by_class[cls]["test"] == round(0.1 * 15)
    pool = sum(c["train"] + c["val"] for c in by_class.values())
    assert sum(c["val"] for c in by_class.values()) == int(0.2 * pool)
    assert set(few_by_class.values()) == {5}
    # few-shot images come from the pool, never from the test set
    assert all(e.full in ("train", "val") for e in entries if e.fewshot in ("train", "val"))


def test_fetch_stage_writes_manifest_and_cache_from_real_jpegs(in_tmp, params):
    fetch.run(params)
    rows = list(csv.DictReader(open("manifest.csv")))
    assert list(rows[0]) == D.MANIFEST_COLUMNS
    assert len(rows) == 7 * 12
    ds = D.load(in_tmp / "work/images.pt", in_tmp / "manifest.csv")
    assert ds.images.dtype == torch.uint8 and ds.images.shape[1:] == (3, 32, 32)
    assert len(ds.images) == len(rows)
    x, y = ds.part("full", "test")
    assert len(x) == 7 * round(0.1 * 12) and set(y.tolist()) == set(range(7))
    # The cache holds the decoded JPEG: decoding the file again gives the same pixels.
    i = ds.paths.index(rows[0]["path"])
    assert torch.equal(ds.images[i], D.decode(in_tmp / "work/synthetic" / rows[0]["path"], 32))


def test_split_lists_naming_missing_files_are_rejected(tmp_path, synthetic_root):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    (root / "splits").mkdir()
    (root / "splits" / "x_train_kfold.txt").write_text("x/circle/img_000.jpg 1\nx/circle/nope.jpg 1\n")
    (root / "splits" / "x_crossval_kfold.txt").write_text("x/square/img_000.jpg 2\n")
    with pytest.raises(D.DataError, match=r"x_train_kfold.txt: names 1 file.*circle/nope.jpg"):
        split_of(root)


def test_unreadable_images_are_listed_together(tmp_path, synthetic_root):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    (root / "circle" / "empty.jpg").write_bytes(b"")
    (root / "square" / "notes.jpg").write_text("not an image")  # named as an image: a bad one
    classes, entries = D.scan(root)
    with pytest.raises(D.DataError) as err:
        D.build_cache(root, entries, classes, 32, "error")
    assert "2 unreadable image(s)" in str(err.value)
    assert "circle/empty.jpg: empty file" in str(err.value) and "square/notes.jpg" in str(err.value)
    cache, bad = D.build_cache(root, entries, classes, 32, "skip")
    assert len(bad) == 2 and len(cache["paths"]) == 7 * 15
    assert {e.path for e in entries if e.excluded.startswith("unreadable")} == {
        "circle/empty.jpg",
        "square/notes.jpg",
    }


def test_other_formats_and_sizes_are_converted_to_rgb_at_the_cache_size(tmp_path):
    from PIL import Image

    rgb = Image.new("RGB", (50, 80), (200, 30, 40))
    cases = {
        "gray.jpg": (rgb.convert("L"), {}),
        "cmyk.jpg": (rgb.convert("CMYK"), {}),
        "alpha.png": (rgb.convert("RGBA"), {}),
        "small.jpg": (rgb, {"quality": 95}),
    }
    for name, (im, kw) in cases.items():
        im.save(tmp_path / name, **kw)
        x = D.decode(tmp_path / name, 32)
        assert x.shape == (3, 32, 32) and x.dtype == torch.uint8, name
    red = D.decode(tmp_path / "alpha.png", 32)
    assert red[0].float().mean() > 190 and red[1].float().mean() < 40


def test_truncated_and_non_image_files_are_reported_with_their_reason(tmp_path, synthetic_root):
    good = (synthetic_root / "circle" / "img_000.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "text.jpg").write_text("hello")
    for name in ("truncated.jpg", "text.jpg"):
        with pytest.raises(D.DataError, match="not a readable image"):
            D.decode(tmp_path / name, 32)


def test_empty_and_unlisted_class_folders_are_rejected_by_name(tmp_path, synthetic_root):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    (root / "empty").mkdir()
    with pytest.raises(D.DataError, match=r"data/empty: empty class folder"):
        D.scan(root)
    (root / "empty").rmdir()
    (root / "splits").mkdir()
    (root / "splits" / "x_train_kfold.txt").write_text(
        "".join(f"x/{p.parent.name}/{p.name} 1\n" for p in sorted(root.glob("*/*.jpg")) if p.parent.name != "bars")
    )
    (root / "splits" / "x_crossval_kfold.txt").write_text("x/circle/img_001.jpg 1\n")
    with pytest.raises(D.DataError, match=r"data/bars: no image of this class folder is in x_train_kfold.txt"):
        split_of(root)


def test_duplicate_lines_in_a_split_list_are_rejected_with_the_line(tmp_path):
    lst = tmp_path / "c_train_kfold.txt"
    lst.write_text("cartoon/dog/a.jpg 1\ncartoon/dog/b.jpg 1\ncartoon/dog/a.jpg 1\n")
    with pytest.raises(D.DataError, match=r"c_train_kfold.txt:3: dog/a.jpg is listed twice"):
        D.read_split_list(lst)


def test_a_cache_larger_than_memory_is_refused_before_decoding(tmp_path, synthetic_root):
    classes, entries = D.scan(synthetic_root)
    from tlstudy.lib import errors

    pattern = r"params: data.image_size = 200000: decoding 105 images at 200000 px needs about .* GiB of memory, but"
    with pytest.raises(errors.ParamsError, match=pattern):
        D.build_cache(synthetic_root, entries, classes, 200_000, "error")


def test_files_that_are_not_images_by_name_are_left_out_with_one_warning(
    tmp_path, synthetic_root, params, capsys, monkeypatch
):
    """A class folder copied from a desktop: Thumbs.db, desktop.ini, a README, .DS_Store and
    macOS's ._pic files beside the images fetch with one warning line, and nothing else changes."""
    from tlstudy.stage import main

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    clean = split_of(synthetic_root, per_class=4)[1]
    junk = {"Thumbs.db": b"\0" * 64, "desktop.ini": b"[.ShellClassInfo]\n", "README.txt": b"my dogs\n"}
    junk |= {".DS_Store": b"\0\0\0\1Bud1", "._img_000.jpg": b"\0\5\26\7 AppleDouble"}
    for name, blob in junk.items():
        (root / "circle" / name).write_bytes(blob)
    (root / ".hidden_class").mkdir()  # a hidden folder is no class either
    (root / "square" / "IMG_9.JPG").write_bytes((root / "square" / "img_000.jpg").read_bytes())  # any case

    classes, entries = D.scan(root, log=print)
    warning = capsys.readouterr().out.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith(f"warning: left out 5 file(s) under {root}")
    assert ".DS_Store, ._img_000.jpg, README.txt, Thumbs.db, desktop.ini" in warning[0]
    assert classes == split_of(synthetic_root, per_class=4)[0]
    assert {e.path for e in entries} == {e.path for e in clean} | {"square/IMG_9.JPG"}

    # The fetch stage on that folder: it runs, warns once, and decodes only the images.
    (root / "square" / "IMG_9.JPG").unlink()
    in_tmp = tmp_path / "ws"
    in_tmp.mkdir()
    params["data"].update(source="local", path=str(root))
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(in_tmp)
    assert main(["fetch"]) == 0
    out = capsys.readouterr().out
    assert out.count("warning: left out 5 file(s)") == 1
    assert {r.path for r in D.read_manifest(in_tmp / "manifest.csv")} == {e.path for e in clean}


def test_a_file_named_as_an_image_that_does_not_decode_is_still_a_bad_image(tmp_path, synthetic_root):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    (root / "circle" / "notes.jpg").write_text("not a picture")
    classes, entries = D.scan(root)
    assert "circle/notes.jpg" in {e.path for e in entries}
    with pytest.raises(D.DataError, match=r"notes.jpg: not a readable image"):
        D.build_cache(root, entries, classes, 32, "error")


def test_a_class_folder_with_no_image_by_name_is_an_empty_class_folder(tmp_path, synthetic_root):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    (root / "extra").mkdir()
    (root / "extra" / "Thumbs.db").write_bytes(b"\0")
    with pytest.raises(D.DataError, match=r"data/extra: empty class folder \(1 file\(s\), none an image by name\)"):
        D.scan(root)


def test_a_fewshot_subset_larger_than_a_class_is_refused_naming_key_class_and_count(synthetic_root):
    classes, entries = D.scan(synthetic_root)
    pool = collections.Counter(e.cls for e in split_of(synthetic_root, per_class=2)[1] if e.full in ("train", "val"))
    smallest = min(pool.values())
    cls = min(c for c in pool if pool[c] == smallest)
    split_of(synthetic_root, per_class=smallest)  # exactly what the smallest class has: accepted
    with pytest.raises(
        D.DataError,
        match=rf"'fewshot.per_class' is {smallest + 1}, but class '{cls}' has only {smallest} image\(s\) .*"
        rf"set fewshot.per_class to at most {smallest}",
    ):
        split_of(synthetic_root, per_class=smallest + 1)
