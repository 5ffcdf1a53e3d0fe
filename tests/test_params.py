import copy
import json
import subprocess
import sys

import pytest
import yaml
from conftest import PARTS, PROJECT

from tlstudy import params as P


def test_study_params_are_valid_and_declare_the_study(study_params):
    P.validate(study_params)
    assert study_params["lr"] == [0.03, 0.01, 0.003, 0.001, 0.0001]
    assert study_params["optimizer"] == ["sgd", "adam"] and study_params["epochs"] == 50
    assert list(study_params["parts"]) == PARTS and study_params["seeds"] == [0]
    assert P.part(study_params, "augment").placement == "pixels"
    assert P.part(study_params, "augment_study").placement == "study"
    augment = P.part(study_params, "augment")
    assert list(augment.grid) == ["sgd"] and len(augment.grid["sgd"]) == 5
    assert len(augment.variants) == 28 and augment.variants[0] == "none" and augment.sweep


@pytest.mark.parametrize("name", ["demo", "offline"])
def test_profiles_are_valid(name):
    from tlstudy.tools.profile import profile_params

    params = profile_params(PROJECT, name)
    assert params["pretrain"] and params["transfer"]


def test_offline_profile_starts_every_imagenet_part_from_the_pacs_sources_backbone(study_params):
    from tlstudy.tools.profile import profile_params

    params = profile_params(PROJECT, "offline")
    asked = [p for p, spec in study_params["parts"].items() if spec["init"] == "imagenet"]
    assert asked and all(p in params["transfer"] and p not in params["parts"] for p in asked)
    assert all(params["transfer"][p]["init"] == "pacs_sources" for p in asked)
    for p in asked:  # the same part otherwise
        assert {k: v for k, v in params["transfer"][p].items() if k not in ("init", "epochs", "lr", "seeds")} == {
            k: v for k, v in study_params["parts"][p].items() if k != "init"
        }
    assert not [p for p in P.parts(params).values() if p.init == "imagenet"]


def test_overlay_null_removes_a_key():
    from tlstudy.tools.profile import merge

    assert merge({"a": {"x": 1, "y": 2}, "b": 3}, {"a": {"x": None}, "b": None, "c": 4}) == {"a": {"y": 2}, "c": 4}


