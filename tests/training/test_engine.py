import math

import pytest
import torch

from tlstudy.training import augment, engine, models


def tiny_split(n_train=24, n_val=14, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_val, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.arange(n_train + n_val) % 7
    mean = torch.full((1, 3, 1, 1), 0.5)
    std = torch.full((1, 3, 1, 1), 0.25)
    return engine.Split(x[:n_train], y[:n_train], x[n_train:], y[n_train:], mean, std)


SETTINGS = {"sgd": {"momentum": 0.0, "weight_decay": 0.0}, "adam": {"weight_decay": 0.0}}


def fit(model, trainable="all", optimizer="sgd", lr=0.01, epochs=2, seed=0, split=None, speed=None):
    return engine.fit(
        model,
        trainable,
        engine.Run(optimizer, lr),
        None,
        split or tiny_split(),
        epochs,
        8,
        SETTINGS,
        seed,
        "test",
        speed,
    )


def test_head_only_training_changes_only_the_head_and_keeps_batchnorm_buffers():
    model = models.build(7, "random", "random", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, trainable="head", optimizer="adam", lr=0.01)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("fc."))


def test_full_training_updates_backbone_and_batchnorm_statistics():
    model = models.build(7, "random", "random", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, trainable="all")
    after = model.state_dict()
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])
    assert not torch.equal(before["bn1.running_mean"], after["bn1.running_mean"])


def test_best_epoch_is_the_earliest_of_equal_validation_accuracies():
    # With lr 0 the weights never change, so every epoch ties on validation accuracy.
    r = fit(models.build(7, "random", "random", seed=0), trainable="head", lr=0.0, epochs=3)
    assert [h["val_acc"] for h in r.history] == [r.history[0]["val_acc"]] * 3
    assert r.best_epoch == 1


def test_best_epoch_is_the_argmax_of_validation_accuracy_and_its_weights_are_kept():
    split = tiny_split()
    model = models.build(7, "random", "random", seed=1)
    r = fit(model, trainable="all", optimizer="adam", lr=0.003, epochs=4, split=split)
    accs = [h["val_acc"] for h in r.history]
    assert r.best_epoch == accs.index(max(accs)) + 1 and r.best_val_acc == max(accs)
    fresh = models.build(7, "random", "random", seed=1)
    models.restore(fresh, "all", r.best_state)
    _, acc = engine.evaluate(fresh, split.x_val, split.y_val, split.mean, split.std)
    assert acc == pytest.approx(max(accs))


def test_a_non_finite_loss_stops_the_run_and_records_the_epoch():
    r = fit(models.build(7, "random", "random", seed=0), trainable="all", lr=1e30, epochs=5)
    assert r.diverged_epoch is not None and r.diverged_epoch <= 5
    assert len(r.history) == r.diverged_epoch - 1


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_same_seed_same_run(bf16):
    # On one machine both precisions repeat to the last bit (docs/reproducibility.md).
    speed = engine.Speed(torch.device("cpu"), bf16=bf16, channels_last=bf16)
    a = fit(models.build(7, "random", "random", seed=0), optimizer="adam", lr=0.001, speed=speed)
    b = fit(models.build(7, "random", "random", seed=0), optimizer="adam", lr=0.001, speed=speed)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)


def test_a_trailing_batch_of_one_joins_the_previous_batch():
    sizes = [len(b) for b in engine.batches(17, 8, torch.Generator().manual_seed(0))]
    assert sizes == [8, 9]
    assert sorted(torch.cat(engine.batches(17, 8, torch.Generator().manual_seed(0))).tolist()) == list(range(17))


def test_selection_prefers_accuracy_then_the_earlier_epoch_then_the_earlier_run():
    from tlstudy.stages.train import better

    def result(acc, epoch, state=True):
        r = engine.Result(engine.Run("sgd", 0.1), best_epoch=epoch, best_val_acc=acc)
        r.best_state = {} if state else None
        return r

    assert better(result(0.5, 3), None)
    assert not better(result(0.0, 0, state=False), None)
    assert better(result(0.6, 9), result(0.5, 1))
    assert better(result(0.5, 2), result(0.5, 3))
    assert not better(result(0.5, 3), result(0.5, 3))
    assert not better(result(0.4, 1), result(0.5, 3))


