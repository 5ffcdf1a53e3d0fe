"""`make bench` end to end on a tiny case: it runs both loops and writes what the issue asks for.
(The speed figures themselves are printed by the benchmark, not asserted here.)"""

import json

import torch
from conftest import PROJECT

from tlstudy import cli, engine

KEYS = {
    "device", "image_size", "baseline_img_s", "ours_img_s", "ratio", "head_grid_baseline_s", "head_grid_ours_s",
    "head_grid_ratio",
}  # fmt: skip


def test_bench_times_both_loops_and_writes_metrics_bench_json(in_tmp, capsys):
    argv = [
        "--params", str(PROJECT / "params.yaml"), "bench", "--size", "32", "--per-class", "3", "--val-per-class", "1",
        "--repeats", "1", "--head-epochs", "1", "--configs", "none/sgd,hflip_rot10/adam", "--layout-sizes", "32,128",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    result = json.loads((in_tmp / "metrics/bench.json").read_text())
    assert KEYS <= result.keys()
    assert result["data"].startswith("synthetic JPEGs")  # no data/pacs_cartoon in the temporary folder
    assert result["image_size"] == 32 and result["device"].startswith("CPU") != torch.cuda.is_available()
    assert (result["n_train"], result["n_val"], result["head_grid_runs"]) == (21, 7, 10)
    cases = [(c["variant"], c["optimizer"]) for c in result["full_training"]]
    assert cases == [("none", "sgd"), ("hflip_rot10", "adam")]
    for c in result["full_training"]:
        assert c["baseline_img_s"] > 0 and c["ours_img_s"] > 0
        assert len(c["baseline_samples_s"]) == len(c["ours_samples_s"]) == 1
        assert abs(c["ratio"] - c["baseline_s_epoch"] / c["ours_s_epoch"]) < 0.01
    assert result["ratio"] == result["full_training"][0]["ratio"]
    assert result["ratio_min"] == min(c["ratio"] for c in result["full_training"])
    assert abs(result["head_grid_ratio"] - result["head_grid_baseline_s"] / result["head_grid_ours_s"]) < 0.1
    # The CPU layout case: channels_last against the default layout, with the engine's decision.
    if not torch.cuda.is_available():
        layout = result["cpu_layout"]
        assert layout["channels_last_from_px"] == engine.CPU_CHANNELS_LAST_MIN_PX
        assert [c["image_size"] for c in layout["cases"]] == [32, 128]
        assert [c["engine_uses_channels_last"] for c in layout["cases"]] == [False, True]
        for c in layout["cases"]:
            assert c["nchw_img_s"] > 0 and c["channels_last_img_s"] > 0 and len(c["nchw_samples_s"]) == 1
            assert abs(c["ratio"] - c["channels_last_img_s"] / c["nchw_img_s"]) < 0.01
    out = capsys.readouterr().out
    assert "head-only grid of 10 runs" in out and "wrote metrics/bench.json" in out


def test_bench_names_an_unknown_configuration(in_tmp, capsys):
    argv = ["--params", str(PROJECT / "params.yaml"), "bench", "--configs", "none/sgd,spin/sgd"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "'spin/sgd'" in err and "sgd, adam" in err
    assert not (in_tmp / "metrics").exists()