def test_scalar_lr_and_optimizer_as_dvc_exp_run_writes_them(study_params):
    p = copy.deepcopy(study_params)
    p["lr"], p["optimizer"] = 0.01, "adam"
    P.validate(p)
    scratch = P.part(p, "scratch")
    assert scratch.grid == {"adam": (0.01,)} and scratch.variants == ("none",)
    assert P.part(p, "augment").optimizers == ("sgd",)  # the part's own optimizer wins
    p["seeds"] = 3  # -S seeds=3
    P.validate(p)
    assert P.part(p, "scratch").seeds == (3,)
    p["parts"]["fewshot_scratch"]["seeds"] = [0, 1, 2, 3, 4]  # a part's own seeds win
    assert P.part(p, "fewshot_scratch").seeds == (0, 1, 2, 3, 4) and P.part(p, "finetune").seeds == (3,)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.update(epoch=3), r"unknown key 'epoch' \(did you mean 'epochs'\?\)"),
        (lambda p: p.update(precision="fp16"), r"'precision' is 'fp16'; accepted: auto, fp32, bf16"),
        (
            lambda p: p["augmentations"].update(gray=[["Grayscale", {}]]),
            r"'augmentations.gray\[0\]' Grayscale must keep 3 channels",
        ),
        (lambda p: p["data"].update(imgsize=3), r"unknown key 'data.imgsize'"),
        (lambda p: p.update(lr=[0.01, 0]), r"'lr' must be > 0, got 0"),
        (lambda p: p.update(lr="fast"), r"'lr' must be a number, got 'fast'"),
        (lambda p: p.update(epochs=0), r"'epochs' must be >= 1"),
        (lambda p: p.update(optimizer=["sgd", "rmsprop"]), r"'optimizer' is 'rmsprop'; accepted: sgd, adam"),
        (
            lambda p: p["data"].update(source="web"),
            r"'data.source' is 'web'; accepted: pacs, local, synthetic",
        ),
        (lambda p: p["parts"]["scratch"].update(subset="half"), r"'parts.scratch.subset' is 'half'"),
        (
            lambda p: p["parts"]["scratch"].update(augment=["hflp"]),
            r"unknown variant 'hflp' \(did you mean 'hflip'\?\)",
        ),
        (
            lambda p: p["augmentations"].update(x=[["Rotate", {}]]),
            r"'augmentations.x\[0\]' names unknown transform 'Rotate'",
        ),
        (
            lambda p: p["augmentations"].update(x=[["GaussianBlur", {"kernel_size": 4}]]),
            r"augmentations.x\[0\]' GaussianBlur",
        ),
        (
            lambda p: p["augmentations"].update(x=[["RandomAffine", {"degree": 4}]]),
            r"augmentations.x\[0\]' RandomAffine",
        ),
        (
            lambda p: p["transfer"]["finetune_pacs"].update(init="imagenet"),
            r"'transfer.finetune_pacs.init' is 'imagenet'; accepted: a backbone under 'pretrain' \(pacs_sources\)",
        ),
        (
            lambda p: p.update(transfer={}),
            r"'pretrain.pacs_sources' is the init of no part under 'transfer'; remove it",
        ),
        (
            lambda p: p["pretrain"]["pacs_sources"].update(schedule="step"),
            r"'pretrain.pacs_sources.schedule' is 'step'",
        ),
        (
            lambda p: p["pretrain"]["pacs_sources"].update(augment="flip"),
            r"'pretrain.pacs_sources.augment' names unknown",
        ),
        (lambda p: p["pretrain"]["pacs_sources"].update(domains=["photo"]), r"'pretrain.pacs_sources.domains' is no"),
        (lambda p: p["transfer"].update(scratch=p["parts"]["scratch"]), r"part 'scratch' is under both"),
        (lambda p: p["parts"]["scratch"].update(epochs=0), r"'parts.scratch.epochs' must be >= 1"),
        (lambda p: p.update(seeds=[]), r"'seeds' is empty; give at least one seed"),
        (lambda p: p.update(seeds=[0, 1, 0]), r"'seeds' repeats a seed"),
        (lambda p: p.update(seeds=[0, -1]), r"'seeds' must be >= 0, got -1"),
        (lambda p: p.update(seeds=[0.5]), r"'seeds' must be an integer, got 0.5"),
        (lambda p: p["parts"]["fewshot_scratch"].update(seeds=[1, 1]), r"'parts.fewshot_scratch.seeds' repeats"),
        (
            lambda p: p["parts"]["augment"].update(placement="normalised"),
            r"'parts.augment.placement' is 'normalised'; accepted: pixels, study",
        ),
    ],
)
def test_bad_params_are_rejected_with_the_key_path(study_params, edit, message):
    p = copy.deepcopy(study_params)
    edit(p)
    with pytest.raises(P.ParamsError, match=message):
        P.validate(p)


def test_the_cli_reports_a_bad_param_in_one_line_before_doing_any_work(in_tmp, study_params, capsys):
    from tlstudy.cli import main

    bad = copy.deepcopy(study_params)
    bad["parts"]["finetune"]["trainable"] = "backbone"
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(bad))
    assert main(["fetch"]) == 2
    err = capsys.readouterr().err
    assert err == "error: params: 'parts.finetune.trainable' is 'backbone'; accepted: all, head\n"
    assert list(in_tmp.iterdir()) == [in_tmp / "params.yaml"]  # nothing written


