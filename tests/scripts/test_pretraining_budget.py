"""scripts/pretraining-budget.py end to end on a tiny workspace of generated images: two budgets
(the baseline's 1 epoch, 2 epochs of the strong recipe), one seed; real `dvc exp run`s, the
second killed mid-pretraining and run again, each carried out of the workspace once done, then
the publication, then both again, and a publication from the carried folders alone. Before it,
its tests against scratch from hand-made per-image results, and a publication from experiments
that lack them."""

import csv
import io
import json
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import PROJECT, at_rev, killed_once, load_script, tiny_overlay, tiny_workspace

from tlstudy.lib import findings

SCRIPT = PROJECT / "scripts/pretraining-budget.py"
TRANSFER = ["classifier", "finetune", "fewshot_classifier", "fewshot_finetune"]
# The offline profile's shape (parts from scratch, transfer parts from the backbone pretrained
# here, a sweep the budgets leave out) at the demo's size.
OVERLAY = tiny_overlay(
    keep=("scratch", "fewshot_scratch", "pacs_sources"),
    optimizer=["sgd", "adam"],
    data={"synthetic_per_class": 10},
    pretrain={"pacs_sources": {"source": "synthetic", "epochs": 1, "batch_size": 16, "lr": 0.01}},
    transfer={
        "classifier": {"subset": "full", "init": "pacs_sources", "trainable": "head"},
        "finetune": {"subset": "full", "init": "pacs_sources", "trainable": "all"},
        "fewshot_classifier": {"subset": "fewshot", "init": "pacs_sources", "trainable": "head"},
        "fewshot_finetune": {"subset": "fewshot", "init": "pacs_sources", "trainable": "all"},
        "augment": {
            "subset": "fewshot",
            "init": "pacs_sources",
            "trainable": "all",
            "optimizer": ["sgd"],
            "augment": ["none", "hflip"],
        },
    },
)
PLAN = ["--epochs", "1", "--strong", "2"]
NAMES = ["pretrain-001ep", "pretrain-002ep-strong"]


def script(*args) -> str:
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def killed_once_inside_the_strong_pretraining(ws, carried) -> str:
    """`run`, killed once the strong experiment's pretraining stage has begun; what it printed."""
    argv = [sys.executable, str(SCRIPT), "run", "--workspace", str(ws), "--carried", str(carried), *PLAN]
    return killed_once(argv, f"budget: {NAMES[1]}:", "pretrain pacs_sources epoch 1/")


def show(repo, rev: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True, check=True).stdout


