"""The optimizer registry (optimizers.py): what validation accepts, what the engine builds, what
dvc.yaml lists, what the resume key holds, and a learning-rate grid per optimizer."""

import copy
import json

import pytest
import torch
import yaml
from conftest import PROJECT

from tlstudy import params as P
from tlstudy.training import engine, optimizers, resume


def test_an_unknown_optimizer_is_refused_naming_it_and_the_accepted_names(study_params):
    accepted = "accepted: sgd, adam, adamw"
    for edit, key in (
        (lambda p: p.update(optimizer=["sgd", "rmsprop"]), "optimizer"),
        (lambda p: p["parts"]["scratch"].update(optimizer="rmsprop"), "parts.scratch.optimizer"),
        (lambda p: p["pretrain"]["pacs_sources"].update(optimizer="rmsprop"), "pretrain.pacs_sources.optimizer"),
    ):
        p = copy.deepcopy(study_params)
        edit(p)
        with pytest.raises(P.ParamsError, match=f"'{key}' is 'rmsprop'; {accepted}$"):
            P.validate(p)
    # The engine builds none but the registry's: no name silently becomes another optimizer.
    with pytest.raises(P.ParamsError, match=f"optimizer 'rmsprop': unknown; {accepted}$"):
        engine.make_optimizer("rmsprop", torch.nn.Linear(2, 2).parameters(), 0.01, study_params)


def test_adamws_weight_decay_reaches_torch_adamw(study_params):
    assert study_params["adamw"] == {"weight_decay": 0.01}  # PyTorch's default
    settings = copy.deepcopy(study_params)
    settings["adamw"]["weight_decay"] = 0.05
    layer = torch.nn.Linear(4, 3)
    before = layer.weight.detach().clone()
    opt = engine.make_optimizer("adamw", layer.parameters(), 0.1, settings)
    assert type(opt) is torch.optim.AdamW and opt.param_groups[0]["weight_decay"] == 0.05
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["eps"] == 1e-8
    # Decoupled decay: with a zero gradient Adam's step is zero, and the weights shrink by lr * decay.
    for p in layer.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(layer.weight.detach(), before * (1 - 0.1 * 0.05), rtol=1e-6, atol=0)
    # Adam's own section is Adam's: its L2 decay does not become AdamW's.
    assert type(engine.make_optimizer("adam", layer.parameters(), 0.1, settings)) is torch.optim.Adam


def test_a_learning_rate_grid_per_optimizer(study_params):
    p = copy.deepcopy(study_params)
    p.update(optimizer=["sgd", "adam", "adamw"], lr={"sgd": [0.1, 0.03], "adam": [0.001], "adamw": 0.0003})
    P.validate(p)
    assert P.part(p, "scratch").grid == {"sgd": (0.1, 0.03), "adam": (0.001,), "adamw": (0.0003,)}
    assert P.part(p, "augment").grid == {"sgd": (0.1, 0.03)}  # its own optimizer, the top level's rates
    p["parts"]["finetune"]["lr"] = {"sgd": [0.01], "adam": [0.0001], "adamw": [0.0001, 0.00003]}
    assert P.part(p, "finetune").grid == {"sgd": (0.01,), "adam": (0.0001,), "adamw": (0.0001, 0.00003)}
    p["parts"]["finetune"]["lr"] = [0.01]  # a list is every optimizer's
    assert P.part(p, "finetune").grid == {"sgd": (0.01,), "adam": (0.01,), "adamw": (0.01,)}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.update(lr={"sgd": 0.1, "rmsprop": 0.1}), r"unknown key 'lr.rmsprop'; accepted: adam, adamw, sgd"),
        (lambda p: p.update(lr={"sgd": [0.1], "adam": [0]}), r"'lr.adam' must be > 0, got 0"),
        (lambda p: p.update(lr={}), r"'lr' is empty"),
        (
            lambda p: p.update(lr={"sgd": [0.1]}),
            r"'lr' gives no learning rates for adam, which 'parts.scratch' trains with; accepted: a list for every "
            r"optimizer, or one under 'lr.adam'$",
        ),
        (lambda p: p["parts"]["scratch"].update(lr={"sgd": ["fast"]}), r"'parts.scratch.lr.sgd' must be a number"),
        (lambda p: p.update(optimizer=["sgd", "sgd"]), r"'optimizer' repeats an optimizer"),
        (lambda p: p["adamw"].update(betas=[0.9, 0.99]), r"unknown key 'adamw.betas'; accepted: weight_decay"),
        (lambda p: p.pop("adamw"), r"missing section\(s\): adamw"),
        (
            lambda p: (
                p["pretrain"]["pacs_sources"].update(optimizer="adam")
                or p["pretrain"]["pacs_sources"].pop("weight_decay")
            ),
            r"'pretrain.pacs_sources' lacks weight_decay, which adam needs",
        ),  # fmt: skip
    ],
)
def test_bad_optimizer_settings_name_the_key(study_params, edit, message):
    p = copy.deepcopy(study_params)
    edit(p)
    with pytest.raises(P.ParamsError, match=message):
        P.validate(p)


