"""A setting whose memory need is beyond the machine is refused before anything is allocated, in
one line naming the key, the need and what is free; never an OOM kill."""

import os
import subprocess
import sys

import pytest
import yaml
from conftest import PROJECT

from tlstudy.lib import memory
from tlstudy.stages import fetch, stats, train


def too_large_for_training(batch_size: int) -> int:
    """An image size whose training step needs twice the memory free here, whatever this machine has."""
    free = memory.free()[0]
    size = 256
    while memory.training_bytes(size, batch_size, 256, 0, True) < 2 * free:
        size *= 2
    return size


def stage(folder, *argv):
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"))
    return subprocess.run(
        [sys.executable, "-m", "tlstudy.stage", *argv], cwd=folder, env=env, capture_output=True, text=True, timeout=600
    )


def test_free_memory_is_the_tighter_of_memavailable_and_the_cgroup(tmp_path):
    import psutil

    root, proc = tmp_path / "cgroup", tmp_path / "self_cgroup"
    (root / "job").mkdir(parents=True)
    (root / "job" / "memory.max").write_text(f"{(1 << 20) + 100}\n")
    (root / "job" / "memory.current").write_text("100\n")
    proc.write_text("0::/job\n")
    # 1 MiB under the limit: below what any machine that runs the suite has available.
    assert memory.free(root, proc) == (1 << 20, "the cgroup's limit")
    proc.write_text("0::/\n")
    free, where = memory.free(root, proc)  # no limit: the kernel's figure
    assert where == "MemAvailable" and 0 < free <= psutil.virtual_memory().total


def test_demo_data_at_an_image_size_beyond_memory_is_refused_before_any_image_is_drawn(params, in_tmp):
    size = 1
    while 2 * params["data"]["synthetic_per_class"] * 7 * 3 * size * size < 2 * memory.free()[0]:
        size *= 2
    params["data"]["image_size"] = size
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params))
    r = stage(in_tmp, "fetch")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = r.stderr.strip().splitlines()
    expected = f"error: params: data.image_size = {size}: decoding {12 * 7} images at {size} px needs about "
    assert line.startswith(expected)
    assert "GiB is free here for it (" in line and "lower data.image_size" in line
    assert not (in_tmp / "work").exists()  # no synthetic image was drawn, nothing decoded


def test_a_training_step_beyond_memory_is_refused_before_the_images_are_loaded(params, in_tmp, monkeypatch):
    fetch.run(params)
    stats.run(params)
    size = too_large_for_training(params["batch_size"])
    params["data"]["image_size"] = size
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params))
    r = stage(in_tmp, "train", "--part", "scratch")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(
        f"error: params: data.image_size = {size} with batch_size = {params['batch_size']}: training on these images "
        "needs about "
    )
    assert not (in_tmp / "models").exists()
    # At the size the images have, the same check lets the stage run.
    params["data"]["image_size"] = 32
    train.check_memory(params, in_tmp / "work/images.pt", train.engine.speed_for(train.engine.device(), "fp32", 32))


def test_the_estimate_grows_with_the_image_and_the_batch():
    small, large = memory.training_bytes(64, 32, 256, 0, True), memory.training_bytes(227, 32, 256, 0, True)
    assert small < large < memory.training_bytes(227, 64, 256, 0, True)
    # On a GPU the steps are its own memory's concern; the host holds the images (twice).
    gpu = [memory.training_bytes(size, batch, 1024, images, False, held=0) for size, batch, images in
           ((227, 32, 10**9), (64, 8, 0))]  # fmt: skip
    assert gpu[0] - gpu[1] == 2 * 10**9
    # What the process holds when it checks is part of its peak.
    step = [memory.training_bytes(64, 32, 256, 0, True, held=held) for held in (0, 5 << 30)]
    assert step[1] - step[0] == 5 << 30
    total, largest = memory.activation_elements(224)
    assert largest == 64 * 112 * 112 and total > 3 * largest  # conv1, bn1 and relu give that size each


