"""Memory a setting needs, checked before anything is allocated: a stage that would not fit
stops with one line naming the key, what it would need and what is free, instead of taking the
machine's memory until the kernel's OOM killer ends it (DVC then prints only "exited with -9",
and on a shared machine other people's processes may be killed first).

What is free is the smaller of the kernel's MemAvailable and the headroom under this process's
cgroup limit (a container's `--memory`, a Slurm job's `--mem`), which MemAvailable does not see.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tlstudy.errors import ParamsError

GIB = 2**30
# Weights, gradients, Adam's two moments and the interpreter's own: a ResNet-18 is 45 MB.
FIXED = 512 << 20


class MemoryNeedError(ParamsError):
    """A setting whose memory need is beyond what the machine has free."""


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def mem_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_headroom(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self/cgroup")) -> int | None:
    """Bytes this process's cgroup may still take under its limit (v2 memory.max, or v1
    memory.limit_in_bytes), the tightest over the cgroup and its parents; None without a limit."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    tightest = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: limit, usage
            base, files = root, ("memory.max", "memory.current")
        elif "memory" in controllers.split(","):
            base, files = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        folder = base / path.lstrip("/")
        while True:
            limit, used = _read_int(folder / files[0]), _read_int(folder / files[1])
            # v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages).
            if limit is not None and used is not None and limit < 1 << 60:
                left = max(0, limit - used)
                tightest = left if tightest is None else min(tightest, left)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return tightest


def free() -> tuple[int, str] | None:
    """(bytes free for this process, where the figure comes from), or None where unknown."""
    found = [(n, what) for n, what in ((mem_available(), "MemAvailable"), (cgroup_headroom(), "the cgroup's limit"))]
    found = [(n, what) for n, what in found if n is not None]
    return min(found) if found else None


@functools.cache
def activation_elements(image_size: int) -> tuple[int, int]:
    """(sum, largest) of a ResNet-18's layer outputs for one image at `image_size`, counted on
    PyTorch's meta device: shapes only, no memory. The sum, times 4 bytes and the batch, is
    close to a training step's measured peak (fp32 at 64-448 px, slightly above it; bf16 below)."""
    import torch
    from torchvision.models import resnet18

    model = resnet18().to("meta").eval()  # eval: BatchNorm takes any size, the shapes are the same
    sizes: list[int] = []
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel())) for m in leaves]
    with torch.no_grad():
        model(torch.empty(1, 3, image_size, image_size, device="meta"))
    for h in hooks:
        h.remove()
    return sum(sizes), max(sizes)


def training_bytes(image_size: int, batch_size: int, eval_batch: int, images_bytes: int, on_cpu: bool) -> int:
    """A training stage's host memory: its images twice (loaded, then indexed into subsets),
    and, on the CPU, the larger of a training step (every layer's output kept for the backward
    pass) and an evaluation batch (a layer's input and output at a time)."""
    need = 2 * images_bytes + FIXED
    if on_cpu:
        total, largest = activation_elements(image_size)
        need += 4 * max(batch_size * total, eval_batch * 2 * largest)
    return need


def check(need: int, setting: str, what: str, lower: str, available: tuple[int, str] | None = None) -> None:
    """Refuse `need` bytes beyond what is free, naming the setting (`data.image_size = 4000`)."""
    available = available if available is not None else free()
    if available is None or need <= available[0]:
        return
    raise MemoryNeedError(
        f"params: {setting}: {what} needs about {need / GIB:.1f} GiB of memory, but {available[0] / GIB:.1f} GiB "
        f"is free here ({available[1]}); {lower}, or run on a machine with more memory"
    )