def files(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def budget_script():
    return load_script("pretraining-budget")


IMAGES = [f"cartoon/{i:03d}.png" for i in range(100)]
BUDGETS = ["pretrain-012ep", "pretrain-030ep", "pretrain-060ep"]


def right_on(indices) -> dict[str, dict[str, bool]]:
    """seed -> test image -> right: two seeds, right on the same images."""
    right = set(indices)
    return {seed: {img: i in right for i, img in enumerate(IMAGES)} for seed in ("0", "1")}


def model(val_acc: float, correct: dict) -> dict:
    """A group's details entry as evaluate@ writes it, its test numbers from `correct`."""
    acc = sum(map(sum, (s.values() for s in correct.values()))) / (len(correct) * len(IMAGES))
    return {"val_acc": val_acc, "test_acc": acc, "test_acc_lo": acc - 0.05, "test_acc_hi": acc + 0.05}


# Scratch (either subset) is right on half the images with its selected optimizer, SGD. Against
# it, each transfer part's selected one, Adam, at the three budgets: head-only right on 22 images
# more and 10 fewer at each (a raw p near 0.03, below 0.05 but not below 0.05 / 3); fine-tuning
# on the same images at the first budget, on all at the others; few-shot head-only on none;
# few-shot fine-tuning on the very same images as scratch. The optimizers not selected are right
# everywhere (scratch's) or nowhere (the transfer parts'): reading them would change every verdict.
HALF = range(50)
SELECTED = {
    "classifier": lambda b: [*range(10, 50), *range(50, 72)],
    "finetune": lambda b: HALF if b == 0 else range(100),
    "fewshot_classifier": lambda b: [],
    "fewshot_finetune": lambda b: HALF,
}


def hand_made(b: int) -> tuple[dict, dict]:
    """One budget's details and per-image results (part -> group -> seed -> image -> right)."""
    correct = {p: {"sgd": right_on([]), "adam": right_on(SELECTED[p](b))} for p in SELECTED}
    correct |= {p: {"sgd": right_on(HALF), "adam": right_on(range(100))} for p in ("scratch", "fewshot_scratch")}
    details = {p: {g: model(0.6 if (g == "adam") == (p in SELECTED) else 0.5, c) for g, c in groups.items()}
               for p, groups in correct.items()}  # fmt: skip
    return details, correct


def test_each_transfer_part_is_one_family_against_scratch_across_budgets_holm_adjusted():
    script = budget_script()
    compared = {}
    for b, name in enumerate(BUDGETS):
        details, correct = hand_made(b)
        compared[name] = {p: script.versus_scratch(name, details, correct, p) for p in script.PARTS}
    out = script.judged(compared)
    assert list(out) == BUDGETS and all(list(tests) == script.PARTS for tests in out.values())
    for tests in out.values():
        for part, t in tests.items():
            scratch = "fewshot_scratch" if part.startswith("fewshot") else "scratch"
            assert (t["optimizer"], t["scratch"], t["scratch_optimizer"]) == ("Adam", scratch, "SGD")
            assert t["groups"] == ["adam", "sgd"]
            assert (t["family"], t["correction"], t["m"]) == (f"{part} vs {t['scratch']} across budgets", "Holm", 3)
            assert (t["n_seeds"], t["n_images"]) == (2, len(IMAGES)) and t["lo"] <= t["diff"] <= t["hi"]
            keys = list(t)  # the effect and its interval before p
            assert keys.index("hi") < keys.index("p") < keys.index("p_adjusted") < keys.index("verdict")
            assert t["verdict"] == findings.verdict(t["diff"], t["lo"], t["hi"], t["p_adjusted"])
    column = {p: [out[n][p] for n in BUDGETS] for p in script.PARTS}
    # Below 0.05 alone, but three budgets of one family: Holm's smallest p times 3.
    for t in column["classifier"]:
        assert t["diff"] == pytest.approx(0.12) and 0.05 / 3 < t["p"] < 0.05
        assert t["p_adjusted"] == pytest.approx(3 * t["p"]) and t["verdict"] == findings.NO_DIFFERENCE
    first, *rest = column["finetune"]
    assert (first["diff"], first["lo"], first["hi"], first["p"], first["p_adjusted"]) == (0, 0, 0, 1, 1)
    assert [t["diff"] for t in rest] == [pytest.approx(0.5)] * 2
    assert [t["p_adjusted"] for t in rest] == [pytest.approx(3 * rest[0]["p"])] * 2 and rest[0]["p"] < 0.05 / 3
    assert [t["verdict"] for t in column["finetune"]] == [findings.NO_DIFFERENCE, findings.PASSES, findings.PASSES]
    assert {t["verdict"] for t in column["fewshot_classifier"]} == {findings.BELOW}
    assert {t["verdict"] for t in column["fewshot_finetune"]} == {findings.NO_DIFFERENCE}

    # summary.md: the accuracies without marks, then each test's words as the rule gives them.
    details, _ = hand_made(0)
    pre = {"epoch": 1, "val_acc": 0.5, "cartoon_test_acc": 0.3, "cartoon_test_acc_lo": 0.2, "cartoon_test_acc_hi": 0.4}
    numbers = {n: {"epochs": 12 * (b + 1), "recipe": "default recipe", "pretrain": pre, **hand_made(b)[0],
                   "vs_scratch": out[n]} for b, n in enumerate(BUDGETS)}  # fmt: skip
    text = script.table(numbers, {"parts": details})
    intro, accuracies, sentence, tests = text.split("\n\n")
    assert "▲" not in accuracies and "▼" not in accuracies and "p < 0.05" not in intro
    assert "One family per transfer part, its tests the 3 budgets" in sentence and "Holm's method" in sentence
    rows = [r.removeprefix("| ").removesuffix(" |").split(" | ") for r in tests.splitlines()[2:]]
    assert [r[0] for r in rows] == ["12 epochs", "24 epochs", "36 epochs"]
    for row, name in zip(rows, BUDGETS):
        for cell, part in zip(row[1:], script.COLUMNS):
            assert cell.rsplit("; ", 1)[1] == out[name][part]["verdict"], (name, part, cell)


def git(ws, *args) -> str:
    argv = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args]
    return subprocess.run(argv, cwd=ws, capture_output=True, text=True, check=True).stdout


