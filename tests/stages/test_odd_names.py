"""Any name the filesystem allows: class folders and files named with spaces, non-ASCII letters,
commas, quotes or a `$` go through fetch (manifest, split lists, cache) and the report by their
exact names; names whose bytes are not UTF-8 are refused all at once, each shown readably, before
anything is written. Real JPEGs in a temporary folder, the real fetch stage and report code."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from conftest import PROJECT
from PIL import Image

from tlstudy.cli import main
from tlstudy.data import images as D

# Class folder -> its images; the first of each class is the crossval (test) image of the lists.
ODD = {
    "my dog": ["Élan photo 1.jpg", 'a "quoted", name.jpg', "猫 2.jpg", "plain.jpg", "x  two  spaces .jpg"],
    "Élan ß": ["café au lait.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"],
    "$\\frac$ cats": ["1 $5 bill.jpg", "g.jpg", "h.jpg", "i.jpg", "j.jpg"],
}

PLAIN = {"square": ["a.jpg", "b.jpg", "c.jpg"], "circle": ["a.jpg", "b.jpg", "c.jpg"]}


def jpeg(path, shade: int) -> None:
    """A small real JPEG; `path` may be bytes (a name that is not UTF-8)."""
    with open(path, "wb") as f:
        Image.new("RGB", (40, 40), (shade, 255 - shade, (7 * shade) % 256)).save(f, "JPEG")


def make_folder(root, classes: dict[str, list[str]]):
    shade = 0
    for cls, names in classes.items():
        (root / cls).mkdir(parents=True)
        for name in names:
            jpeg(root / cls / name, shade)
            shade += 11
    return root


def fetch_params(params, root) -> dict:
    params["data"].update(source="local", path=str(root), image_size=32)
    params["fewshot"]["per_class"] = 2
    return params


def test_spaces_and_non_ascii_names_go_through_fetch_the_split_lists_and_the_report(tmp_path, in_tmp, params):
    """The names with spaces used to be cut at the first space in the split lists (`my`), and a
    class named `$\\frac$ cats` ended the report's figures with a mathtext ValueError."""
    from tlstudy.stages.report import document, prediction_figures
    from tlstudy.stages.report.inputs import Inputs

    root = make_folder(tmp_path / "data", ODD)
    (root / "splits").mkdir()
    lines = {"train": [], "crossval": []}
    for label, (cls, names) in enumerate(ODD.items(), 1):
        for i, name in enumerate(names):
            lines["crossval" if i == 0 else "train"].append(f"cartoon/{cls}/{name} {label}\n")
    for subset, rows in lines.items():
        (root / "splits" / f"cartoon_{subset}_kfold.txt").write_text("".join(rows), encoding="utf-8")
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(fetch_params(params, root)))

    assert main(["fetch"]) == 0
    expected = {f"{cls}/{name}" for cls, names in ODD.items() for name in names}
    rows = D.read_manifest(in_tmp / "manifest.csv")
    assert {r.path for r in rows} == expected and not any(r.excluded for r in rows)
    assert {r.path for r in rows if r.full == "test"} == {f"{cls}/{names[0]}" for cls, names in ODD.items()}
    assert all(r.cls == r.path.rsplit("/", 1)[0] for r in rows)
    (in_tmp / "manifest.csv").read_bytes().decode("utf-8")  # UTF-8, whatever the locale

    ds = D.load(in_tmp / "work/images.pt", in_tmp / "manifest.csv")
    assert ds.classes == sorted(ODD) and set(ds.paths) == expected
    for path in expected:  # each exact name points at its own file's pixels
        assert torch.equal(ds.images[ds.paths.index(path)], D.decode(root / path, 32)), path

    # Predictions as evaluate writes them, every test image taken for the wrong class; the
    # report finds each one's pixels in the cache by its name and draws the class names as text.
    from tlstudy.stages.evaluate import predictions_csv

    test = ds.roles["full"]["test"]
    labels = ds.labels[test]
    probs = torch.nn.functional.one_hot((labels + 1) % len(ds.classes), len(ds.classes)).float()
    part_dir = in_tmp / "plots/predictions/scratch"
    part_dir.mkdir(parents=True)
    (part_dir / "sgd.csv").write_bytes(predictions_csv([ds.paths[i] for i in test], labels, probs, ds.classes).encode())
    (in_tmp / "details").mkdir(exist_ok=True)
    (in_tmp / "details/scratch.json").write_text(json.dumps({"sgd": {"val_acc": 0.5, "test_acc": 0.0}}))
    inp = Inputs(params)
    shown = document.misclassified(["scratch"], inp, in_tmp / "work/images.pt")
    assert {row["path"] for _, row, _ in shown} == {f"{cls}/{names[0]}" for cls, names in ODD.items()}
    for _, row, img in shown:
        assert torch.equal(img, ds.images[ds.paths.index(row["path"])])
    assert prediction_figures.misclassified_figure(shown, in_tmp / "mis.png").stat().st_size > 0
    matrices = document.confusion_matrices(inp)
    assert matrices[0][1] == sorted(ODD)
    assert prediction_figures.confusion_figure(matrices, in_tmp / "confusion.png").stat().st_size > 0


