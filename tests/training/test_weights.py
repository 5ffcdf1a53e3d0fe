"""Pretrained weights through torchvision's own loader, served from 127.0.0.1: downloaded and
hash-checked, found in the cache with the server gone, and every failure as one clear message."""

import hashlib
import io
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import PROJECT
from http_fixture import Server
from torchvision.models import ResNet18_Weights, SqueezeNet1_0_Weights, Weights, resnet18

from tlstudy.training import models, weights


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture(scope="module")
def state_bytes():
    buf = io.BytesIO()
    torch.save(resnet18(weights=None).state_dict(), buf)  # a state dict made here, 1000-way head
    return buf.getvalue()


def named(blob: bytes) -> str:
    """A file name carrying its own hash prefix, as torchvision names its weights."""
    return f"resnet18-{hashlib.sha256(blob).hexdigest()[:8]}.pth"


def damaged(blob: bytes) -> bytes:
    i = len(blob) // 2
    return blob[:i] + bytes([blob[i] ^ 0xFF]) + blob[i + 1 :]


def entry(url: str) -> Weights:
    return Weights(url=url, transforms=None, meta={})


def test_downloaded_once_then_loaded_from_the_cache_with_the_server_gone(torch_home, state_bytes):
    name = named(state_bytes)
    with Server() as server:
        server.files[f"/models/{name}"] = state_bytes
        w = entry(server.url(f"/models/{name}"))
        first = weights.state_dict(w, "test weights", "init")
        assert len(server.requests) == 1
    assert (torch_home / name).read_bytes() == state_bytes
    again = weights.state_dict(w, "test weights", "init")  # no server any more
    expected = torch.load(io.BytesIO(state_bytes), weights_only=True)
    for state in (first, again):
        assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in expected)
    # And a model built from it carries those weights, with a new head.
    model = models.build(7, "random", "random", 0)
    model.load_state_dict({k: v for k, v in again.items() if not k.startswith("fc.")}, strict=False)
    assert torch.equal(model.conv1.weight, expected["conv1.weight"])


def test_a_placed_file_whose_bytes_do_not_match_its_name_is_named_before_it_is_used(torch_home, capsys):
    other = io.BytesIO()
    torch.save(resnet18(weights=None).state_dict() | {"extra": torch.zeros(1)}, other)
    name = "resnet18-0123abcd.pth"  # a name promising other bytes
    torch_home.mkdir(parents=True)
    (torch_home / name).write_bytes(other.getvalue())
    state = weights.state_dict(entry(f"http://127.0.0.1:9/models/{name}"), "test weights", "init")
    assert "extra" in state  # loaded as it is, with no network
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {torch_home / name}: these test weights are not torchvision's file: ")
    assert (
        f"their sha256 is {hashlib.sha256(other.getvalue()).hexdigest()}, their name says it starts with 0123abcd"
        in err
    )


def test_a_placed_file_that_is_no_state_dict_is_one_message_with_the_ways_out(torch_home, state_bytes):
    name = named(state_bytes)
    torch_home.mkdir(parents=True)
    (torch_home / name).write_bytes(state_bytes[: len(state_bytes) // 2])  # a download cut short, copied by hand
    with pytest.raises(weights.WeightsError) as err:
        weights.state_dict(entry(f"http://127.0.0.1:9/models/{name}"), "test weights", "init")
    text = str(err.value)
    assert text.startswith(f"could not load the test weights from {torch_home / name}: ")
    assert f"put the file {name} in {torch_home}" in text and "`init: <path>`" in text
    assert "`imagenet_weights: random`" in text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "case, reason",
    [
        ("dead", r"no connection \(\[Errno 111\] Connection refused\)"),
        ("404", r"HTTP 404 Not Found"),
        ("corrupt", r"the download is corrupt: invalid hash value \(expected \"[0-9a-f]{8}\", got \"[0-9a-f]{64}\"\)"),
    ],
)
def test_a_failed_download_is_one_message_with_the_ways_out(torch_home, state_bytes, case, reason):
    name = named(state_bytes)
    with Server() as server:
        if case == "corrupt":  # the bytes arrive, but not the ones the name promises
            server.files[f"/models/{name}"] = damaged(state_bytes)
        url = f"http://127.0.0.1:{free_port()}/models/{name}" if case == "dead" else server.url(f"/models/{name}")
        with pytest.raises(weights.WeightsError) as err:
            weights.state_dict(entry(url), "ResNet-18 test weights", "init")
    text = str(err.value)
    assert text.startswith(f"could not load the ResNet-18 test weights from {url} (to {torch_home / name}): ")
    assert __import__("re").search(reason, text), text
    assert f"put the file {name} in {torch_home}" in text and "(its sha256 must start with" in text
    assert not torch_home.exists() or not list(torch_home.iterdir())  # nothing half-written is kept


@pytest.mark.parametrize(
    "stage, entry_, key",
    [
        ("inspect", SqueezeNet1_0_Weights.IMAGENET1K_V1, "inspect.weights"),
        ("train", ResNet18_Weights.IMAGENET1K_V1, "init"),
    ],
)
def test_a_stage_stops_on_a_cached_file_that_is_no_state_dict_with_one_message_and_no_traceback(
    tmp_path, torch_home, params, stage, entry_, key
):
    """The real weights' names, a file placed by hand that is not them: the stage says so and
    stops, and never tries the network (these machines have none)."""
    name = entry_.url.rsplit("/", 1)[1]
    torch_home.mkdir(parents=True)
    (torch_home / name).write_bytes(b"not the weights")
    params.update(imagenet_weights="imagenet")
    params["inspect"] = {"weights": "imagenet", "image": str(PROJECT / "assets/samoyed.jpg")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    if stage == "train":
        subprocess.run([sys.executable, "-m", "tlstudy", "fetch"], cwd=tmp_path, check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "tlstudy", "stats"], cwd=tmp_path, check=True, capture_output=True)
    args = ["inspect"] if stage == "inspect" else ["train", "--part", "finetune"]
    r = subprocess.run([sys.executable, "-m", "tlstudy", *args], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith(f"warning: {torch_home / name}: these ") and "are not torchvision's file" in r.stderr
    assert "\nerror: could not load the " in r.stderr and f"from {torch_home / name}: " in r.stderr
    assert f"`{key}: <path>`" in r.stderr and r.stderr.count("error:") == 1
