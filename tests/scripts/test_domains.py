"""scripts/domains.py: each PACS domain as the target. The table, its caption and the verdicts
from hand-made details and per-image predictions; the refusals (a publication without per-image
predictions, files of another target, the baseline's own domain as an experiment). End to end
on a PACS-like archive: test_sweeps_end_to_end.py."""

import csv
import io
import json
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import PROJECT, load_script

from tlstudy import params as P
from tlstudy.data.pacs_rows import PACS_CLASSES
from tlstudy.lib import findings
from tlstudy.tools import profile

SCRIPT = PROJECT / "scripts/domains.py"
domains = load_script("domains")

NAME = "target-sketch"
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