def test_names_that_are_not_utf8_are_refused_all_at_once_before_anything_is_written(tmp_path, in_tmp, params, capsys):
    """They ended fetch with a UnicodeEncodeError traceback at the manifest, after the cache was
    written."""
    from tlstudy.stages import pretrain

    root = make_folder(tmp_path / "data", PLAIN)
    jpeg(os.fsencode(root / "square") + b"/caf\xe9 \xff.jpg", 200)
    os.mkdir(os.fsencode(root) + b"/b\xe4d class")
    for name in (b"a.jpg", b"b.jpg", b"\xfe.jpg"):
        jpeg(os.fsencode(root) + b"/b\xe4d class/" + name, 90)
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(fetch_params(params, root)))
    (in_tmp / "manifest.csv").write_text("path,class,full,fewshot,excluded\nearlier,run,,,\n")
    before = (in_tmp / "manifest.csv").read_bytes()

    assert main(["fetch"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert err.startswith(f"error: {root}: 3 name(s) not valid UTF-8 (shown with each such byte as \\xNN): ")
    # Each one by itself, escaped; the folder once, not once per good file in it.
    assert "b\\xe4d class/, b\\xe4d class/\\xfe.jpg, square/caf\\xe9 \\xff.jpg; " in err
    assert "so rename them to UTF-8" in err
    assert (in_tmp / "manifest.csv").read_bytes() == before
    assert not (in_tmp / "work").exists() and not (in_tmp / "metrics").exists()

    # Pretraining's source folders are scanned by the same code.
    sources = tmp_path / "sources"
    sources.mkdir()
    os.rename(os.fsencode(root), os.fsencode(sources / "photo"))
    with pytest.raises(D.DataError, match=r"sources/photo: 3 name\(s\) not valid UTF-8"):
        pretrain.scan(sources, ["photo"], ["b\udce4d class", "circle", "square"])


def test_a_file_left_out_by_its_name_is_shown_escaped_in_the_warning(tmp_path, in_tmp, params, capsys):
    """Thumbs.db-like files beside the images are only listed; one whose name is not UTF-8 made
    the warning itself fail (print to a UTF-8 stream), ending fetch with a traceback."""
    root = make_folder(tmp_path / "data", PLAIN)
    (root / "square").joinpath(os.fsdecode(b"Thumbs\xff.db")).write_bytes(b"\0" * 16)
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(fetch_params(params, root)))

    assert main(["fetch"]) == 0
    out = capsys.readouterr().out
    assert f"warning: left out 1 file(s) under {root} that are not images by name (Thumbs\\xff.db)" in out
    assert len(D.read_manifest(in_tmp / "manifest.csv")) == 6


def test_split_lists_are_read_as_utf8_with_a_bom_and_a_bad_line_is_named(tmp_path):
    lst = tmp_path / "x_train_kfold.txt"
    lst.write_bytes("\ufeffcartoon/my dog/Élan photo 1.jpg 1\r\ncartoon/my dog/b.jpg\t1\r\n".encode())
    assert D.read_split_list(lst) == ["my dog/Élan photo 1.jpg", "my dog/b.jpg"]
    lst.write_bytes(b"cartoon/dog/a.jpg 1\ncartoon/dog/caf\xe9.jpg 1\n")
    with pytest.raises(D.DataError) as err:
        D.read_split_list(lst)
    assert str(err.value).startswith(f"{lst}:2: not UTF-8 (cartoon/dog/caf\\xe9.jpg 1); save the list as UTF-8")


def test_derived_split_lists_keep_archive_names_with_spaces(tmp_path):
    """pacs_archive keeps an archive's file names with spaces (`_place`); the lists it derives
    for them were read back cut at the first space, so the folder never counted as complete."""
    from tlstudy.data import pacs_archive as A
    from tlstudy.data import pacs_splits

    ref = pacs_splits.pacs_reference()
    root = tmp_path / "pacs"
    for cls in A.PACS_CLASSES:
        need = sum(r["official_subset"] == "crossval" and r["path"].startswith(f"{cls}/") for r in ref)
        (root / cls).mkdir(parents=True)
        for i in range(need + 2):
            (root / cls / f"pic {i:03d} Élan.jpg").write_bytes(b"")
    A.derive_split_lists(root, ref)
    (root / A.PROVENANCE_FILE).write_text("{}")
    named = [n for p in D.find_split_lists(root) for n in D.read_split_list(p)]
    assert sorted(named) == sorted(f"{p.parent.name}/{p.name}" for p in root.glob("*/*.jpg"))
    assert A.pacs_complete(root)


def test_under_a_non_utf8_locale_the_manifest_reads_back_and_names_are_refused_with_the_fix(tmp_path):
    """A node whose locale is plain C without Python's UTF-8 mode: the manifest another machine
    wrote read as ASCII (UnicodeDecodeError), and a folder's UTF-8 names were taken as undecodable."""
    make_folder(tmp_path / "data", {"my dog": ["Élan photo 1.jpg"], "cat": ["a.jpg"]})
    manifest = tmp_path / "manifest.csv"
    D.write_manifest(manifest, [D.Entry("my dog/Élan photo 1.jpg", "my dog", "test", "test")])
    probe = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from tlstudy.data import images as D
        print(sys.getfilesystemencoding())
        print(ascii([e.path for e in D.read_manifest(Path({str(manifest)!r}))]))
        try:
            D.scan(Path({str(tmp_path / "data")!r}))
        except D.DataError as exc:
            print(str(exc).encode("ascii", "backslashreplace").decode())
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG", "PYTHONUTF8", "PYTHONIOENCODING"))}
    env |= {"LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", "PYTHONPATH": str(PROJECT / "src")}
    run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, encoding="utf-8")
    assert run.returncode == 0, run.stderr
    encoding, paths, refusal = run.stdout.splitlines()
    assert encoding == "ascii"
    assert paths == ascii(["my dog/Élan photo 1.jpg"])
    assert refusal.startswith(f"{tmp_path / 'data'}: Python reads file names here as ascii (the locale), so 1 UTF-8")
    assert refusal.endswith("run under a UTF-8 locale (LANG=C.UTF-8) or with PYTHONUTF8=1")


def test_a_bad_image_named_with_a_line_break_is_listed_on_one_line_and_kept_in_the_manifest(tmp_path):
    root = make_folder(tmp_path / "data", PLAIN)
    (root / "circle" / "line\nbreak\t.jpg").write_bytes(b"")
    classes, entries = D.scan(root)
    with pytest.raises(D.DataError) as err:
        D.build_cache(root, entries, classes, 32, "error")
    assert f"\n  {root}/circle/line\\nbreak\\t.jpg: empty file\n" in str(err.value)
    D.build_cache(root, entries, classes, 32, "skip")
    D.write_manifest(tmp_path / "manifest.csv", entries)
    rows = D.read_manifest(tmp_path / "manifest.csv")
    excluded = [(r.path, r.excluded) for r in rows if r.excluded]
    assert excluded == [("circle/line\nbreak\t.jpg", "unreadable: empty file")]