def test_a_variant_torchvision_refuses_stops_the_stages_that_build_variants_and_no_other(in_tmp, study_params, capsys):
    """Every stage checks each variant's steps by name; torchvision judges their arguments in the
    stages that build variants (stage.BUILDS_TRANSFORMS), before they do any work. The others
    build none, and so do without importing torchvision for it."""
    from tlstudy.stage import BUILDS_TRANSFORMS, main

    p = copy.deepcopy(study_params)
    p["augmentations"]["x"] = [["GaussianBlur", {"kernel_size": 4}]]  # torchvision: kernel sizes are odd
    P.validate(p, transforms=False)
    with pytest.raises(P.ParamsError, match=r"'augmentations.x\[0\]' GaussianBlur"):
        P.validate(p)
    p["augmentations"]["x"] = [["Rotate", {}]]
    with pytest.raises(P.ParamsError, match=r"'augmentations.x\[0\]' names unknown transform 'Rotate'"):
        P.validate(p, transforms=False)

    p["augmentations"]["x"] = [["GaussianBlur", {"kernel_size": 4}]]
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(p))
    assert BUILDS_TRANSFORMS == {"variants", "pretrain", "train"}
    assert main(["variants"]) == 2
    assert capsys.readouterr().err.startswith("error: params: 'augmentations.x[0]' GaussianBlur({'kernel_size': 4}):")
    assert list(in_tmp.iterdir()) == [in_tmp / "params.yaml"]  # nothing written


def test_the_stages_that_build_no_variant_import_no_torchvision():
    """stats and report, their params read as stage.py reads them: torchvision's import (about
    1.5 s, most of it torch._dynamo) is not theirs to pay."""
    code = (
        "import sys; from tlstudy import params as P; from tlstudy.stages import stats, report; "
        "P.load('params.yaml', transforms=False); print(sorted(m for m in sys.modules if m.startswith('torchvision')))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert r.stdout == "[]\n"


def test_image_suffixes_are_torchvisions():
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from tlstudy.data import images

    assert images.IMAGE_SUFFIXES == IMG_EXTENSIONS


def test_the_cli_names_a_missing_params_file(in_tmp, capsys):
    from tlstudy.cli import main

    assert main(["--params", "nope.yaml", "stats"]) == 2
    assert "nope.yaml: not found" in capsys.readouterr().err


def test_numbers_as_people_write_them_read_as_dvc_reads_them(in_tmp, params):
    """YAML 1.2, as DVC reads params.yaml: `1e-3` is a number (PyYAML, YAML 1.1, made it a string
    and every stage refused it)."""
    from tlstudy.lib import yamlio

    text = yamlio.dump(params).replace("lr:\n- 0.01\n", "lr: [1e-2, 1e-3]\n")
    text = text.replace("  weight_decay: 0.0\n", "  weight_decay: 5E-4\n", 1)
    assert "lr: [1e-2, 1e-3]" in text and "5E-4" in text
    (in_tmp / "params.yaml").write_text(text)
    loaded = P.load(in_tmp / "params.yaml")
    assert loaded["lr"] == [0.01, 0.001] and loaded["sgd"]["weight_decay"] == 0.0005
    # DVC's own reading of the same file agrees.
    from dvc.utils.serialize import load_yaml

    assert load_yaml(str(in_tmp / "params.yaml"))["lr"] == [0.01, 0.001]


def test_a_stage_runs_on_params_written_with_exponents(in_tmp, params):
    """`lr: [1e-2, 1e-3]` in params.yaml runs: fetch, stats and a part's training."""
    from tlstudy.lib import yamlio
    from tlstudy.stage import main

    params.update(epochs=1, optimizer=["sgd"])
    text = yamlio.dump(params).replace("lr:\n- 0.01\n", "lr: [1e-2, 1e-3]\n")
    (in_tmp / "params.yaml").write_text(text)
    for argv in (["fetch"], ["stats"], ["train", "--part", "scratch"]):
        assert main(argv) == 0, argv
    runs = json.loads((in_tmp / "models/scratch/runs.json").read_text())["runs"]
    assert [r["lr"] for r in runs] == [0.01, 0.001]
