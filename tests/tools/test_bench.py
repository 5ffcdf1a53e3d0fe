"""`make bench` end to end on a tiny case: it runs both loops and writes what the issue asks for.
(The speed figures themselves are printed by the benchmark, not asserted here.)"""

import json

import pytest
import torch
from conftest import PROJECT

from tlstudy import cli
from tlstudy.lib import cpu
from tlstudy.tools import bench
from tlstudy.training import engine

KEYS = {
    "device", "image_size", "baseline_img_s", "ours_img_s", "ratio", "head_grid_baseline_s", "head_grid_ours_s",
    "head_grid_ratio",
}  # fmt: skip


@pytest.mark.slow
def test_bench_times_both_loops_and_writes_metrics_bench_json(in_tmp, capsys):
    # Batches of 2, not params' 32: each CPU case times 6 batches at 32 px and 2 at 128 px (bf16
    # without bf16 instructions runs at a fraction of an image a second there), and 2 images a
    # class leave no batch of one (BatchNorm cannot train on it).
    argv = [
        "--params", str(PROJECT / "params.yaml"), "bench", "--size", "32", "--per-class", "2", "--val-per-class", "1",
        "--batch-size", "2", "--repeats", "1", "--head-epochs", "1", "--configs", "none/sgd,hflip_rot10/adamw",
        "--cpu-sizes", "32,128",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    result = json.loads((in_tmp / "metrics/bench.json").read_text())
    assert KEYS <= result.keys()
    assert result["data"].startswith("synthetic JPEGs")  # no data/pacs_cartoon in the temporary folder
    assert result["image_size"] == 32 and result["device"].startswith("CPU") != torch.cuda.is_available()
    assert result["batch_size"] == 2
    assert (result["n_train"], result["n_val"], result["head_grid_runs"]) == (14, 7, 10)
    cases = [(c["variant"], c["optimizer"]) for c in result["full_training"]]
    assert cases == [("none", "sgd"), ("hflip_rot10", "adamw")]  # any optimizer of the registry
    for c in result["full_training"]:
        assert c["baseline_img_s"] > 0 and c["ours_img_s"] > 0
        assert len(c["baseline_samples_s"]) == len(c["ours_samples_s"]) == 1
        assert abs(c["ratio"] - c["baseline_s_epoch"] / c["ours_s_epoch"]) < 0.01
    assert result["ratio"] == result["full_training"][0]["ratio"]
    assert result["ratio_min"] == min(c["ratio"] for c in result["full_training"])
    assert abs(result["head_grid_ratio"] - result["head_grid_baseline_s"] / result["head_grid_ours_s"]) < 0.1
    # The CPU cases: fp32 and bf16, each in both layouts, with what the engine runs.
    if not torch.cuda.is_available():
        speed = result["cpu_speed"]
        assert speed["channels_last_from_px_fp32"] == engine.CPU_CHANNELS_LAST_MIN_PX
        assert speed["amx_bf16"] == ("amx_bf16" in cpu.cpuinfo()[1])
        assert [c["image_size"] for c in speed["cases"]] == [32, 128]
        # fp32 as the engine runs it: the default layout below CPU_CHANNELS_LAST_MIN_PX, channels_last from it.
        assert [c["fp32_engine"] for c in speed["cases"]] == ["fp32_nchw", "fp32_channels_last"]
        # auto runs one precision at both sizes, bf16 always in channels_last, and the record says why.
        auto = [c["engine_auto"] for c in speed["cases"]]
        bf16 = speed["auto_precision"]["bf16"]
        assert auto == (["bf16_channels_last"] * 2 if bf16 else ["fp32_nchw", "fp32_channels_last"])
        assert speed["auto_precision"]["why"].startswith("bf16" if bf16 else "fp32")
        for c in speed["cases"]:
            s = c["img_s"]
            assert set(s) == set(bench.CPU_SIDES) and all(v > 0 for v in s.values())
            assert all(len(v) == 1 for v in c["samples_s"].values())
            assert abs(c["layout_ratio"] - s["fp32_channels_last"] / s["fp32_nchw"]) < 0.01
            best_bf16 = max(s["bf16_nchw"], s["bf16_channels_last"])
            assert abs(c["bf16_ratio"] - best_bf16 / s[c["fp32_engine"]]) < 0.01
            assert abs(c["auto_ratio"] - s[c["engine_auto"]] / s[c["fp32_engine"]]) < 0.01
            assert s[c["fastest"]] == max(s.values())
            assert (
                abs(c["auto_vs_fastest"] - s[c["engine_auto"]] / s[c["fastest"]]) < 0.01 and c["auto_vs_fastest"] <= 1
            )
    out = capsys.readouterr().out
    assert "head-only grid of 10 runs" in out and "wrote metrics/bench.json" in out
    if "cpu_speed" in result:
        assert f"precision auto runs {result['cpu_speed']['cases'][0]['engine_auto']} here, x" in out
        assert f"precision auto on this CPU: {result['cpu_speed']['auto_precision']['why']}" in out
        assert "the fastest (" in out


def test_bench_names_an_unknown_configuration(in_tmp, capsys):
    argv = ["--params", str(PROJECT / "params.yaml"), "bench", "--configs", "none/sgd,spin/sgd"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "'spin/sgd'" in err and "sgd, adam" in err
    assert not (in_tmp / "metrics").exists()
