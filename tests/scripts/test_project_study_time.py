"""scripts/project-study-time.py, as docs/performance.md and docs/reproduce-the-paper.md run it: the CPU
projection from a short run's timing and log (its workspace faked here: the script reads only
work/timing.json, params.yaml and the progress lines), and the GPU projection from the study's timing."""

import json

import pytest
import yaml
from conftest import PROJECT, load_script

from tlstudy import params as P
from tlstudy.stages.report import study


@pytest.fixture(scope="module")
def script():
    return load_script("project-study-time")


def test_the_cpu_projection_scales_a_short_run_to_the_default_grid(script, tmp_path, capsys):
    default = P.load(PROJECT / "params.yaml")
    short = {
        **default,
        "epochs": 1,
        "lr": [0.01],
        "pretrain": {"pacs_sources": {**default["pretrain"]["pacs_sources"]}},
    }
    short["pretrain"]["pacs_sources"]["epochs"] = 1
    (tmp_path / "work").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(short))
    # Every stage took 10 s of which one epoch 8 s (the rest: start-up, data, test logits); fetch 5 s.
    stages = ["fetch", "pretrain@pacs_sources", *(f"train@{p}" for p in default["parts"])]
    stages += [f"transfer@{p}" for p in default["transfer"]]
    (tmp_path / "work/timing.json").write_text(
        json.dumps({"stages": {s: (5.0 if s == "fetch" else 10.0) for s in stages}})
    )
    log = "".join(f"... | {s.replace('transfer@', 'train@')} 100 %, 8.0 s/epoch, ~0 s left\n" for s in stages[1:])
    (tmp_path / "run.log").write_text(log)

    assert script.epochs_of(short, default, "train@augment") == (28 * 1, 28 * 5 * 50)
    assert script.epochs_of(short, default, "train@scratch") == (2, 500)
    assert script.epochs_of(short, default, "pretrain@pacs_sources") == (1, 30)
    script.main(tmp_path, tmp_path / "run.log")
    out = capsys.readouterr().out
    # augment: 2 s of the rest + 7,000 epochs of 8 s.
    assert f"{(2 + 7000 * 8) / 3600:>9.1f} h" in out and "projected default study:" in out


def test_the_gpu_projection_counts_every_stage_that_trains(script):
    params = P.load(PROJECT / "params.yaml")
    timing = study.numbers()["timing"]
    projected = script.gpu_projection(params, timing)
    assert set(projected) == {"pretrain@pacs_sources", *(f"train@{p}" for p in params["parts"])} | {
        f"transfer@{p}" for p in params["transfer"]
    }
    # Full training: 5 rates x 50 epochs of each optimizer's study epoch.
    assert projected["train@scratch"] == pytest.approx(250 * (5.57 + 7.49))
    # A sweep: SGD alone, 28 variants, on the few-shot subset's 191 images of 1,686.
    assert projected["train@augment"] == pytest.approx(28 * 250 * 5.57 * 191 / 1686)
    assert projected["train@augment_study"] == projected["train@augment"]
    assert projected["train@classifier"] == pytest.approx(0.7 * projected["train@scratch"])
    assert script.duration(sum(projected.values())) == "6.4 h"
    assert script.duration(59 * 60) == "59 min" and script.duration(2 * 3600) == "2.0 h"