def test_pretraining_takes_the_settings_of_its_own_optimizer(study_params):
    p = copy.deepcopy(study_params)
    backbone = p["pretrain"]["pacs_sources"]
    backbone.update(optimizer="adamw")
    backbone.pop("momentum")  # not a setting of AdamW
    P.validate(p)


def test_the_train_stages_list_every_optimizers_settings_section():
    """dvc.yaml lists each optimizer's section for every stage that trains a part: a setting
    changed there re-runs the parts, and an optimizer added to the registry must be listed."""
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    for name in ("train", "transfer"):
        listed = {p for p in stages[name]["do"]["params"] if isinstance(p, str)}
        assert {"optimizer", "lr"} <= listed
        assert {p for p in listed if p in optimizers.REGISTRY or p in ("sgd", "adam", "adamw")} == set(
            optimizers.NAMES
        ), name
    assert set(optimizers.NAMES) <= P.TOP_KEYS


def test_the_resume_key_changes_with_adamws_settings(params, tmp_path):
    (tmp_path / "images.pt").write_bytes(b"images")
    shape = P.part(params, "scratch").shape()
    fp32 = engine.Speed(torch.device("cpu"), bf16=False, channels_last=False)
    base = resume.fingerprint(params, shape, [tmp_path / "images.pt"], "train", fp32)
    changed = copy.deepcopy(params)
    changed["adamw"]["weight_decay"] = 0.05
    assert resume.fingerprint(changed, shape, [tmp_path / "images.pt"], "train", fp32) != base


def test_a_part_trains_each_optimizer_at_its_own_rates(in_tmp, params):
    """`lr` per optimizer, through the stages: fetch, stats and a part's training."""
    from tlstudy.lib import yamlio
    from tlstudy.stage import main

    params.update(epochs=1, optimizer=["sgd", "adamw"], lr={"sgd": [0.03, 0.01], "adamw": [0.001]})
    (in_tmp / "params.yaml").write_text(yamlio.dump(params))
    for argv in (["fetch"], ["stats"], ["train", "--part", "fewshot_classifier"]):
        assert main(argv) == 0, argv
    runs = json.loads((in_tmp / "models/fewshot_classifier/runs.json").read_text())["runs"]
    assert [(r["optimizer"], r["lr"]) for r in runs] == [("sgd", 0.03), ("sgd", 0.01), ("adamw", 0.001)]
    assert sorted(p.name for p in (in_tmp / "models/fewshot_classifier/seed0").iterdir()) == ["adamw.pt", "sgd.pt"]


@pytest.mark.slow
def test_dvc_exp_run_trains_and_reports_three_optimizers(tmp_path):
    """The tiny pipeline in a real git + DVC repository: `dvc exp run -S 'optimizer=[sgd,adam,adamw]'`
    with no file edited trains AdamW beside SGD and Adam, and every output names it."""
    import os
    import subprocess
    import sys

    from conftest import tiny_workspace
    from PIL import Image

    from tlstudy.tools import profile

    ws = tiny_workspace(tmp_path / "ws")
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}")
    run = subprocess.run([profile.tool("dvc"), "exp", "run", "-S", "optimizer=[sgd,adam,adamw]"], cwd=ws, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Running stage 'train@scratch'" in run.stdout and "Stage 'fetch' didn't change, skipping" in run.stdout
    lock = yaml.safe_load((ws / "dvc.lock").read_text())["stages"]["train@scratch"]["params"]["params.yaml"]
    assert lock["optimizer"] == ["sgd", "adam", "adamw"] and lock["adamw"] == {"weight_decay": 0.01}

    metrics = json.loads((ws / "metrics/scratch.json").read_text())
    assert list(metrics) == ["sgd", "adam", "adamw"] and metrics["adamw"]["lr"] == 0.03
    runs = json.loads((ws / "models/scratch/runs.json").read_text())["runs"]
    assert [r["optimizer"] for r in runs] == ["sgd", "adam", "adamw"]
    # The headline's pick is over all three: the best validation accuracy, the first on a tie.
    best = max(metrics.values(), key=lambda m: m["val_acc"])
    assert json.loads((ws / "headline.json").read_text()) == {"scratch": round(100 * best["test_acc"], 1)}
    md = (ws / "report/README.md").read_text()
    summary = md.split("## Summary")[1].split("\n## ")[0]
    assert "| AdamW test acc [95 % CI] |" in summary and "| Adam − AdamW, points [95 % CI]; p; verdict |" in summary
    # Each pair of optimizers is its own declared family of tests, Holm-corrected over the parts.
    assert "\n| adamw | 0.03 | " in md.split("(`scratch`)")[1] and "\n### Adam vs AdamW across parts\n" in md
    assert "AdamW s/epoch" in md.split("## Training time")[1]
    with Image.open(ws / "report/figures/results_at_a_glance.png") as im:  # AdamW's green among the points
        assert any(c == (44, 160, 44) for _, c in im.convert("RGB").getcolors(maxcolors=1 << 24))
    with Image.open(ws / "report/figures/curves_scratch.png") as im:
        assert im.width == round(3 * 5.2 * 90)  # a column per optimizer
