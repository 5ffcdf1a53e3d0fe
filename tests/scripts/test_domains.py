"""scripts/domains.py: each PACS domain as the target. The table, its caption and the verdicts
from hand-made details and per-image predictions; the refusals (a publication without per-image
predictions, files of another target, the baseline's own domain as an experiment); and end to end
on a tiny four-domain PACS-like archive served on 127.0.0.1: the baseline (cartoon) run and
published as the offline profile is, sketch as a real `dvc exp run` killed mid-run and run again,
then the publication, then both again."""

import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from conftest import PROJECT, at_rev, killed_once, load_script, tiny_overlay, tiny_workspace
from http_fixture import Server
from PIL import Image

from tlstudy import params as P
from tlstudy.data.pacs_rows import PACS_CLASSES
from tlstudy.lib import findings
from tlstudy.tools import profile

SCRIPT = PROJECT / "scripts/domains.py"
domains = load_script("domains")

PARTS = ["scratch", "classifier", "finetune", "fewshot_scratch", "fewshot_classifier", "fewshot_finetune"]
N_IMAGES, SEEDS = 100, ["0", "1", "2"]


# --- hand-made targets -------------------------------------------------------------------------------


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def hand_made(folder, domain: str, shares: dict[str, tuple[str, float]]):
    """A target's files as a publication holds them, at the offline profile's params: per part
    the selected optimizer and the share of the test images every seed of it gets right (the
    first images; the other optimizer gets none right and has the lower validation accuracy)."""
    params = profile.profile_params(PROJECT, "offline")
    params["data"]["domain"] = domain
    write(folder / "params.yaml", yaml.safe_dump(params))
    write(folder / "dvc.lock", "schema: '2.0'\n")
    write(folder / "details/data.json", json.dumps({"domain": domain, "split": "derived", "how": "seeded"}))
    pretrain = {"target": domain, "target_test_acc": 0.3, "target_test_acc_lo": 0.25, "target_test_acc_hi": 0.35,
                "target_test_n": N_IMAGES, "domains": P.source_domains(params)}  # fmt: skip
    for sub in ("metrics", "details"):
        write(folder / f"{sub}/pretrain/pacs_sources.json", json.dumps(pretrain))
    labels = [PACS_CLASSES[i % 7] for i in range(N_IMAGES)]
    wrong = [PACS_CLASSES[(i + 1) % 7] for i in range(N_IMAGES)]
    for part, (chosen, share) in shares.items():
        right = {g: (share if g == chosen else 0.0) for g in ("sgd", "adam")}
        details = {
            g: {"val_acc": 0.6 if g == chosen else 0.5, "test_acc": r, "test_acc_lo": max(0.0, r - 0.05),
                "test_acc_hi": min(1.0, r + 0.05), "interval": "95 % CI over test images and 3 seeds (bootstrap)",
                "n_test": N_IMAGES, "seeds": {s: {"val_acc": 0.5, "test_acc": r} for s in SEEDS}}
            for g, r in right.items()
        }  # fmt: skip
        write(folder / f"details/{part}.json", json.dumps(details))
        write(folder / f"metrics/{part}.json", json.dumps({g: {"test_acc": r} for g, r in right.items()}))
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "label", *(f"{g}:seed{s}" for g in right for s in SEEDS)])
        for i in range(N_IMAGES):
            cells = [labels[i] if i < right[g] * N_IMAGES else wrong[i] for g in right for _ in SEEDS]
            w.writerow([f"{labels[i]}/pic_{i:03d}.jpg", labels[i], *cells])
        write(folder / f"details/predictions/{part}.csv", buf.getvalue())
    return folder


# cartoon: every transfer part exactly as good as scratch. sketch: fine-tuning (Adam, selected by
# its validation accuracy) far above scratch, head-only the same as scratch, few-shot head-only
# below few-shot scratch, few-shot fine-tuning above it.
SAME = {p: ("sgd", 0.4) for p in PARTS}
SKETCH = {**SAME, "finetune": ("adam", 0.9), "fewshot_classifier": ("sgd", 0.1), "fewshot_finetune": ("sgd", 0.7)}