def test_head_only_on_cached_features_matches_the_plain_path():
    # Same seed, same batches, fp32: only float summation order differs (features computed in
    # other batch sizes), so losses and weights agree to 1e-4 relative. An accuracy can differ by
    # an image whose two best logits tie to that rounding, on any processor: at most one.
    split = tiny_split(n_train=40, n_val=20)
    fp32 = engine.Speed(torch.device("cpu"), bf16=False, channels_last=False)
    plain = models.build(7, "random", "random", seed=2)
    cached = models.build(7, "random", "random", seed=2)
    run = engine.Run("adam", 0.01)
    a = engine.fit(plain, "head", run, None, split, 4, 8, SETTINGS, 0, "plain", fp32)
    features = engine.head_features(cached, split, fp32)
    assert features.features and features.x_train.shape == (40, 512)
    b = engine.fit(cached, "head", run, None, features, 4, 8, SETTINGS, 0, "cached", fp32)
    for ha, hb in zip(a.history, b.history, strict=True):
        assert hb["train_loss"] == pytest.approx(ha["train_loss"], rel=1e-4)
        assert hb["val_loss"] == pytest.approx(ha["val_loss"], rel=1e-4)
        assert abs(hb["train_acc"] - ha["train_acc"]) * 40 <= 1 and abs(hb["val_acc"] - ha["val_acc"]) * 20 <= 1
    assert b.best_state.keys() == a.best_state.keys() == {"weight", "bias"}
    assert abs(b.best_val_acc - a.best_val_acc) * 20 <= 1
    if b.best_epoch == a.best_epoch:
        for k in a.best_state:
            torch.testing.assert_close(b.best_state[k], a.best_state[k], rtol=1e-4, atol=1e-5)


def test_a_features_split_refuses_full_training():
    model = models.build(7, "random", "random", seed=0)
    features = engine.head_features(model, tiny_split())
    with pytest.raises(ValueError, match="head alone"):
        fit(model, trainable="all", split=features)


def test_bf16_channels_last_path_trains_and_keeps_float32_weights():
    # The CUDA settings, forced on the CPU: the same code path, only slower here.
    speed = engine.Speed(torch.device("cpu"), bf16=True, channels_last=True)
    model = models.build(7, "random", "random", seed=0)
    r = engine.fit(model, "all", engine.Run("adam", 0.001), None, tiny_split(), 2, 8, SETTINGS, 0, "t", speed)
    assert len(r.history) == 2 and all(math.isfinite(h["train_loss"]) for h in r.history)
    assert model.conv1.weight.dtype == torch.float32
    assert model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert engine.speed_for(torch.device("cpu"), "bf16").bf16


@pytest.mark.parametrize("bf16", [True, False])
def test_auto_precision_follows_the_rule_and_fp32_or_bf16_force_it(monkeypatch, bf16):
    """What speed_for makes of the rule's answer: bf16 with channels_last, or fp32 with
    channels_last from mid-sized images; fp32 and bf16 stay a param away on any CPU."""
    from tlstudy.lib import cpu

    monkeypatch.setattr(cpu, "auto_bf16", lambda: (bf16, "the test's answer"))
    here = torch.device("cpu")
    assert engine.speed_for(here, "auto", 64) == engine.Speed(here, bf16=bf16, channels_last=bf16)
    assert engine.speed_for(here, "auto", 227) == engine.Speed(here, bf16=bf16, channels_last=True)
    assert engine.speed_for(here, "fp32", 64) == engine.Speed(here, bf16=False, channels_last=False)
    assert engine.speed_for(here, "bf16", 64) == engine.Speed(here, bf16=True, channels_last=True)


AMX = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]  # Intel Sapphire Rapids and later
INTEL_NO_AMX = ["avx2", "avx512f", "avx512_bf16", "avx512_fp16"]  # a Xeon whose VM hides AMX
ZEN4 = ["avx2", "avx512f", "avx512_bf16", "avx512_vnni"]  # AMD EPYC Zen 4: AVX512-BF16, no AMX
AVX512 = ["avx2", "avx512f", "avx512bw", "avx512_vnni"]  # Ice Lake, Cascade Lake: no bf16
AVX2 = ["avx2"]
INTEL, AMD = "GenuineIntel", "AuthenticAMD"


@pytest.mark.parametrize(
    "vendor,flags,cap,bf16",
    [
        # The three kinds `make bench` measured (docs/performance.md): bf16 where it was faster.
        (INTEL, AMX, None, True), (AMD, ZEN4, None, True), (INTEL, INTEL_NO_AMX, None, False),
        (AMD, AVX512, None, False), (AMD, AVX2, None, False), (INTEL, [], None, False),
        # An unmeasured vendor with AVX512-BF16: fp32, never the slow path.
        ("HygonGenuine", ZEN4, None, False), (None, ZEN4, None, False),
        # A user's cap on oneDNN is honoured: below its bf16 kernels, auto keeps fp32; AMX capped
        # away on Intel leaves the kind measured slower in bf16.
        (INTEL, AMX, "AVX2", False), (AMD, ZEN4, "avx512_core", False), (INTEL, AMX, "AVX512_CORE_VNNI", False),
        (AMD, ZEN4, "AVX512_CORE_BF16", True), (INTEL, AMX, "AVX512_CORE_BF16", False),
        (INTEL, AMX, "AVX512_CORE_AMX", True), (INTEL, AMX, "AVX10_1_512_AMX", True),
        (INTEL, AMX, "AVX10_1_512", False),
        (AMD, ZEN4, "ALL", True), (AMD, ZEN4, "", True), (AMD, AVX2, "ALL", False), (AMD, ZEN4, "NOT_AN_ISA", False),
    ],
)  # fmt: skip
def test_auto_precision_rule_on_each_kind_of_cpu_and_the_onednn_cap(vendor, flags, cap, bf16):
    from tlstudy.lib import cpu

    chosen, why = cpu.bf16_rule(vendor, flags, cap)
    assert chosen is bf16 and why.startswith("bf16" if bf16 else "fp32")