def test_the_cgroup_limit_counts_where_it_is_tighter(tmp_path):
    root, proc = tmp_path / "cgroup", tmp_path / "self_cgroup"
    job = root / "slurm" / "job_7"
    job.mkdir(parents=True)
    (root / "slurm" / "memory.max").write_text("max\n")
    (root / "slurm" / "memory.current").write_text("100\n")
    (job / "memory.max").write_text(f"{4 << 30}\n")
    (job / "memory.current").write_text(f"{1 << 30}\n")
    proc.write_text("0::/slurm/job_7\n")
    assert memory.cgroup_headroom(root, proc) == 3 << 30
    proc.write_text("0::/\n")
    assert memory.cgroup_headroom(root, proc) is None  # no limit anywhere
    v1 = root / "memory" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{2 << 30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{1 << 29}\n")
    proc.write_text("5:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    assert memory.cgroup_headroom(root, proc) == (2 << 30) - (1 << 29)


def test_inactive_page_cache_under_a_cgroup_counts_as_free(tmp_path):
    """A Slurm job (--mem=8G) whose cgroup holds 6 GiB of file cache it read once and 1 GiB of its
    own: 7 GiB are free for it, as Docker and the kubelet count, not 1."""
    root, proc = tmp_path / "cgroup", tmp_path / "self_cgroup"
    job = root / "system.slice" / "slurmstepd.scope" / "job_7"
    job.mkdir(parents=True)
    (job / "memory.max").write_text(f"{8 << 30}\n")
    (job / "memory.current").write_text(f"{7 << 30}\n")
    (job / "memory.stat").write_text(
        f"anon {1 << 30}\nfile {6 << 30}\nactive_file 0\ninactive_file {6 << 30}\nshmem 0\n"
    )
    proc.write_text("0::/system.slice/slurmstepd.scope/job_7\n")
    assert memory.cgroup_headroom(root, proc) == 7 << 30
    # The case: a 2.8 GiB setting in that job is let through.
    memory.check(int(2.8 * 2**30), "data.image_size = 227", "training", "lower it", memory.free(root, proc), held=0)
    # v1 (a Docker container on an older host): the hierarchical total_inactive_file counts, not
    # the cgroup's own inactive_file.
    v1 = root / "memory" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text(f"{4 << 30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{3 << 30}\n")
    (v1 / "memory.stat").write_text(f"inactive_file {1 << 20}\ntotal_inactive_file {2 << 30}\n")
    proc.write_text("4:memory:/docker/abc\n")
    assert memory.cgroup_headroom(root, proc) == 3 << 30


def test_the_estimate_is_not_below_a_real_training_stages_peak(params, in_tmp):
    """The train stage at 32 px with Adam, in a process of its own: its peak resident set is at
    most the estimate the stage checks, made where the stage makes it (before the images load)."""
    fetch.run(params)
    stats.run(params)
    params.update(optimizer=["adam"], epochs=1)
    (in_tmp / "params.yaml").write_text(yaml.safe_dump(params))
    code = (
        "from pathlib import Path\n"
        "from tlstudy.training import engine\n"
        "from tlstudy.lib import memory\n"
        "from tlstudy import params\n"
        "from tlstudy.stages import train\n"
        "p = params.load('params.yaml')\n"
        "speed = engine.speed_for(engine.device(), p['precision'], p['data']['image_size'])\n"
        "images = Path('work/images.pt').stat().st_size\n"
        "need = memory.training_bytes(p['data']['image_size'], p['batch_size'], speed.eval_batch, images, True)\n"
        "train.run(p, 'scratch')\n"
        # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child
        # of a large pytest process would report its parent's peak.
        "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1]\n"
        "print('peak', int(hwm) * 1024, 'need', need)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PROJECT / "src"))
    r = subprocess.run([sys.executable, "-c", code], cwd=in_tmp, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    _, peak, _, need = r.stdout.splitlines()[-1].split()
    assert int(peak) <= int(need) < 2 * int(peak)


def test_the_refusal_names_the_setting_the_need_and_what_is_free():
    with pytest.raises(memory.MemoryNeedError) as info:
        memory.check(3 << 30, "data.image_size = 900", "decoding 10 images", "lower data.image_size", (1 << 30, "X"),
                     held=1 << 29)  # fmt: skip
    assert str(info.value) == (
        "params: data.image_size = 900: decoding 10 images needs about 3.0 GiB of memory, but 1.5 GiB is free here "
        "for it (X: 1.0 GiB, and the 0.5 GiB this process holds already); lower data.image_size, or run on a machine "
        "with more memory"
    )
    memory.check(3 << 29, "k", "w", "l", (1 << 30, "X"), held=1 << 29)  # exactly what it may have: allowed
