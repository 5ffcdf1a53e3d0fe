"""tlstudy.tools.machine: what a published result ran on, down to what picks PyTorch's CPU kernels."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch
from conftest import PROJECT

from tlstudy.lib import cpu
from tlstudy.tools import machine, profile

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8 avx_vnni

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx2
"""


def test_cpuinfo_gives_the_model_and_only_the_kernel_selecting_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    model, flags = cpu.cpuinfo(path)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    # avx, fma and avx_vnni do not pick ATen's kernels; the first processor's line is read.
    assert flags == ["amx_bf16", "amx_int8", "amx_tile", "avx2", "avx512_bf16", "avx512_fp16", "avx512bw", "avx512f"]


def test_no_cpuinfo_still_gives_a_record(tmp_path):
    info = machine.machine(cpuinfo=tmp_path / "absent")
    assert info["cpu"] and info["cpu_flags"] == []


def test_the_record_holds_cpu_threads_versions_and_gpu():
    info = machine.machine()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["torch_threads"] == torch.get_num_threads() and info["cpu_count"] == os.cpu_count()
    assert 1 <= info["cpus_usable"] <= info["cpu_count"]
    versions = info["versions"]
    assert set(versions) == {"python", "torch", "torchvision", "numpy", "pillow", "dvc"}
    assert versions["torch"] == torch.__version__ and versions["python"] == ".".join(map(str, sys.version_info[:3]))
    assert all(versions.values()), versions  # every one is installed here, dvc included
    if torch.cuda.is_available():
        assert info["gpu"]["name"] == torch.cuda.get_device_name(0) and info["gpu"]["cuda"] == torch.version.cuda
    else:
        assert info["gpu"] is None
    assert info["cpu_capability"] in machine.summary(info)
    json.dumps(info)  # a JSON record as it is


def test_python_m_tlstudy_machine_prints_the_record_as_json():
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"))
    r = subprocess.run(
        [sys.executable, "-m", "tlstudy.tools.machine"], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(r.stdout)["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


@pytest.mark.parametrize("flags", [["avx2"], []])
def test_published_timing_records_the_machine(tmp_path, monkeypatch, flags):
    monkeypatch.setattr(cpu, "cpuinfo", lambda path=None: ("Test CPU", flags))
    ws, project = tmp_path / "ws", tmp_path / "project"
    (ws / "metrics").mkdir(parents=True)
    (ws / "params.yaml").write_text("seed: 0\n")
    timing = {"invocations": [], "stages": {"fetch": 1.0}, "stage_total_s": 1.0}
    out = profile.publish(ws, project, "x", timing, "python -m tlstudy profile x")
    published = json.loads((out / "timing.json").read_text())
    details = published["machine_details"]
    assert details["cpu"] == "Test CPU" and details["cpu_flags"] == flags
    assert details["cpu_capability"] and details["torch_threads"] >= 1 and details["versions"]["dvc"]
    assert "Test CPU" in published["machine"] and published["stages"] == {"fetch": 1.0}


@pytest.mark.skipif(
    platform.machine() != "x86_64" or not torch.backends.mkldnn.is_available() or not torch.backends.mkl.is_available(),
    reason="oneDNN and MKL on x86-64 only",
)
def test_the_record_names_the_isa_onednn_and_mkl_run_and_the_settings_that_cap_them(monkeypatch):
    """What decides a CPU result's last digits beyond the flags: the ISA each library dispatches
    to (and any setting that caps it), read from the libraries themselves."""
    info = machine.machine()
    assert info["kernel_isa"]["onednn"] and info["kernel_isa"]["mkl"] and info["kernel_isa"]["mkl_cnr"]
    assert info["kernel_env"] == {} or set(info["kernel_env"]) <= {
        "ONEDNN_MAX_CPU_ISA",
        "DNNL_MAX_CPU_ISA",
        "MKL_ENABLE_INSTRUCTIONS",
    }
    assert set(info["cpu_model"]) >= {"family", "model"} and info["amx_bf16"] == ("amx_bf16" in info["cpu_flags"])
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    capped = machine.machine()
    # oneDNN names its ISA on any x86-64 CPU; MKL names its code path on Intel's only (on an AMD
    # EPYC it prints "Intel(R) Architecture processors", whatever the cap): the record keeps what
    # MKL says, and the vendor beside it tells how far that line can be read.
    assert capped["kernel_isa"]["onednn"] == "Intel AVX2" and capped["kernel_isa"]["mkl"]
    if info["cpu_vendor"] == "GenuineIntel":
        assert "AVX2" in capped["kernel_isa"]["mkl"]
    assert capped["kernel_env"] == {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert capped["auto_precision"]["bf16"] is False  # under that cap, precision auto keeps fp32
    assert "capped at AVX2" in capped["auto_precision"]["why"]
