import pytest
import torch
from torchvision.models import resnet18

from tlstudy import params as P
from tlstudy.training import models


def test_construction_depends_only_on_init_and_seed():
    a, b, c = (models.build(7, "random", "imagenet", seed=s) for s in (0, 0, 1))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert a.fc.out_features == 7


def test_imagenet_offline_stand_in_is_a_seeded_random_backbone():
    stand_in = models.build(7, "imagenet", "random", seed=0)
    assert torch.equal(stand_in.conv1.weight, models.build(7, "random", "random", seed=0).conv1.weight)
    assert P.describe_init("imagenet", "random").startswith("random (stand-in for imagenet")


def test_init_from_a_state_dict_file_loads_the_backbone_and_a_new_head(tmp_path):
    source = resnet18(num_classes=1000)
    with torch.no_grad():
        source.conv1.weight.fill_(0.125)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    model = models.build(7, str(path), "imagenet", seed=0)
    assert torch.all(model.conv1.weight == 0.125)
    assert torch.equal(model.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)
    assert model.fc.out_features == 7


def test_bad_weight_files_name_the_file(tmp_path):
    with pytest.raises(models.WeightsError, match="nope.pt.*not random, imagenet, or an existing"):
        models.build(7, str(tmp_path / "nope.pt"), "imagenet", seed=0)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    with pytest.raises(models.WeightsError, match="corrupt.pt: cannot be read"):
        models.build(7, str(corrupt), "imagenet", seed=0)
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), other)
    with pytest.raises(models.WeightsError, match="not a ResNet-18 state dict"):
        models.build(7, str(other), "imagenet", seed=0)


def test_head_parts_keep_only_the_head():
    model = models.build(7, "random", "random", seed=0)
    assert set(models.kept_state(model, "head")) == {"weight", "bias"}
    assert set(models.kept_state(model, "all")) == set(model.state_dict())


def test_a_tensor_of_another_shape_is_named(tmp_path):
    state = models.build(7, "random", "random", seed=0).state_dict()
    state["layer2.0.conv1.weight"] = torch.zeros(128, 64, 5, 5)
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    with pytest.raises(models.WeightsError, match=r"not a ResNet-18 state dict \(size mismatch for layer2.0.conv1"):
        models.build(7, str(path), "imagenet", seed=0)
