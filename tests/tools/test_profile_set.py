"""`python -m tlstudy profile <name> --set KEY=VALUE`, the gpu-check overlay, and how a profile
finds DVC and `python` on a machine where they are not installed the usual way."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import PROJECT

from tlstudy import cli
from tlstudy.lib.errors import ParamsError
from tlstudy.tools import profile


def test_set_applies_dotted_keys_after_the_overlay_and_leaves_the_rest(study_params):
    params = profile.profile_params(
        PROJECT, "offline", sets=["epochs=2", "pretrain.pacs_sources.epochs=1", "lr=[0.01, 0.001]", "optimizer=adam"]
    )
    assert params["epochs"] == 2 and params["pretrain"]["pacs_sources"]["epochs"] == 1
    assert params["lr"] == [0.01, 0.001] and params["optimizer"] == "adam"
    # The overlay's own values stay where --set did not touch them.
    assert params["data"]["image_size"] == 64 and params["pretrain"]["pacs_sources"]["lr"] == 0.05
    assert params["transfer"] == profile.profile_params(PROJECT, "offline")["transfer"]


def test_set_replaces_rather_than_merges_and_null_removes_a_key():
    params = profile.profile_params(
        PROJECT, "demo", sets=["parts.augment_study=null", "parts.scratch={subset: full, init: random, trainable: all}"]
    )
    assert "augment_study" not in params["parts"] and "augment" in params["parts"]
    assert params["parts"]["scratch"] == {"subset": "full", "init": "random", "trainable": "all"}


def test_later_sets_win_and_the_input_is_not_changed():
    base = {"epochs": 5, "pretrain": {"b": {"epochs": 3}}}
    out = profile.apply_sets(base, ["epochs=2", "epochs=7", "pretrain.b.epochs=1"])
    assert out == {"epochs": 7, "pretrain": {"b": {"epochs": 1}}}
    assert base == {"epochs": 5, "pretrain": {"b": {"epochs": 3}}}


@pytest.mark.parametrize(
    "text, message",
    [
        ("epochs", r"--set 'epochs': no '=' after the key; expected KEY=VALUE"),
        ("=2", r"--set '=2': the key is empty"),
        ("pretrain..epochs=1", r"the key 'pretrain\.\.epochs' has an empty part"),
        ("epochs=", r"--set epochs=: no value; give one \(YAML\), or null to remove the key"),
        ("lr=[0.01", r"--set lr: the value '\[0.01' is not valid YAML"),
        ("lr.first=0.1", r"--set lr.first: 'lr' is \[0.03, .*\], not a mapping, so it has no key 'first'"),
    ],
)
def test_a_malformed_set_is_refused_naming_the_key(text, message):
    with pytest.raises(ParamsError, match=message):
        profile.profile_params(PROJECT, "demo", sets=[text])


@pytest.mark.parametrize(
    "text, message",
    [
        ("epochs=0", r"'epochs' must be >= 1, got 0 \(after --set epochs=0\)"),
        ("pretrain.pacs_sources.epoch=1", r"unknown key 'pretrain.pacs_sources.epoch' \(did you mean 'epochs'\?\)"),
        ("optimizer=[sgd, lbfgs]", r"'optimizer'.*lbfgs.*accepted: sgd, adam"),
        ("data.source=ftp", r"'data.source' is 'ftp'; accepted: pacs, local, synthetic"),
    ],
)
def test_a_set_value_is_validated_with_the_rest_of_params(text, message):
    with pytest.raises(ParamsError, match=message):
        profile.profile_params(PROJECT, "demo", sets=[text])


def test_cli_profile_set_error_exits_2_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(PROJECT)
    ws = tmp_path / "ws"
    assert cli.main(["profile", "demo", "--dir", str(ws), "--set", "epochs"]) == 2
    assert "--set 'epochs': no '='" in capsys.readouterr().err
    assert cli.main(["profile", "demo", "--dir", str(ws), "--set", "epochs=-1"]) == 2
    assert "'epochs' must be >= 1" in capsys.readouterr().err
    assert not ws.exists()


def test_cli_passes_every_set_to_the_profile_in_order(monkeypatch):
    seen = {}
    monkeypatch.setattr(profile, "run", lambda *a, **kw: seen.update(kw))
    args = ["profile", "offline", "--set", "epochs=2", "--set", "pretrain.pacs_sources.epochs=1"]
    assert cli.main(args) == 0
    assert seen["sets"] == ["epochs=2", "pretrain.pacs_sources.epochs=1"]
    assert seen["command"].endswith("--set epochs=2 --set pretrain.pacs_sources.epochs=1")


def test_gpu_check_overlay_is_the_study_but_what_that_machine_forces(study_params):
    params = profile.profile_params(PROJECT, "gpu-check")
    assert params["imagenet_weights"] == "random" and params["inspect"]["weights"] == "random"
    assert params["data"]["source"] == "local" and params["pretrain"]["pacs_sources"]["source"] == "local"
    forced = {("imagenet_weights",), ("inspect", "weights"), ("data", "source"), ("pretrain", "pacs_sources", "source")}

    def without(p):
        p = yaml.safe_load(yaml.safe_dump(p))
        for path in forced:
            node = p
            for key in path[:-1]:
                node = node[key]
            node.pop(path[-1])
        return p

    assert without(params) == without(study_params)
    assert params["data"]["image_size"] == 227 and len(params["lr"]) == 5 and params["epochs"] == 50
    # The short first pass validates too.
    short = profile.profile_params(PROJECT, "gpu-check", sets=["epochs=2", "pretrain.pacs_sources.epochs=1"])
    assert short["epochs"] == 2 and short["pretrain"]["pacs_sources"]["epochs"] == 1


def test_dvc_runs_as_python_m_where_no_dvc_executable_is_found(tmp_path, monkeypatch):
    """The GPU check installs DVC with `pip install --target`: no `dvc` beside python3 nor on PATH."""
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir()
    fake.symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(fake))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert profile.tool_argv("dvc") == [str(fake), "-m", "dvc"]
    (fake.parent / "dvc").write_text("#!/bin/sh\n")
    (fake.parent / "dvc").chmod(0o755)
    assert profile.tool_argv("dvc") == [str(fake.parent / "dvc")]


def test_stages_get_a_python_shim_where_the_interpreter_has_no_python_beside_it(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir()
    fake.symlink_to(sys.executable)
    monkeypatch.setattr(sys, "executable", str(fake))
    folder = profile._python_on_path(tmp_path / "ws")
    assert folder == str(tmp_path / "ws" / "work" / "bin")
    r = subprocess.run([f"{folder}/python", "-c", "print(6 * 7)"], capture_output=True, text=True)
    assert r.stdout.strip() == "42"
    # With a `python` beside the interpreter, that folder goes on PATH and no shim is written.
    (fake.parent / "python").symlink_to(sys.executable)
    assert profile._python_on_path(tmp_path / "ws2") == str(fake.parent)
    assert not (tmp_path / "ws2").exists()


def test_a_set_value_with_an_exponent_is_a_number_as_in_dvc_exp_run():
    """`--set lr=1e-3` as `dvc exp run -S lr=1e-3` reads it: a float, not the string '1e-3'."""
    assert profile.parse_set("lr=1e-3") == (["lr"], 0.001)
    assert profile.parse_set("lr=[1e-2, 3E-3]") == (["lr"], [0.01, 0.003])
    params = profile.profile_params(PROJECT, "demo", sets=["lr=1e-3", "sgd.weight_decay=5e-4"])
    assert params["lr"] == 0.001 and params["sgd"]["weight_decay"] == 0.0005
