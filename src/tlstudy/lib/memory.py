"""Memory a setting needs, checked before anything is allocated: a stage that would not fit
stops with one line naming the key, what it would need and what is free, instead of taking the
machine's memory until the kernel's OOM killer ends it (DVC then prints only "exited with -9",
and on a shared machine other people's processes may be killed first).

A need is what the process will hold at its peak: what it holds when it checks (its resident
set: Python, PyTorch and the libraries, about 0.9 GiB after a stage's imports) and what the stage
adds. What is free is the smaller of the kernel's MemAvailable and the headroom under this
process's cgroup limit (a container's `--memory`, a Slurm job's `--mem`), which MemAvailable does
not see; the cgroup's inactive page cache counts as free there, as Docker and the kubelet count
it, since the kernel reclaims it before it kills anything. A need fits when it is at most what the
process holds and what is free together.
"""

from __future__ import annotations

import functools
from pathlib import Path

from tlstudy.lib.errors import ParamsError

GIB = 2**30
# Model-sized buffers a training stage holds at its peak: the initial model, the one training,
# its gradients, Adam's two moments (the most any of the study's optimizers keeps), the best
# epoch's weights, and a checkpoint's weights and moments while it is written.
CPU_STATE_COPIES = 9
# On a GPU the host holds the initial model and the copy on its way to the device.
GPU_STATE_COPIES = 2
# oneDNN's and autograd's working memory from the first step on: 66 MiB measured (ResNet-18, 32 px).
RUNTIME = 64 << 20


class MemoryNeedError(ParamsError):
    """A setting whose memory need is beyond what the machine has free."""


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat(path: Path, key: str) -> int:
    """A counter of a cgroup's memory.stat, 0 where the file or the key is missing."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    for line in lines:
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return 0


def mem_available() -> int | None:
    """The kernel's MemAvailable, as psutil reads it."""
    import psutil

    try:
        return psutil.virtual_memory().available
    except (OSError, psutil.Error):
        return None


def rss() -> int:
    """What this process holds now: its resident set."""
    import psutil

    return psutil.Process().memory_info().rss


def cgroup_headroom(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self/cgroup")) -> int | None:
    """Bytes this process's cgroup may still take under its limit (v2 memory.max, or v1
    memory.limit_in_bytes), the tightest over the cgroup and its parents; None without a limit.
    Usage leaves out the inactive page cache (memory.stat: v2 `inactive_file`, v1
    `total_inactive_file`, both counting the cgroups below)."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    tightest = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: limit, usage, reclaimable cache
            base, files = root, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            base, files = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        folder = base / path.lstrip("/")
        while True:
            limit, used = _read_int(folder / files[0]), _read_int(folder / files[1])
            # v1 writes "no limit" as a huge number (PAGE_COUNTER_MAX pages).
            if limit is not None and used is not None and limit < 1 << 60:
                used -= min(used, _stat(folder / "memory.stat", files[2]))
                left = max(0, limit - used)
                tightest = left if tightest is None else min(tightest, left)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return tightest


def free(root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc/self/cgroup")) -> tuple[int, str] | None:
    """(bytes free for this process, where the figure comes from), or None where unknown."""
    found = [(mem_available(), "MemAvailable"), (cgroup_headroom(root, proc), "the cgroup's limit")]
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


@functools.cache
def parameter_bytes() -> int:
    """A ResNet-18's weights in fp32 (its 1000-class head: the study's heads are smaller)."""
    from torchvision.models import resnet18

    return 4 * sum(p.numel() for p in resnet18().to("meta").parameters())


def training_bytes(
    image_size: int, batch_size: int, eval_batch: int, images_bytes: int, on_cpu: bool, held: int | None = None
) -> int:
    """A training stage's peak host memory: what the process holds now (`held`, its resident set
    by default), its images twice (loaded, then indexed into subsets), its models' state, and, on
    the CPU, the larger of a training step (every layer's output kept for the backward pass) and
    an evaluation batch (a layer's input and output at a time)."""
    need = (rss() if held is None else held) + 2 * images_bytes
    if on_cpu:
        total, largest = activation_elements(image_size)
        need += CPU_STATE_COPIES * parameter_bytes() + RUNTIME
        need += 4 * max(batch_size * total, eval_batch * 2 * largest)
    else:
        need += GPU_STATE_COPIES * parameter_bytes()
    return need


def check(
    need: int,
    setting: str,
    what: str,
    lower: str,
    available: tuple[int, str] | None = None,
    held: int | None = None,
) -> None:
    """Refuse a peak of `need` bytes, what the process holds included, beyond what it holds
    (`held`, its resident set by default) and what is free, naming the setting (`data.image_size = 4000`)."""
    available = available if available is not None else free()
    if available is None:
        return
    held = rss() if held is None else held
    if need <= held + available[0]:
        return
    raise MemoryNeedError(
        f"params: {setting}: {what} needs about {need / GIB:.1f} GiB of memory, but {(held + available[0]) / GIB:.1f} "
        f"GiB is free here for it ({available[1]}: {available[0] / GIB:.1f} GiB, and the {held / GIB:.1f} GiB this "
        f"process holds already); {lower}, or run on a machine with more memory"
    )