def test_table_caption_and_verdicts_from_hand_made_targets(tmp_path):
    cartoon = domains.folder_text(hand_made(tmp_path / "c", "cartoon", SAME))
    sketch = domains.folder_text(hand_made(tmp_path / "s", "sketch", SKETCH))
    loaded = {
        "cartoon": domains.load("cartoon", cartoon, "pub", "republish"),
        "sketch": domains.load("sketch", sketch, "experiment target-sketch", "run again", "target-sketch"),
    }
    got = domains.numbers(loaded)

    family = got["family"]
    assert family["family"] == "each transfer part vs scratch across target domains" and family["method"] == "holm"
    # One test per target and transfer part, corrected together; p never falls by the correction.
    assert family["m"] == 8 and all(t["p_adjusted"] >= t["p"] for t in family["tests"].values())
    verdict = {name: t["verdict"] for name, t in family["tests"].items()}
    assert verdict == {
        **{f"cartoon: {p}": findings.NO_DIFFERENCE for p in PARTS if "scratch" not in p},
        "sketch: classifier": findings.NO_DIFFERENCE,
        "sketch: finetune": findings.PASSES,
        "sketch: fewshot_classifier": findings.BELOW,
        "sketch: fewshot_finetune": findings.PASSES,
    }
    # The difference is the selected models' (Adam for sketch's fine-tuning), paired by image and seed.
    sketch = got["targets"]["sketch"]
    assert sketch["parts"]["finetune"]["optimizer"] == "adam"
    assert family["tests"]["sketch: finetune"]["diff"] == pytest.approx(0.9 - 0.4)
    assert family["tests"]["sketch: fewshot_classifier"]["diff"] == pytest.approx(0.1 - 0.4)
    assert sketch["parts"]["finetune"]["vs_scratch"] == "sketch: finetune"
    assert "vs_scratch" not in sketch["parts"]["scratch"]
    # Both ceilings per target: DomainBed's ResNet-50 with its standard error, DeepDG's ResNet-18 with none.
    assert sketch["ceilings"] == {"DomainBed ERM": {"acc": 79.3, "se": 1.0}, "DeepDG ERM": {"acc": 76.94, "se": None}}
    assert got["targets"]["cartoon"]["ceilings"]["DomainBed ERM"]["acc"] == 80.8
    assert [c["name"] for c in got["ceilings"]] == ["DomainBed ERM", "DeepDG ERM"]
    assert sketch["sources"] == ["art_painting", "cartoon", "photo"] and sketch["majority_class"] == pytest.approx(0.15)

    text = domains.table(got)
    caption, rows = text.split("\n\n", 1)
    said = ["ResNet-50", "ImageNet", "224 px", "DeepDG", "one number", "64 px", "leave-one-domain-out", "Holm",
            "validation images of the training domains", "one pretraining run per target", "(m = 8)"]  # fmt: skip
    for words in said:
        assert words in caption, words
    lines = [r for r in rows.splitlines() if r.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    ceilings = ["ceiling: DomainBed ERM", "ceiling: DeepDG ERM"]
    assert head == ["target", "split", "no training on the target", *domains.COLUMNS.values(), *ceilings]
    assert list(domains.COLUMNS.values()) == [
        "scratch",
        "head-only",
        "fine-tuning",
        "few-shot scratch",
        "few-shot head-only",
        "few-shot fine-tuning",
    ]
    cells = {r.split(" | ")[0].removeprefix("| "): [c.strip() for c in r.strip("|").split("|")] for r in lines[1:]}
    assert list(cells) == ["cartoon (offline publication)", "sketch"]
    assert cells["sketch"][2] == "30.0 [25.0, 35.0]" and cells["sketch"][-2:] == ["79.3 ± 1.0", "76.94"]
    assert cells["sketch"][3] == "40.0 [35.0, 45.0] SGD"
    assert cells["sketch"][5].startswith("90.0 [85.0, 95.0] Adam; +50.0 [") and cells["sketch"][5].endswith(
        findings.PASSES
    )
    assert cells["sketch"][7].endswith(findings.BELOW) and cells["sketch"][4].endswith(findings.NO_DIFFERENCE)
    assert cells["cartoon (offline publication)"][-2:] == ["80.8 ± 0.6", "77.94"]  # as each source gives it
    # The finding the README quotes: the verdicts, grouped as the rule gives them.
    said = domains.finding(got)
    assert said.startswith(f"- **{domains.FAMILY}** (Holm-adjusted, 8 tests): ") and said.count("\n") == 1
    assert f"{findings.PASSES}: `sketch: finetune`, `sketch: fewshot_finetune`;" in said
    assert f"{findings.BELOW}: `sketch: fewshot_classifier`" in said


def test_files_of_another_target_are_refused_naming_what_each_says(tmp_path):
    folder = hand_made(tmp_path / "s", "sketch", SAME)
    with pytest.raises(SystemExit) as got:
        domains.load("photo", domains.folder_text(folder), "experiment target-photo", "run it again", "target-photo")
    assert str(got.value) == (
        "domains: experiment target-photo: is not target photo: data.domain says sketch, details/data.json says "
        "sketch, details/pretrain/pacs_sources.json says sketch"
    )


def test_the_baselines_own_domain_is_no_experiment(tmp_path):
    with pytest.raises(SystemExit, match=r"--targets cartoon: the baseline's own target; its row is the offline"):
        domains.plan("cartoon", ["sketch", "cartoon"], tmp_path)
    assert domains.plan("cartoon", None, tmp_path) == {
        "target-art_painting": "art_painting", "target-photo": "photo", "target-sketch": "sketch"}  # fmt: skip


def test_local_folders_are_linked_and_a_target_or_source_missing_from_them_is_named(tmp_path):
    head = profile.profile_params(PROJECT, "offline")
    ws, have = tmp_path / "ws", tmp_path / "pacs"
    for d in ("art_painting", "photo", "sketch"):
        (have / d).mkdir(parents=True)
    # No folders given: the archive's route, the target's domain alone.
    assert domains.link_local(ws, head, {NAME: "sketch"}, None, None) is None
    assert domains.overrides("sketch", ["~transfer.augment"]) == ["data.domain=sketch", "~transfer.augment"]
    # sketch pretrains on art_painting, cartoon and photo: cartoon is in none of the folders.
    with pytest.raises(SystemExit, match="target sketch needs cartoon, in neither --data None nor --sources"):
        domains.link_local(ws, head, {NAME: "sketch"}, None, have)
    (tmp_path / "cartoon").mkdir()
    assert domains.link_local(ws, head, {NAME: "sketch"}, tmp_path / "cartoon", have) == ["pacs_sources"]
    links = {p.name: p.resolve() for p in (ws / domains.LOCAL).iterdir()}
    assert links == {"cartoon": tmp_path / "cartoon", **{d: have / d for d in ("art_painting", "photo", "sketch")}}
    assert domains.overrides("photo", [], ["pacs_sources"]) == [
        "data.domain=photo", "data.source=local", "data.path=work/pacs-local/photo",
        "pretrain.pacs_sources.source=local", "pretrain.pacs_sources.path=work/pacs-local"]  # fmt: skip


def test_a_publication_without_per_image_predictions_is_refused_saying_to_republish(tmp_path):
    """As results/offline was published before evaluate@ kept per-image predictions."""
    pub = tmp_path / "offline"
    pub.mkdir()
    for rel in ("params.yaml", "metrics", "details"):
        src = PROJECT / "results/offline" / rel
        shutil.copytree(src, pub / rel) if src.is_dir() else shutil.copy2(src, pub / rel)
    shutil.rmtree(pub / "details/predictions", ignore_errors=True)
    out = tmp_path / "out"
    argv = ["publish", "--offline", str(pub), "--workspace", str(tmp_path / "none"), "--out", str(out)]
    r = subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (
        f"domains: {pub}/details/predictions/scratch.csv: missing; the offline publication predates per-image "
        "predictions, which the tests against scratch need: republish the offline profile first (make offline), "
        "then publish again\n"
    )
    assert not out.exists()


# --- end to end --------------------------------------------------------------------------------------

URL_PATH = "/pacs/train.parquet"
OFFICIAL_TEST = {"dog": 39, "elephant": 46, "giraffe": 35, "guitar": 14, "horse": 33, "house": 29, "person": 41}
SOURCE_PER_CLASS = 10  # art_painting, photo, sketch: as a target, 1 test image a class (data.test_fraction 0.1)
# cartoon's derived split draws the official number of test images per class, so it needs more.
CARTOON_EXTRA = 8
NAME = "target-sketch"
TRANSFER = ["classifier", "finetune", "fewshot_classifier", "fewshot_finetune"]


def jpeg(domain: str, cls: str, i: int) -> bytes:
    pixels = np.random.default_rng([P.DOMAINS.index(domain), PACS_CLASSES.index(cls), i]).integers(
        0, 256, (32, 32, 3), dtype=np.uint8
    )
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def archive() -> bytes:
    """PACS's parquet layout (image{bytes, path}, domain, label as the class's index), four domains."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        (d, c, i)
        for d in P.DOMAINS
        for c in PACS_CLASSES
        for i in range(OFFICIAL_TEST[c] + CARTOON_EXTRA if d == "cartoon" else SOURCE_PER_CLASS)
    ]
    image = pa.array(
        [{"bytes": jpeg(d, c, i), "path": f"/data/PACS/kfold/{d}/{c}/pic_{i:03d}.jpg"} for d, c, i in rows],
        pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    table = pa.table({"image": image, "domain": pa.array([d for d, _, _ in rows]),
                      "label": pa.array([PACS_CLASSES.index(c) for _, c, _ in rows], pa.int64())})  # fmt: skip
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def overlay(url: str, sha256: str) -> dict:
    """The offline profile's shape (scratch parts, transfer parts from the backbone pretrained
    here, a sweep the experiments leave out) on PACS-like data, at the demo's size."""
    transfer = {
        "classifier": {"subset": "full", "init": "pacs_sources", "trainable": "head"},
        "finetune": {"subset": "full", "init": "pacs_sources", "trainable": "all"},
        "fewshot_classifier": {"subset": "fewshot", "init": "pacs_sources", "trainable": "head"},
        "fewshot_finetune": {"subset": "fewshot", "init": "pacs_sources", "trainable": "all"},
        "augment": {"subset": "fewshot", "init": "pacs_sources", "trainable": "all", "optimizer": ["sgd"],
                    "augment": ["none", "hflip"]},
    }  # fmt: skip
    return tiny_overlay(
        keep=("scratch", "fewshot_scratch", "pacs_sources"),
        data={"source": "pacs", "url": url, "sha256": sha256},
        pretrain={"pacs_sources": {"source": "pacs", "epochs": 1, "batch_size": 16, "lr": 0.01}},
        transfer=transfer,
    )


