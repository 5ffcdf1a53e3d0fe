"""What this processor offers PyTorch's CPU kernels, read from /proc/cpuinfo (Linux).

ATen dispatches on AVX2 / AVX-512 (`torch.backends.cpu.get_cpu_capability()`); oneDNN, which runs
the convolutions, picks its kernels by its own ISA levels — up to AVX-512 with AMX, whose tiles
do bf16 and int8 matrix products — and by the processor's cache sizes. `precision: auto` trains in
bf16 on the kinds of CPU where it was measured faster than fp32 (`bf16_rule`); machine.py records the
rest.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The flags that decide PyTorch's CPU kernels (ATen: AVX2 / AVX-512; oneDNN: AVX-512 BF16/VNNI/FP16
# and AMX for bf16 and int8 matrix products).
KERNEL_FLAGS = re.compile(r"^(avx2|avx512\w*|amx\w*)$")


def cpuinfo(path: Path = CPUINFO) -> tuple[str | None, list[str]]:
    """The first processor's model name and its kernel-selecting flags (Linux only)."""
    try:
        text = path.read_text()
    except OSError:
        return None, []
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    found = sorted({f for f in flags.group(1).split() if KERNEL_FLAGS.match(f)}) if flags else []
    return (model.group(1).strip() if model else None), found


@functools.cache
def amx_bf16() -> bool:
    """Whether the processor has AMX tiles for bf16 (Intel Sapphire Rapids and later)."""
    return "amx_bf16" in cpuinfo()[1]


# oneDNN's ISA levels (its max-ISA setting) from which its convolutions compute bf16 natively: the
# AVX512-BF16 dot products, and AMX's tiles above them. A cap below these (AVX2, AVX512_CORE, …)
# makes oneDNN emulate bf16 by conversions, which is slower than fp32.
BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16")
UNCAPPED = ("", "ALL", "DEFAULT")
ONEDNN_CAP = "ONEDNN_MAX_CPU_ISA"
# oneDNN's older name for the same setting, still read by it; the new name wins where both are set.
DNNL_CAP = "DNNL_MAX_CPU_ISA"


def onednn_cap(environ=os.environ) -> str | None:
    """The cap on oneDNN's ISA this process runs under, as oneDNN reads it: ONEDNN_MAX_CPU_ISA,
    else DNNL_MAX_CPU_ISA."""
    for name in (ONEDNN_CAP, DNNL_CAP):
        if environ.get(name, "").strip():
            return environ[name]
    return None


def cap_allows_bf16(cap: str | None) -> bool:
    """Whether a oneDNN cap leaves oneDNN its bf16 kernels. Unset, ALL and the bf16 levels do; so
    do the AVX10 levels (AVX10.1 holds AVX512-BF16) and any AMX level; every other value, an
    unknown one included, is taken as a cap below them: fp32 is correct anywhere."""
    cap = (cap or "").strip().upper()
    return cap in UNCAPPED or cap in BF16_ISAS or cap.startswith("AVX10") or "AMX" in cap


def cap_allows_amx(cap: str | None) -> bool:
    """Whether a oneDNN cap leaves oneDNN its AMX kernels (unset, ALL, or an AMX level)."""
    cap = (cap or "").strip().upper()
    return cap in UNCAPPED or "AMX" in cap


def bf16_rule(vendor_id: str | None, flags: list[str] | set[str], cap: str | None) -> tuple[bool, str]:
    """Whether `precision: auto` trains in bf16 on a CPU, and why: a rule on what the CPU is (its
    vendor, its flags and the cap on oneDNN), no timing, so one machine always chooses the same.
    It follows the three kinds `make bench` has measured (docs/performance.md):

    - AMX-BF16 with oneDNN allowed its AMX kernels (Intel Sapphire Rapids and later): bf16,
      1.37x fp32 at 64 px and 3.25x at 227 px;
    - AVX512-BF16 on an AMD CPU (Zen 4 and later): bf16, 1.63x and 1.95x;
    - AVX512-BF16 on an Intel CPU without AMX, or with AMX capped away (cloud VMs often hide AMX):
      fp32 — bf16 ran 0.81x and 0.64x there, the dot products do not pay for the conversions;
    - anything else, an unmeasured vendor with AVX512-BF16 included: fp32, which is never the
      emulated slow path; `precision: bf16` forces bf16 for whoever has measured it faster."""
    flags = set(flags)
    if not cap_allows_bf16(cap):
        return False, f"fp32: oneDNN is capped at {cap.strip()}, below its bf16 kernels"
    if "amx_bf16" in flags and cap_allows_amx(cap):
        return True, "bf16: AMX-BF16"
    if "avx512_bf16" in flags and vendor_id == "AuthenticAMD":
        return True, "bf16: AVX512-BF16 on AMD"
    if "avx512_bf16" in flags:
        why = "AMX capped away" if "amx_bf16" in flags else "no AMX"
        return False, f"fp32: AVX512-BF16 with {why} on {vendor_id or 'an unknown vendor'} (bf16 measured slower)"
    return False, "fp32: no bf16 instructions"


@functools.cache
def auto_bf16() -> tuple[bool, str]:
    """bf16_rule for this machine and this process's oneDNN cap."""
    return bf16_rule(vendor(), cpuinfo()[1], onednn_cap())


def vendor(path: Path = CPUINFO) -> str | None:
    """`GenuineIntel`, `AuthenticAMD`, …: MKL picks its code paths by it, and names them only on Intel's."""
    try:
        m = re.search(r"^vendor_id\s*:\s*(\S+)", path.read_text(), re.M)
    except OSError:
        return None
    return m.group(1) if m else None


def model_numbers(path: Path = CPUINFO) -> dict:
    """Family, model and stepping, and the cache sizes: what, beyond the flags, decides oneDNN's
    blocking, hence the order of a convolution's sums and the last digits of a result."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    out = {}
    for key, name in (("cpu family", "family"), ("model", "model"), ("stepping", "stepping")):
        m = re.search(rf"^{key}\s*:\s*(\d+)$", text, re.M)
        if m:
            out[name] = int(m.group(1))
    caches = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind = (index / "level").read_text().strip(), (index / "type").read_text().strip()
            suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
            caches[f"L{level}{suffix}"] = (index / "size").read_text().strip()
        except OSError:
            continue
    if caches:
        out["caches"] = caches
    return out


def onednn_isa() -> str | None:
    """The instruction set oneDNN dispatches to here, as it prints it (ONEDNN_VERBOSE) when it runs
    a convolution in a child process; ONEDNN_MAX_CPU_ISA caps it."""
    code = "import torch; torch.nn.functional.conv2d(torch.ones(2, 3, 16, 16), torch.ones(4, 3, 3, 3))"
    env = dict(os.environ, ONEDNN_VERBOSE="1")
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"onednn_verbose,(?:v\d+,)?info,cpu,isa:(.+)", out.stdout + out.stderr)
    return m.group(1).strip() if m else None
