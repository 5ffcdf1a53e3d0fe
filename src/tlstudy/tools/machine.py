"""What a result ran on, recorded beside it (published timing.json, the GPU check's machine.json).

Speed and, on the CPU, the last digits of a result depend on which kernels PyTorch picked: ATen
picks them by the instruction sets (AVX2, AVX-512), oneDNN by its own ISA levels (AMX among them)
and the processor's cache sizes, all of them by the thread count; so the record names those —
the model numbers and caches, oneDNN's ISA — with the versions of every library a stage uses.

`python -m tlstudy.tools.machine` prints the record as JSON.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tlstudy.lib import cpu

LIBRARIES = ("torch", "torchvision", "numpy", "pillow", "dvc")


def _version(dist: str) -> str | None:
    """A library's installed version, without importing it (importing dvc takes a second)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu_driver() -> str | None:
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return None
    try:
        out = subprocess.run(
            [nvidia_smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def mkl() -> dict:
    """The instruction set MKL (the matrix products) dispatches to here and whether its conditional
    numerical reproducibility is on, as MKL_VERBOSE prints them in a child process. MKL picks its
    code path by the processor's vendor and model too (MKL_ENABLE_INSTRUCTIONS caps it, MKL_CBWR
    pins it), so two processors with the same flags can run other kernels. It names the path on
    Intel's processors only: on an AMD EPYC the line reads "Intel(R) Architecture processors",
    capped or not, which says nothing of the ISA (the record's cpu_vendor tells which case)."""
    env = dict(os.environ, MKL_VERBOSE="1")
    code = "import torch; torch.ones(64, 64) @ torch.ones(64, 64)"
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    if m := re.search(r"MKL_VERBOSE .*? for Intel\(R\) 64 architecture (.+?)(?:, Lnx|$)", out.stdout, re.M):
        found["mkl"] = m.group(1).strip()
    if m := re.search(r"MKL_VERBOSE \w*GEMM.* CNR:(\S+)", out.stdout):
        found["mkl_cnr"] = m.group(1)
    return found


def machine(cpuinfo: Path = cpu.CPUINFO) -> dict:
    """The processor, its kernel-selecting features, threads, library versions and the GPU."""
    import torch

    model, flags = cpu.cpuinfo(cpuinfo)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        versions[name] = _version(name)
    # The module's own version when it is importable: a source checkout or a build can differ
    # from what the installed metadata says.
    versions["torch"] = torch.__version__
    info = {
        "cpu": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_vendor": cpu.vendor(cpuinfo),
        "cpu_flags": flags,
        # What decides the kernels beyond the flags — oneDNN's and MKL's ISA, the model and its
        # caches (oneDNN's blocking) — and with them a CPU result's last digits.
        "cpu_model": cpu.model_numbers(cpuinfo),
        "kernel_isa": {"onednn": cpu.onednn_isa(), **mkl()},
        # Settings that cap or pin those libraries' choices, where set.
        "kernel_env": {
            k: os.environ[k]
            for k in (cpu.ONEDNN_CAP, cpu.DNNL_CAP, "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")
            if k in os.environ
        },  # fmt: skip
        "amx_bf16": "amx_bf16" in flags,
        # What `precision: auto` chooses on this CPU under these settings, and why (cpu.bf16_rule).
        "auto_precision": dict(zip(("bf16", "why"), cpu.bf16_rule(cpu.vendor(cpuinfo), flags, cpu.onednn_cap()))),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
        "gpu": None,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {
            "name": props.name,
            "count": torch.cuda.device_count(),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "driver": _gpu_driver(),
        }
    return info


def summary(info: dict) -> str:
    """One line: what a reader compares first."""
    v = info["versions"]
    cpu = (
        f"{info['cpu']} ({info['cpu_capability']}), {info['cpus_usable']} of {info['cpu_count']} cores, "
        f"{info['torch_threads']} torch threads"
    )
    gpu = f"; {info['gpu']['name']}, CUDA {info['gpu']['cuda']}" if info["gpu"] else ""
    return f"{cpu}{gpu}; python {v['python']}, torch {v['torch']}"


if __name__ == "__main__":
    json.dump(machine(), sys.stdout, indent=2)
    print()