def script(*args) -> str:
    r = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, args))}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def folders(root) -> None:
    """The archive's images as folders, <domain>/<class>/<image>, as a machine with PACS on disk has them."""
    for d in P.DOMAINS:
        for c in PACS_CLASSES:
            for i in range(OFFICIAL_TEST[c] + CARTOON_EXTRA if d == "cartoon" else SOURCE_PER_CLASS):
                path = root / d / c / f"pic_{i:03d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg(d, c, i))


def killed_once_inside_a_transfer_stage(ws, pub, local, out) -> str:
    """`run`, killed once the experiment's first transfer stage has begun; what it printed."""
    argv = [sys.executable, str(SCRIPT), "run", "--workspace", str(ws), "--offline", str(pub), "--targets", "sketch",
            "--sources", str(local), "--out", str(out)]  # fmt: skip
    return killed_once(argv, f"domains: {NAME}:", "Running stage 'transfer@")


def files(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def accuracy(text: str, group: str) -> float:
    rows = list(csv.DictReader(io.StringIO(text)))
    return sum(r[f"{group}:seed0"] == r["label"] for r in rows) / len(rows)


@pytest.mark.slow
def test_a_target_runs_as_an_experiment_and_publishes_beside_the_offline_row(tmp_path):
    blob = archive()
    out = tmp_path / "published"
    with Server() as server:
        server.files[URL_PATH] = blob
        ws = tiny_workspace(tmp_path / "ws", overlay(server.url(URL_PATH), hashlib.sha256(blob).hexdigest()))
        # The baseline's row: the workspace published as `make offline` publishes it.
        recorded = {"invocations": [{"wall_s": 12.5, "stages_run": 20}], "stages": {}}
        pub = profile.publish(ws, tmp_path / "project", "offline", recorded, "test")
    # The target and its sources from folders on disk, as `make domains` gives them: no download.
    folders(tmp_path / "pacs")
    killed = killed_once_inside_a_transfer_stage(ws, pub, tmp_path / "pacs", out)
    assert not (out / "sketch").exists(), "a target is carried out of the workspace only once it is done"
    log = script("run", "--workspace", ws, "--offline", pub, "--targets", "sketch", "--sources", tmp_path / "pacs",
                 "--out", out)  # fmt: skip
    assert f"domains: {NAME}: carried to {out / 'sketch'}" in log
    carried = json.loads((out / "sketch/sittings.json").read_text())
    assert carried["experiment"] == NAME and [s["finished"] for s in carried["sittings"]] == [False, True]

    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], cwd=ws,
                          capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    exps = {r.split("/")[4]: r for r in refs if len(r.split("/")) == 5 and "exec" not in r.split("/")}
    assert list(exps) == [NAME]
    ref = exps[NAME]
    # The first sitting fetched sketch and pretrained on the other three; the second kept that.
    for stage in ("fetch", "pretrain@pacs_sources"):
        assert f"Running stage '{stage}'" in killed and f"Running stage '{stage}'" not in log, stage
    said = ["data.domain=sketch", "data.source=local", "data.path=work/pacs-local/sketch",
            "pretrain.pacs_sources.source=local", "pretrain.pacs_sources.path=work/pacs-local",
            "~transfer.augment"]  # fmt: skip
    assert f"domains: {NAME}: exp run -n {NAME} {' '.join(f'-S {o}' for o in said)}" in log
    params = yaml.safe_load(subprocess.run(["git", "show", f"{ref}:params.yaml"], cwd=ws, capture_output=True,
                                           text=True, check=True).stdout)  # fmt: skip
    assert params["data"]["domain"] == "sketch" and sorted(params["transfer"]) == sorted(TRANSFER)
    assert (params["data"]["source"], params["pretrain"]["pacs_sources"]["source"]) == ("local", "local")
    assert yaml.safe_load((ws / "params.yaml").read_text())["data"]["domain"] == "cartoon", "back to the baseline's"
    data = at_rev(ws, ref, "details/data.json")
    assert (data["domain"], data["split"], data["seed"]) == ("sketch", "derived", 0)
    backbone = at_rev(ws, ref, "details/pretrain/pacs_sources.json")
    assert backbone["target"] == "sketch" and backbone["domains"] == ["art_painting", "cartoon", "photo"]

    script("publish", "--workspace", ws, "--offline", pub, "--out", out, "--targets", "sketch")
    numbers = json.loads((out / "domains.json").read_text())
    assert list(numbers["targets"]) == ["cartoon", "sketch"]
    assert [t["experiment"] for t in numbers["targets"].values()] == [None, NAME]
    # cartoon is the publication's own numbers, sketch the experiment's.
    for domain, read in (("cartoon", lambda rel: json.loads((pub / rel).read_text())),
                         ("sketch", lambda rel: at_rev(ws, ref, rel))):  # fmt: skip
        for part, m in numbers["targets"][domain]["parts"].items():
            assert m["test_acc"] == read(f"details/{part}.json")[m["optimizer"]]["test_acc"]
        assert numbers["targets"][domain]["no_target_training"]["acc"] == read(
            "details/pretrain/pacs_sources.json")["target_test_acc"]  # fmt: skip
    family = numbers["family"]
    assert family["family"] == domains.FAMILY and family["m"] == 8 and set(family["tests"]) == {
        f"{d}: {p}" for d in ("cartoon", "sketch") for p in TRANSFER}  # fmt: skip
    for name, t in family["tests"].items():
        domain = name.split(":")[0]
        preds = (out / domain / "details/predictions").joinpath
        # One seed: the difference is that of the two models' accuracies on the same images.
        ours, base = t["groups"]
        expected = accuracy(preds(f"{t['part']}.csv").read_text(), ours) - accuracy(
            preds(f"{t['baseline']}.csv").read_text(), base)  # fmt: skip
        assert t["diff"] == pytest.approx(expected) and t["p_adjusted"] >= t["p"]
        assert t["verdict"] in findings.VERDICTS
    # The files a reader redoes the statistics from, as the publication and the experiment hold them.
    for part in PARTS:
        rel = f"details/predictions/{part}.csv"
        assert (out / "cartoon" / rel).read_bytes() == (pub / rel).read_bytes()
        shown = subprocess.run(["git", "show", f"{ref}:{rel}"], cwd=ws, capture_output=True, check=True).stdout
        assert (out / "sketch" / rel).read_bytes() == shown
    assert json.loads((out / "sketch/overrides.json").read_text()) == said
    assert not (out / "cartoon/overrides.json").exists()
    rows = [r for r in (out / "summary.md").read_text().splitlines() if r.startswith("| ")]
    assert [r.split(" | ")[0].removeprefix("| ") for r in rows[1:]] == ["cartoon (offline publication)", "sketch"]
    assert rows[-1].endswith("| 79.3 ± 1.0 | 76.94 |")
    spent = json.loads((out / "timing.json").read_text())
    sketch = spent["targets"]["sketch"]
    # The killed sitting kept what it measured; the second finished the experiment.
    assert [s["finished"] for s in sketch["by_sitting"]] == [False, True] and sketch["sittings"] == 2
    assert sketch["cpu_s"] > 0 and spent["experiments_total"]["cpu_s"] == sketch["cpu_s"]
    assert (spent["targets"]["cartoon"]["wall_s"], spent["targets"]["cartoon"]["sittings"]) == (12.5, 1)
    assert (out / "domains.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "findings.md").read_text() == domains.finding(numbers)
    first = files(out)

    # Again: nothing re-runs, and the publication is the same bytes.
    again = script("run", "--workspace", ws, "--offline", pub, "--targets", "sketch", "--sources", tmp_path / "pacs",
                   "--out", out)  # fmt: skip
    assert f"domains: {NAME}: carried before, in {out / 'sketch'}; kept" in again and "Running stage" not in again
    write(out / "photo/details/data.json", "{}")  # a target published before and not now: replaced with the rest
    script("publish", "--workspace", ws, "--offline", pub, "--out", out, "--targets", "sketch")
    assert files(out) == first
    # The workspace's experiment gone (a session ended, a fresh checkout): publish reads the carried folder.
    subprocess.run(["git", "update-ref", "-d", ref], cwd=ws, check=True)
    script("publish", "--workspace", ws, "--offline", pub, "--out", out, "--targets", "sketch")
    assert files(out) == first