def test_publish_names_the_experiment_and_file_when_per_image_predictions_are_missing(tmp_path):
    """An experiment committed before evaluate@ kept per-image predictions: one line saying which
    experiment lacks which file and how to get it, and nothing published."""
    script, ws, out = budget_script(), tmp_path / "ws", tmp_path / "published"
    details, _ = hand_made(0)
    pre = {"epoch": 1, "val_acc": 0.5, "val_acc_lo": 0.4, "val_acc_hi": 0.6, "target_test_acc": 0.3,
           "target_test_acc_lo": 0.2, "target_test_acc_hi": 0.4, "sec_per_epoch": 1.0}  # fmt: skip
    files = {
        "details/pretrain/pacs_sources.json": json.dumps(pre),
        "params.yaml": "{}\n",
        "dvc.lock": "{}\n",
        "headline.json": "{}",
        **{f"metrics/{p}.json": "{}" for p in ["pretrain/pacs_sources", *TRANSFER]},
    }
    for part, d in details.items():
        files[f"details/{part}.json"] = json.dumps({g: {**m, "interval": "95 % CI"} for g, m in d.items()})
        if part != "fewshot_scratch":
            files[f"details/predictions/{part}.csv"] = "path,label,sgd:seed0,adam:seed0\na.png,dog,dog,cat\n"
    for path, text in files.items():
        (ws / path).parent.mkdir(parents=True, exist_ok=True)
        (ws / path).write_text(text)
    git(ws, "init", "-q")
    git(ws, "add", "-A")
    git(ws, "commit", "-q", "-m", "an experiment of the baseline")
    head = git(ws, "rev-parse", "HEAD").strip()
    git(ws, "update-ref", f"refs/exps/{head[:2]}/{head[2:]}/pretrain-001ep", head)
    with pytest.raises(SystemExit) as e:
        script.main(["publish", "--workspace", str(ws), "--out", str(out), "--epochs", "1", "--strong", "0"])
    message = str(e.value)
    assert message.startswith("budget: pretrain-001ep: details/predictions/fewshot_scratch.csv is not in the")
    assert message.endswith("re-run the sweep (`python scripts/pretraining-budget.py run`)") and "\n" not in message
    assert not out.exists(), "a refused publish writes nothing"


