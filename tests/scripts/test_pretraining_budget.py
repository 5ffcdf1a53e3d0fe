"""scripts/pretraining-budget.py end to end on a tiny workspace of generated images: two budgets
(the baseline's 1 epoch, 2 epochs of the strong recipe), one seed; real `dvc exp run`s, the
second killed mid-pretraining and run again, then the publication, then both again."""

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml
from conftest import PROJECT, at_rev, tiny_overlay, tiny_workspace

pytestmark = pytest.mark.slow
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


def killed_once_inside_the_strong_pretraining(ws) -> str:
    """`run` as a user starts it, killed (the whole process group, as a session's end does) once
    the strong experiment's pretraining stage has begun; what it printed."""
    argv = [sys.executable, str(SCRIPT), "run", "--workspace", str(ws), *PLAN]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen, strong = [], False
    for line in proc.stdout:
        seen.append(line)
        strong = strong or line.startswith(f"budget: {NAMES[1]}:")
        if strong and line.startswith("pretrain pacs_sources epoch 1/"):
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert strong, "".join(seen)
    return "".join(seen)


def show(repo, rev: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=repo, capture_output=True, text=True, check=True).stdout


def files(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_budgets_run_as_experiments_and_publish_the_same_files_twice(tmp_path):
    ws = tiny_workspace(tmp_path / "ws", OVERLAY)
    out = tmp_path / "published"

    killed = killed_once_inside_the_strong_pretraining(ws)
    log = script("run", "--workspace", str(ws), *PLAN)
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
    assert f"budget: {NAMES[0]}: done before; kept" in log and f"budget: {NAMES[1]}: exp run" in log
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

    script("publish", "--workspace", str(ws), "--out", str(out), *PLAN)
    numbers = json.loads((out / "budget.json").read_text())
    assert list(numbers) == NAMES and [numbers[n]["epochs"] for n in NAMES] == [1, 2]
    for name in NAMES:
        assert 1 <= numbers[name]["pretrain"]["epoch"] <= numbers[name]["epochs"]  # its best epoch by validation
        for part in TRANSFER:
            for opt in ("sgd", "adam"):
                m = numbers[name][part][opt]
                assert m["test_acc_lo"] <= m["test_acc"] <= m["test_acc_hi"]
                assert m == {k: at_rev(ws, exps[name], f"details/{part}.json")[opt][k] for k in m}
        # Each transfer part against scratch: with one seed a difference, no test.
        assert {p: (v["n"], v["p"]) for p, v in numbers[name]["vs_scratch"].items()} == {p: (1, None) for p in TRANSFER}
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
    # summary.md: a row per budget, then scratch and the study's ImageNet values.
    rows = [r for r in (out / "summary.md").read_text().splitlines() if r.startswith("| ")]
    first_cells = [r.split(" | ")[0].removeprefix("| ") for r in rows[2:]]
    assert first_cells == [
        "1 epoch",
        "2 epochs, strong colour augmentation",
        "none: scratch (fewshot_scratch)",
        "ImageNet (the study)",
    ]
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing["experiments"]) == set(NAMES) and all(t["wall_s"] > 0 for t in timing["experiments"].values())
    # The killed sitting kept what it measured; the second finished the experiment.
    sittings = timing["experiments"][NAMES[1]]["by_sitting"]
    assert [s["finished"] for s in sittings] == [False, True] and sittings[0]["wall_s"] > 0
    assert timing["total"]["wall_s"] == round(sum(t["wall_s"] for t in timing["experiments"].values()), 1)
    assert (out / "budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = files(out)

    # Again: nothing re-runs, and the publication is the same bytes.
    again = script("run", "--workspace", str(ws), *PLAN)
    assert again.count("done before; kept") == 2 and "Running stage" not in again
    script("publish", "--workspace", str(ws), "--out", str(out), *PLAN)
    assert files(out) == first
