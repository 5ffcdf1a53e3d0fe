"""Resume: a run killed after any epoch continues to the same bits, in-process on a tiny network;
damaged checkpoints; what keys a stored run. The real stage SIGKILLed by `dvc repro` mid-grid,
pretraining too, is tests/pipeline/test_kill_mid_run.py."""

import functools
import os

import pytest
import torch
from conftest import TIMING

from tlstudy.training import engine


def test_stored_runs_are_keyed_by_every_setting_that_decides_their_results(params, in_tmp):
    from tlstudy.training import resume

    (in_tmp / "images.pt").write_bytes(b"images")
    spec = params["parts"]["scratch"]
    fp32 = engine.Speed(torch.device("cpu"), bf16=False, channels_last=False)
    base = resume.fingerprint(params, spec, [in_tmp / "images.pt"], "train", fp32)
    assert resume.fingerprint(params, spec, [in_tmp / "images.pt"], "train", fp32) == base
    for key, value in [("precision", "bf16"), ("batch_size", 8), ("epochs", 3), ("seed", 1)]:
        changed = dict(params, **{key: value})
        assert resume.fingerprint(changed, spec, [in_tmp / "images.pt"], "train", fp32) != base, key
    # `precision: auto` is the same word on every node; what it chose there is in the key.
    for kind in [
        engine.Speed(torch.device("cpu"), bf16=True, channels_last=True),
        engine.Speed(torch.device("cpu"), bf16=False, channels_last=True),
        engine.Speed(torch.device("cuda"), bf16=False, channels_last=False),
    ]:
        assert resume.fingerprint(params, spec, [in_tmp / "images.pt"], "train", kind) != base, kind


class Killed(Exception):
    pass


class KillAfter:
    """resume.Checkpoints saving after every epoch, and killing the run (an exception out of fit)
    right after the save of epoch `at`: what a SIGKILL between two epochs leaves on disk."""

    def __init__(self, folder, at=None, lines=None):
        from tlstudy.training import resume

        self.inner = resume.Checkpoints(folder, "run", "test", log=(lines if lines is not None else []).append, share=1)
        self.at = at

    def latest(self):
        return self.inner.latest()

    def due(self):
        return self.inner.due()

    def save(self, epoch, state):
        cost = self.inner.save(epoch, state)
        if epoch == self.at:
            raise Killed
        return cost


def tiny_split(n_train=24, n_val=14, size=32):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train + n_val, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n_train + n_val) % 7
    col = torch.full((1, 3, 1, 1), 0.5)
    return engine.Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:], col, col / 2)


SETTINGS = {"sgd": {"momentum": 0.9, "weight_decay": 5e-4}, "adam": {"weight_decay": 0.0}}
FLIP_ROT = [["RandomHorizontalFlip", {"p": 0.5}], ["RandomAffine", {"degrees": 30}]]


class TinyNet(torch.nn.Module):
    """What a ResNet-18 run keeps as state, at a ten-thousandth of its size: convolution weights,
    BatchNorm's running statistics, and a head named `fc` (models.set_trainable's backbone/head
    split). A checkpoint is then kilobytes, not ResNet-18's 180 MB a save."""

    def __init__(self, n_classes: int = 7):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, n_classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.bn(self.conv(x)))), 1))


def tiny_net(seed: int = 0) -> TinyNet:
    with torch.random.fork_rng(devices=[]):  # seeded as models.build is: same call, same weights
        torch.manual_seed(seed)
        return TinyNet()


def fit_tiny(checkpoints, optimizer="adam", trainable="all", schedule="cosine", bf16=False, epochs=5):
    """A run that touches every piece of state: momentum or Adam's moments, a cosine schedule,
    BatchNorm's statistics, per-image augmentation draws (the global generator) and batched ones
    (the run's)."""
    from tlstudy.training import augment

    speed = engine.Speed(torch.device("cpu"), bf16=bf16, channels_last=bf16)
    transform = augment.batched(augment.build(FLIP_ROT)) if trainable == "all" else None
    model = tiny_net()
    run = engine.Run(optimizer, 0.01, "flip_rot")
    result = engine.fit(
        model, trainable, run, transform, tiny_split(), epochs, 8, SETTINGS, 3, "t", speed,
        schedule=schedule, checkpoints=checkpoints,
    )  # fmt: skip
    return result, model


