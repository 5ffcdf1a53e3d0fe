"""scripts/pretraining-budget.py: its tests against scratch from hand-made per-image results, and a
publication from experiments that lack them, refused. End to end, on the baseline the domains
script's test shares: test_sweeps_end_to_end.py."""

import json

import pytest
from conftest import PROJECT, git, load_script

from tlstudy.lib import findings

SCRIPT = PROJECT / "scripts/pretraining-budget.py"
TRANSFER = ["classifier", "finetune", "fewshot_classifier", "fewshot_finetune"]


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

    # findings.md: a line per family, each budget named under the verdict the rule gave it.
    said = script.finding(numbers).splitlines()
    assert [line.split("**")[1] for line in said] == [f"{p} vs {out[BUDGETS[0]][p]['scratch']} across budgets"
                                                      for p in script.PARTS]  # fmt: skip
    by_part, every = dict(zip(script.PARTS, said)), ", ".join(f"`{n}`" for n in BUDGETS)
    assert by_part["classifier"].endswith(f"(Holm-adjusted, 3 tests): {findings.NO_DIFFERENCE}: {every}.")
    assert (
        f"{findings.PASSES}: `pretrain-030ep`, `pretrain-060ep`; {findings.NO_DIFFERENCE}: `pretrain-012ep`."
        in by_part["finetune"]
    )
    assert by_part["fewshot_classifier"].endswith(f"{findings.BELOW}: {every}.")


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