def test_the_older_name_of_the_onednn_cap_counts_and_the_new_one_wins():
    from tlstudy.lib import cpu

    assert cpu.onednn_cap({"DNNL_MAX_CPU_ISA": "AVX2"}) == "AVX2"
    assert cpu.onednn_cap({"DNNL_MAX_CPU_ISA": "AVX2", "ONEDNN_MAX_CPU_ISA": "ALL"}) == "ALL"
    assert cpu.onednn_cap({"ONEDNN_MAX_CPU_ISA": " "}) is None and cpu.onednn_cap({}) is None


@pytest.mark.parametrize("name", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
def test_a_cap_at_avx2_keeps_fp32_on_this_machine_whatever_it_is(monkeypatch, name):
    """Whatever this CPU offers, oneDNN capped at AVX2 has no bf16 kernels, under either name."""
    from tlstudy.lib import cpu

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv(name, "AVX2")
    cpu.auto_bf16.cache_clear()
    try:
        assert cpu.auto_bf16() == (False, "fp32: oneDNN is capped at AVX2, below its bf16 kernels")
        assert engine.speed_for(torch.device("cpu"), "auto", 64) == engine.Speed(torch.device("cpu"), False, False)
    finally:
        cpu.auto_bf16.cache_clear()


def test_amx_is_read_from_the_processors_flags():
    from tlstudy.lib import cpu

    assert cpu.amx_bf16() == ("amx_bf16" in cpu.cpuinfo()[1])


def test_augmented_training_draws_from_the_run_seed():
    b = augment.batched(augment.build([["RandomHorizontalFlip", {"p": 0.5}], ["RandomAffine", {"degrees": 30}]]))
    run = engine.Run("sgd", 0.01, "flip_rot")

    def go(transform, seed=0):
        model = models.build(7, "random", "random", seed=0)
        return engine.fit(model, "all", run, transform, tiny_split(), 2, 8, SETTINGS, seed, "t").history

    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(go(b)) == strip(go(b))
    assert strip(go(b)) != strip(go(None))


def test_parallel_stages_claim_different_gpus_and_wait_for_a_free_one(tmp_path):
    """The claiming logic of TLSTUDY_GPUS, on the CPU: each process holds its GPU's lock until it
    ends, even when killed; a process finding every GPU claimed waits and takes the first freed."""
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        "from tlstudy.training.engine import claim_gpu\n"
        "print('got', claim_gpu(['0', '1'], sys.argv[1], poll_s=0.05), flush=True)\n"
        "time.sleep(120)\n"
    )

    def start():
        return subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def line(proc) -> str:
        """The child's next line; a child that exited first fails the test instead of hanging it."""
        text = proc.stdout.readline()
        if not text:
            raise AssertionError(f"the child exited ({proc.wait()}) before printing what was expected")
        return text.strip()

    def claimed(proc):
        lines = [line(proc)]
        while not lines[-1].startswith("got"):
            lines.append(line(proc))
        return lines

    a, b = start(), start()
    try:
        got_a, got_b = claimed(a)[-1], claimed(b)[-1]
        assert {got_a, got_b} == {"got 0", "got 1"}
        c = start()
        assert "is claimed by another stage; waiting" in line(c)
        a.kill()
        a.wait()
        assert claimed(c)[-1] == got_a
        c.kill()
    finally:
        for p in (a, b):
            p.kill()


def test_a_gpu_lock_file_is_writable_by_every_user_whatever_the_umask(shared):
    """A stage of root's claims GPU 0 under umask 022 and ends; then a stage of another user
    claims the same GPU through the lock file root's left."""
    import stat

    import as_nobody

    from tlstudy.training.engine import claim_gpu

    quiet = lambda _m: None  # noqa: E731
    assert as_nobody.run(claim_gpu, ["0"], str(shared), 0.01, quiet, user=None) == {"returned": "'0'"}
    lock = shared / "tlstudy-gpu-0.lock"
    assert stat.S_IMODE(lock.stat().st_mode) & 0o666 == 0o666 and lock.stat().st_uid == 0
    assert as_nobody.run(claim_gpu, ["0"], str(shared), 0.01, quiet) == {"returned": "'0'"}


def test_a_gpu_lock_file_another_user_may_not_write_is_one_clear_error(shared):
    """A lock file that root's stage made with the old mode (0644): another user's stage stops
    with one line naming it and what to do, instead of a traceback."""
    import as_nobody

    from tlstudy.training.engine import claim_gpu

    lock = shared / "tlstudy-gpu-1.lock"
    lock.touch(mode=0o644)
    lock.chmod(0o644)
    said = as_nobody.run(claim_gpu, ["1"], str(shared), 0.01, lambda _m: None)
    assert said["raised"] == "LockError" and said["study_error"], said
    message = said["message"]
    assert "\n" not in message and message.startswith(f"lock file {lock}: permission denied: it is uid 0's"), message
    assert f"`chmod 666 {lock}`" in message and "TLSTUDY_LOCK_DIR" in message, message