@functools.cache
def uninterrupted(optimizer="adam", trainable="all", schedule="cosine", bf16=False, epochs=5):
    """fit_tiny without checkpoints, computed once per module for the tests that compare with it."""
    return fit_tiny(None, optimizer, trainable, schedule, bf16, epochs)


def same_run(a, b):
    strip = lambda h: [{k: v for k, v in e.items() if k not in TIMING} for e in h]  # noqa: E731
    ra, ma = a
    rb, mb = b
    assert strip(ra.history) == strip(rb.history)
    assert (ra.best_epoch, ra.best_val_acc, ra.diverged_epoch) == (rb.best_epoch, rb.best_val_acc, rb.diverged_epoch)
    assert ra.best_state.keys() == rb.best_state.keys()
    assert all(torch.equal(ra.best_state[k], rb.best_state[k]) for k in ra.best_state)
    sa, sb = ma.state_dict(), mb.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "optimizer,trainable,schedule,bf16",
    [("adam", "all", "cosine", False), ("sgd", "all", "constant", True), ("sgd", "head", "cosine", False)],
)
@pytest.mark.parametrize("at", [1, 3])
def test_a_run_killed_after_any_epoch_continues_to_the_same_bits(tmp_path, optimizer, trainable, schedule, bf16, at):
    kw = dict(optimizer=optimizer, trainable=trainable, schedule=schedule, bf16=bf16)
    straight = uninterrupted(**kw)
    with pytest.raises(Killed):
        fit_tiny(KillAfter(tmp_path, at=at), **kw)
    lines = []
    resumed = fit_tiny(KillAfter(tmp_path, lines=lines), **kw)
    assert lines[0] == f"test: continuing after epoch {at}, from its checkpoint"
    same_run(straight, resumed)
    losses = [h["train_loss"] for h in straight[0].history]
    assert len(set(losses)) == len(losses) == 5  # every epoch moved the weights: the match is not vacuous


def test_a_corrupt_newest_checkpoint_is_said_and_the_one_before_it_is_used(tmp_path):
    straight = uninterrupted()
    with pytest.raises(Killed):
        fit_tiny(KillAfter(tmp_path, at=3))
    newest = tmp_path / "run.e3.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit deep in a tensor: torch.load alone would not notice
    newest.write_bytes(bytes(data))
    lines = []
    resumed = fit_tiny(KillAfter(tmp_path, lines=lines))
    assert lines[0] == (
        "test: warning: the checkpoint of epoch 3 is torn or corrupt (its size or sha256 differs from its record); "
        "continuing from the one before it"
    )
    assert lines[1] == "test: continuing after epoch 2, from its checkpoint"
    same_run(straight, resumed)


@pytest.mark.parametrize("damage", ["truncate", "no_record", "bad_record"])
def test_every_checkpoint_damaged_means_the_run_starts_again_and_ends_the_same(tmp_path, damage):
    straight = uninterrupted(epochs=3)
    with pytest.raises(Killed):
        fit_tiny(KillAfter(tmp_path, at=1), epochs=3)
    pt, record = tmp_path / "run.e1.pt", tmp_path / "run.e1.json"
    if damage == "truncate":  # a torn write: the file ends early
        pt.write_bytes(pt.read_bytes()[:1000])
    elif damage == "no_record":  # killed between the state and its record
        record.unlink()
    else:
        record.write_text("{not json")
    lines = []
    resumed = fit_tiny(KillAfter(tmp_path, lines=lines), epochs=3)
    assert len(lines) == 1 and lines[0].startswith("test: warning: the checkpoint of epoch 1 is ")
    assert lines[0].endswith("; continuing from the run's start")
    same_run(straight, resumed)


