import json

import pytest
import torch
from conftest import PROJECT
from PIL import Image
from torchvision.models import squeezenet1_0

from tlstudy.stages import inspect_model
from tlstudy.training.models import WeightsError

PHOTO = PROJECT / "assets" / "samoyed.jpg"


def test_the_shipped_photo_is_the_samoyed():
    import hashlib

    assert (
        hashlib.sha256(PHOTO.read_bytes()).hexdigest()
        == "f3f87bb8ab3c26c7ecfd3ac60421d7f32b0503d1d6c5baf8bac42ed93d86351a"
    )


def test_a_state_dict_built_so_that_one_class_wins_gives_that_top1(tmp_path):
    model = squeezenet1_0(weights=None)
    final = model.classifier[1]  # 1×1 conv to 1000 classes, then ReLU and average pooling
    with torch.no_grad():
        final.weight.zero_()
        final.bias.zero_()
        final.bias[258] = 5.0  # Samoyed, by the weights' metadata
        final.bias[100] = 1.0
    path = tmp_path / "squeezenet.pt"
    torch.save(model.state_dict(), path)
    top, _, _ = inspect_model.classify(inspect_model.build(str(path), seed=0), inspect_model.load_photo(PHOTO))
    assert top[0][0] == "Samoyed" and top[1][0] == "black swan"
    assert top[0][1] == pytest.approx(torch.tensor([5.0] + [1.0] + [0.0] * 998).softmax(0)[0].item(), rel=1e-5)


def test_random_weights_give_probabilities_and_figures_of_the_right_shapes(in_tmp, params):
    params["inspect"] = {"weights": "random", "image": str(PHOTO)}
    result = inspect_model.run(params)
    probs = list(result["top5"].values())
    assert len(probs) == 5 and probs == sorted(probs, reverse=True)
    model = inspect_model.build("random", 0)
    full = model(inspect_model.WEIGHTS.transforms()(inspect_model.load_photo(PHOTO)).unsqueeze(0)).softmax(1)
    assert full.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert json.loads((in_tmp / "metrics/inspect.json").read_text()) == result
    _, before, after = inspect_model.classify(model, inspect_model.load_photo(PHOTO))
    assert before.shape == after.shape == (96, 109, 109)
    assert torch.equal(after, before.clamp_min(0)) and (before < 0).any()
    grid = inspect_model.kernel_grid(model.features[0].weight.detach())
    assert grid.shape == (3, 8 * 8 + 1, 12 * 8 + 1) and grid.min() >= 0 and grid.max() <= 1
    for name in ("photo", "kernels", "features_before_relu", "features_after_relu"):
        png = in_tmp / "plots/inspect" / f"{name}.png"
        with Image.open(png) as im:
            assert im.width > 200 and im.height > 150
        assert png.stat().st_size > 10_000


def test_a_state_dict_of_another_model_is_rejected_by_name(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(WeightsError, match="resnet.pt: not a SqueezeNet 1.0 state dict"):
        inspect_model.build(str(path), 0)


def test_the_kernel_grid_scales_each_kernel_to_its_own_range_with_white_gaps():
    weight = torch.stack([torch.full((3, 2, 2), -5.0), torch.full((3, 2, 2), 7.0)])
    weight[0, 0, 0, 0], weight[1, 2, 1, 1] = 5.0, 9.0  # each kernel's own min and max
    grid = inspect_model.kernel_grid(weight, cols=2)
    assert grid.shape == (3, 1 + 2 + 1, 1 + 2 + 1 + 2 + 1)
    first, second = grid[:, 1:3, 1:3], grid[:, 1:3, 4:6]
    assert first.max() == 1 and first.min() == 0 and first[0, 0, 0] == 1
    assert second.max() == 1 and second[2, 1, 1] == 1 and second.min() == 0
    assert (grid[:, 0, :] == 1).all() and (grid[:, :, 3] == 1).all()  # the gaps