@pytest.mark.slow
def test_budgets_run_as_experiments_and_publish_the_same_files_twice(tmp_path):
    ws = tiny_workspace(tmp_path / "ws", OVERLAY)
    out, carried = tmp_path / "published", tmp_path / "carried"
    where = ["--workspace", str(ws), "--carried", str(carried), *PLAN]

    killed = killed_once_inside_the_strong_pretraining(ws, carried)
    # The first experiment was carried out as soon as it finished; the killed one was not.
    assert f"budget: {NAMES[0]}: carried to {carried / NAMES[0]}" in killed
    assert [p.name for p in carried.iterdir()] == [NAMES[0]]
    log = script("run", *where)
    # refs/exps/<2 chars>/<38 chars of the baseline>/<name>; DVC's own refs/exps/exec/… aside.
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], cwd=ws,
                          capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    exps = {r.split("/")[4]: r for r in refs if len(r.split("/")) == 5 and "exec" not in r.split("/")}
    assert sorted(exps) == NAMES
    # The budget equal to the baseline's is the baseline's backbone, kept rather than retrained;
    # the strong one pretrains, and after the kill its rerun goes on from there.
    first_budget, strong = killed.split(f"budget: {NAMES[1]}:", 1)
    assert "Running stage 'pretrain@pacs_sources'" not in first_budget
    assert "Running stage 'pretrain@pacs_sources'" in strong
    assert f"budget: {NAMES[0]}: carried before, in {carried / NAMES[0]}; kept" in log
    assert f"budget: {NAMES[1]}: exp run" in log and f"budget: {NAMES[1]}: carried to" in log
    record = json.loads((carried / NAMES[1] / "sittings.json").read_text())
    assert record["experiment"] == NAMES[1] and [s["finished"] for s in record["sittings"]] == [False, True]
    for name in NAMES:  # as committed with the experiment, byte for byte
        for rel in ("params.yaml", "dvc.lock", "details/predictions/finetune.csv"):
            assert (carried / name / rel).read_text() == show(ws, exps[name], rel)
    for name, epochs, variant in [(NAMES[0], 1, "hflip_rot10"), (NAMES[1], 2, "strong")]:
        params = yaml.safe_load(show(ws, exps[name], "params.yaml"))
        assert (
            params["pretrain"]["pacs_sources"]["epochs"] == epochs
            and params["pretrain"]["pacs_sources"]["augment"] == variant
        )
        assert "augment" not in params["transfer"] and set(TRANSFER) <= set(params["transfer"])
    assert yaml.safe_load((ws / "params.yaml").read_text()) == yaml.safe_load(show(ws, "HEAD", "params.yaml")), (
        "run leaves the workspace on the baseline's params"
    )

    script("publish", "--out", str(out), *where)
    assert not carried.exists(), "publish removes the carried folders it published"
    numbers = json.loads((out / "budget.json").read_text())
    assert list(numbers) == NAMES and [numbers[n]["epochs"] for n in NAMES] == [1, 2]
    for name in NAMES:
        assert 1 <= numbers[name]["pretrain"]["epoch"] <= numbers[name]["epochs"]  # its best epoch by validation
        for part in TRANSFER:
            for opt in ("sgd", "adam"):
                m = numbers[name][part][opt]
                assert m["test_acc_lo"] <= m["test_acc"] <= m["test_acc_hi"]
                assert m == {k: at_rev(ws, exps[name], f"details/{part}.json")[opt][k] for k in m}
        # Each transfer part against scratch, from the per-image predictions published beside:
        # the selected models' accuracy difference (one seed: a bootstrap over the test images).
        for part, t in numbers[name]["vs_scratch"].items():
            scratch = "fewshot_scratch" if part.startswith("fewshot") else "scratch"
            assert {"diff", "lo", "hi", "p", "p_adjusted", "verdict", "family"} <= set(t) and t["n_seeds"] == 1
            assert t["family"] == f"{part} vs {scratch} across budgets" and t["m"] == len(NAMES)
            assert t["lo"] <= t["diff"] <= t["hi"] and t["p"] <= t["p_adjusted"] <= 1
            assert t["verdict"] == findings.verdict(t["diff"], t["lo"], t["hi"], t["p_adjusted"])
            right = {}
            for p, group in zip((part, scratch), t["groups"]):
                rows = list(csv.DictReader(io.StringIO((out / name / f"details/predictions/{p}.csv").read_text())))
                right[p] = [r[f"{group}:seed0"] == r["label"] for r in rows]
            assert t["diff"] == pytest.approx((sum(right[part]) - sum(right[scratch])) / len(right[part]))
        for part in [*TRANSFER, "scratch", "fewshot_scratch"]:
            path = f"details/predictions/{part}.csv"
            assert (out / name / path).read_text() == show(ws, exps[name], path)
        # scratch does not depend on the budget: every experiment holds the baseline's.
        assert numbers[name]["scratch"] == numbers[NAMES[0]]["scratch"]
        assert at_rev(ws, exps[name], "metrics/scratch.json") == at_rev(ws, "HEAD", "metrics/scratch.json")
        folder = out / name
        assert {p.name for p in folder.iterdir()} == {
            "overrides.json", "params.yaml", "dvc.lock", "headline.json", "metrics", "details"}  # fmt: skip
        assert json.loads((folder / "metrics/pretrain/pacs_sources.json").read_text()) == at_rev(
            ws, exps[name], "metrics/pretrain/pacs_sources.json"
        )
    # The 1-epoch budget is the baseline: same backbone, same transfer results.
    assert at_rev(ws, exps[NAMES[0]], "metrics/finetune.json") == at_rev(ws, "HEAD", "metrics/finetune.json")
    # Each part's family: its tests the budgets, Holm-adjusted together.
    for part in TRANSFER:
        tests = {n: numbers[n]["vs_scratch"][part] for n in NAMES}
        holm = findings.adjust(part, {n: t["p"] for n, t in tests.items()})["tests"]
        assert {n: t["p_adjusted"] for n, t in tests.items()} == {n: holm[n]["p_adjusted"] for n in NAMES}
    # summary.md: a row per budget, then scratch and the study's ImageNet values; then each test's
    # words as the rule gives them for the published numbers.
    _, accuracies, sentence, tests = (out / "summary.md").read_text().split("\n\n")
    first_cells = [r.split(" | ")[0].removeprefix("| ") for r in accuracies.splitlines()[2:]]
    assert first_cells == [
        "1 epoch",
        "2 epochs, strong colour augmentation",
        "none: scratch (fewshot_scratch)",
        "ImageNet (the study)",
    ]
    assert "One family per transfer part, its tests the 2 budgets" in sentence and "Holm's method" in sentence
    test_rows = [r.removeprefix("| ").removesuffix(" |").split(" | ") for r in tests.splitlines()[2:]]
    assert [r[0] for r in test_rows] == first_cells[:2]
    for row, name in zip(test_rows, NAMES):
        words = [cell.rsplit("; ", 1)[1] for cell in row[1:]]
        t = numbers[name]["vs_scratch"]
        assert words == [findings.verdict(t[p]["diff"], t[p]["lo"], t[p]["hi"], t[p]["p_adjusted"]) for p in TRANSFER]
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing["experiments"]) == set(NAMES) and all(t["wall_s"] > 0 for t in timing["experiments"].values())
    # The killed sitting kept what it measured; the second finished the experiment.
    sittings = timing["experiments"][NAMES[1]]["by_sitting"]
    assert [s["finished"] for s in sittings] == [False, True] and sittings[0]["wall_s"] > 0
    assert timing["total"]["wall_s"] == round(sum(t["wall_s"] for t in timing["experiments"].values()), 1)
    assert (out / "budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = files(out)

    # Again: nothing re-runs (each experiment is carried once more), and the publication is the
    # same bytes; then with the workspace's experiments gone, from the carried folders alone.
    again = script("run", *where)
    assert again.count("done before; kept") == 2 and "Running stage" not in again
    script("publish", "--out", str(out), *where)
    assert files(out) == first
    script("run", *where)
    for ref in exps.values():
        git(ws, "update-ref", "-d", ref)
    shutil.rmtree(ws / "work")  # the timing file too: the sittings come from the carried folders
    script("publish", "--out", str(out), *where)
    assert files(out) == first and not carried.exists()