def test_the_newest_two_checkpoints_are_kept_and_a_finished_run_keeps_none(tmp_path, monkeypatch):
    from tlstudy.training import resume

    monkeypatch.setenv(resume.SHARE_ENV, "1")
    with pytest.raises(Killed):
        fit_tiny(KillAfter(tmp_path, at=4), epochs=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.e3.json", "run.e3.pt", "run.e4.json", "run.e4.pt"]
    store = resume.RunStore("part", "base", root=tmp_path / "runs")
    run = engine.Run("adam", 0.01, "flip_rot")
    result, _ = fit_tiny(store.checkpoints(run, "t", log=lambda line: None), epochs=3)
    # Epochs 1 and 2; none after the last epoch, which the finished record stands for.
    assert sorted(p.name.split(".")[1] for p in store.dir.glob("*.e*.pt")) == ["e1", "e2"]
    store.save(result, keep_state=False)
    assert [p.suffix for p in store.dir.iterdir()] == [".json"]  # the record alone


def test_a_save_is_due_once_its_cost_is_at_most_the_share_of_the_time_since_the_last(tmp_path, monkeypatch):
    from tlstudy.training import resume

    now = [100.0]
    monkeypatch.setattr(resume.time, "monotonic", lambda: now[0])
    c = resume.Checkpoints(tmp_path, "k", "t", share=0.05)
    c.cost = 1.0
    now[0] += 18.9
    assert not c.due()
    now[0] += 0.1
    assert c.due()  # 1 s of 20 s: 5 %
    monkeypatch.setenv(resume.SHARE_ENV, "2")
    with pytest.raises(Exception, match="TLSTUDY_CHECKPOINT_SHARE='2': expected a share"):
        resume.Checkpoints(tmp_path, "k", "t")


def small_state(epoch):
    return {"epoch": epoch, "weights": torch.full((1000,), float(epoch))}


def test_a_checkpoint_that_cannot_be_read_now_is_kept_and_the_one_before_it_is_used(tmp_path, monkeypatch):
    """An OSError reading a sound state (EIO, or ESTALE on NFS) proves nothing against it: it is
    said, kept, and read on the next try; the run continues from the one before it meanwhile."""
    import builtins
    import errno
    import io

    from tlstudy.training import resume

    saver = resume.Checkpoints(tmp_path, "run", "test", log=lambda line: None, share=1)
    for epoch in (1, 2):
        saver.save(epoch, small_state(epoch))
    newest = tmp_path / "run.e2.pt"
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    real_open = builtins.open

    def failing_open(file, *args, **kwargs):  # the disk fails the read of that one file
        if isinstance(file, (str, os.PathLike)) and os.fspath(file) == os.fspath(newest):
            raise OSError(errno.EIO, os.strerror(errno.EIO), os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", failing_open)
    monkeypatch.setattr(io, "open", failing_open)
    lines = []
    state = resume.Checkpoints(tmp_path, "run", "test", log=lines.append, share=1).latest()
    monkeypatch.undo()
    assert state["epoch"] == 1 and torch.equal(state["weights"], small_state(1)["weights"])
    assert lines == [
        f"test: warning: the checkpoint of epoch 2 is unreadable here ([Errno 5] Input/output error: '{newest}'); "
        "kept (it may read next time), continuing from the one before it",
        "test: continuing after epoch 1, from its checkpoint",
    ]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing deleted or changed
    lines.clear()
    assert resume.Checkpoints(tmp_path, "run", "test", log=lines.append, share=1).latest()["epoch"] == 2
    assert lines == ["test: continuing after epoch 2, from its checkpoint"]


def test_a_record_that_cannot_be_written_leaves_no_state_behind_and_the_saves_stop(tmp_path):
    """The kernel refuses the record (a folder holds its name): the state written before it is
    removed, not left as an orphan as large as the run's weights; said once, and the run's later
    saves are not tried."""
    from tlstudy.training import resume

    (tmp_path / "run.e1.json").mkdir()
    lines = []
    c = resume.Checkpoints(tmp_path, "run", "test", log=lines.append, share=1)
    assert c.save(1, small_state(1)) is None
    assert [p.name for p in tmp_path.iterdir()] == ["run.e1.json"]  # the folder alone: no .pt, no temp file
    assert lines == [
        f"test: warning: checkpoints stopped: could not write run.e1.json in {tmp_path} (Is a directory); nothing "
        "half-written is left, and training goes on without checkpoints until the stage ends (a kill now loses "
        "the epochs since the last one saved)"
    ]
    assert not c.due() and c.save(2, small_state(2)) is None and len(lines) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["run.e1.json"]


def test_a_share_of_zero_turns_checkpoints_off(tmp_path, monkeypatch):
    from tlstudy.training import resume

    monkeypatch.setenv(resume.SHARE_ENV, "0")
    result, _ = fit_tiny(resume.Checkpoints(tmp_path, "run", "t"), trainable="head", epochs=2)
    assert result.checkpoints == 0 and list(tmp_path.iterdir()) == []
    monkeypatch.setenv(resume.SHARE_ENV, "off")
    with pytest.raises(Exception, match=r"SHARE='off': expected a share of the run's time in \[0, 1\]"):
        resume.Checkpoints(tmp_path, "k", "t")


def test_the_key_holds_the_library_versions_the_thread_count_and_the_cpu_kernels(params, in_tmp, monkeypatch):
    """Two tries that compute a run differently never share it: another torch or torchvision,
    another thread count (how the reductions split), oneDNN capped to another ISA."""
    import torchvision

    from tlstudy.training import resume

    (in_tmp / "images.pt").write_bytes(b"images")
    spec = params["parts"]["scratch"]
    fp32 = engine.Speed(torch.device("cpu"), bf16=False, channels_last=False)

    def key():
        return resume.fingerprint(params, spec, [in_tmp / "images.pt"], "train", fp32)

    base = key()
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        assert key() != base
    finally:
        torch.set_num_threads(threads)
    assert key() == base
    for module in (torch, torchvision):
        with monkeypatch.context() as m:
            m.setattr(module, "__version__", "0.0.1")
            assert key() != base, module.__name__
    for cap in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        with monkeypatch.context() as m:
            m.setenv(cap, "AVX2")
            assert key() != base, cap
    assert key() == base


def test_every_params_key_but_those_a_run_keys_itself_is_in_the_key(params, in_tmp, monkeypatch):
    """The key's params follow params.TOP_KEYS: one added there is in the key without a second list."""
    from tlstudy import params as P
    from tlstudy.training import resume

    (in_tmp / "images.pt").write_bytes(b"images")
    spec = params["parts"]["scratch"]
    fp32 = engine.Speed(torch.device("cpu"), bf16=False, channels_last=False)
    monkeypatch.setattr(P, "TOP_KEYS", P.TOP_KEYS | {"new_setting"})
    params["new_setting"] = 1
    base = resume.fingerprint(params, spec, [in_tmp / "images.pt"], "train", fp32)
    for key in sorted(P.TOP_KEYS - {"seeds", "lr", "optimizer", "parts", "transfer", "pretrain", "inspect"}):
        changed = dict(params, **{key: {"changed": True}})
        assert resume.fingerprint(changed, spec, [in_tmp / "images.pt"], "train", fp32) != base, key


def test_pretrainings_key_holds_its_source_images_by_name_and_content(params, in_tmp):
    """The source images are no dep DVC hashes: one rewritten in place, or moved to another class
    folder, must not let a stopped pretraining continue on the old images."""
    from tlstudy.stages import pretrain

    root = in_tmp / "sources"
    paths = [f"{d}/{c}/{i}.png" for d in ("art_painting", "photo", "sketch") for c in ("dog", "horse") for i in (1, 2)]
    for i, rel in enumerate(paths):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(f"image {i}".encode())
    (in_tmp / "work").mkdir()
    (in_tmp / "work/images.pt").write_bytes(b"cartoon images")
    (in_tmp / "manifest.csv").write_text("path,class\n")
    fp32 = engine.Speed(torch.device("cpu"), bf16=False, channels_last=False)

    def key(names=paths):
        return pretrain.store_key(params, "pacs_sources", fp32, root, names)

    base = key()
    assert key() == base
    first = root / paths[0]
    first.write_bytes(b"image 0, edited")
    assert key() != base
    first.write_bytes(b"image 0")
    assert key() == base
    moved = paths[0].replace("/dog/", "/horse/").replace("1.png", "3.png")
    (root / moved).write_bytes(first.read_bytes())
    assert key([moved, *paths[1:]]) != base
