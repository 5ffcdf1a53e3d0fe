"""The batched augmentations against torchvision's own per-image transforms: the same pixels
for the same parameters, and the same distributions of the random parameters."""

import itertools
import math

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from tlstudy.data import images as data
from tlstudy.data import synthetic
from tlstudy.training import augment


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> torch.Tensor:
    """24 real JPEGs (the demo's shapes), decoded, cropped to 40×48 so height ≠ width."""
    root = synthetic.generate(tmp_path_factory.mktemp("jpegs"), per_class=4, size=48, seed=3)
    paths = sorted(root.glob("*/*.jpg"))[:24]
    return torch.stack([data.decode(p, 48) for p in paths])[..., 4:44, :].contiguous()


def op(spec):
    return augment.op_for(augment.build([spec]).transforms[0])


def reference(o: augment.Op, img: torch.Tensor, p: dict, i: int) -> torch.Tensor:
    """torchvision's per-image kernel for image i with the parameters the batched op drew."""
    t, kind = o.t, type(o.t).__name__
    if kind == "RandomHorizontalFlip":
        return F.horizontal_flip(img) if p["apply"][i] else img
    if kind == "RandomVerticalFlip":
        return F.vertical_flip(img) if p["apply"][i] else img
    if kind == "RandomInvert":
        return F.invert(img) if p["apply"][i] else img
    if kind == "RandomGrayscale":
        return F.rgb_to_grayscale(img, 3) if p["apply"][i] else img
    if kind == "Grayscale":
        return F.rgb_to_grayscale(img, 3)
    if kind == "ColorJitter":
        fns = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)
        for k in p["order"][i].tolist():
            if k in p:
                img = fns[k](img, float(p[k][i]))
        return img
    if kind == "RandomAffine":
        return F.affine(
            img, angle=p["angle"][i], translate=list(p["translate"][i]), scale=p["scale"][i],
            shear=list(p["shear"][i]), interpolation=t.interpolation, fill=augment._fill(t), center=t.center,
        )  # fmt: skip
    if kind == "RandomRotation":
        return F.rotate(img, p["angle"][i], interpolation=t.interpolation, fill=augment._fill(t), center=t.center)
    if kind == "GaussianBlur":
        s = float(p["sigma"][i])
        return F.gaussian_blur(img, list(t.kernel_size), [s, s])
    raise AssertionError(kind)


def run_both(o: augment.Op, x: torch.Tensor, seed: int = 0):
    p = o.draw(len(x), x.shape[-2], x.shape[-1], torch.Generator().manual_seed(seed))
    ours = o.apply(x, p)
    ref = torch.stack([reference(o, img, p, i) for i, img in enumerate(x)])
    return ours, ref


EXACT = [
    ["RandomHorizontalFlip", {"p": 0.5}],
    ["RandomVerticalFlip", {"p": 0.5}],
    ["RandomInvert", {"p": 0.5}],
    ["RandomGrayscale", {"p": 0.5}],
    ["Grayscale", {"num_output_channels": 3}],
    ["ColorJitter", {"brightness": 0.4}],
    ["ColorJitter", {"contrast": 0.4}],
    ["ColorJitter", {"saturation": 0.4}],
    ["ColorJitter", {"hue": 0.3}],
    ["ColorJitter", {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.1}],
    ["RandomAffine", {"degrees": 60}],
    ["RandomAffine", {"degrees": 20, "translate": [0.1, 0.2], "scale": [0.8, 1.2], "shear": [-10, 10, -5, 5]}],
    ["RandomAffine", {"degrees": 30, "interpolation": "bilinear", "fill": [10, 200, 30], "center": [5, 9]}],
    ["RandomRotation", {"degrees": 45}],
    ["RandomRotation", {"degrees": [-170, 170], "interpolation": "bilinear", "fill": 128}],
]


@pytest.mark.parametrize("spec", EXACT, ids=lambda s: f"{s[0]}{sorted(s[1])}")
def test_batched_kernels_give_torchvisions_pixels_exactly(images, spec):
    o = op(spec)
    assert not isinstance(o, augment.PerImage)
    ours, ref = run_both(o, images)
    assert ours.dtype == torch.uint8 and ours.shape == images.shape
    assert torch.equal(ours, ref)
    assert not torch.equal(ours, images)  # something was transformed


@pytest.mark.parametrize("size", [1, 3, 9, 27])
def test_batched_gaussian_blur_is_within_one_level_of_torchvision(images, size):
    # Two 1-D passes sum in another order than torchvision's 2-D kernel: a pixel can round apart.
    ours, ref = run_both(op(["GaussianBlur", {"kernel_size": size}]), images)
    diff = (ours.int() - ref.int()).abs()
    assert diff.max() <= 1
    assert (diff == 0).float().mean() >= 0.999
    assert torch.equal(ours, images) == (size == 1)


def test_every_variant_in_params_matches_torchvision_step_by_step(images, study_params):
    for name, spec in study_params["augmentations"].items():
        compose = augment.build(spec, where=name)
        if compose is None:
            continue
        x = images
        for i, t in enumerate(compose.transforms):
            o = augment.op_for(t)
            assert not isinstance(o, augment.PerImage), f"{name}: {type(t).__name__} runs per image"
            ours, ref = run_both(o, x, seed=i)
            diff = (ours.int() - ref.int()).abs()
            assert diff.max() <= (1 if isinstance(o, augment.GaussianBlur) else 0), name
            x = ours


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Two-sample Kolmogorov–Smirnov statistic: the largest gap between the empirical CDFs."""
    a, b = a.double().sort().values, b.double().sort().values
    grid = torch.cat([a, b])
    fa = torch.searchsorted(a, grid, right=True) / len(a)
    fb = torch.searchsorted(b, grid, right=True) / len(b)
    return (fa - fb).abs().max().item()


def torchvision_draws(t, n: int, h: int = 40, w: int = 48) -> list[dict]:
    torch.manual_seed(1)
    return [t.make_params([torch.zeros(3, h, w)]) for _ in range(n)]


N_OURS, N_TV = 20000, 3000
# KS critical value at significance 0.001 for these sample sizes: 1.95·sqrt((n+m)/(n·m)).
KS_LIMIT = 1.95 * math.sqrt((N_OURS + N_TV) / (N_OURS * N_TV))


def test_affine_draws_follow_torchvisions_distributions():
    spec = ["RandomAffine", {"degrees": 20, "translate": [0.1, 0.2], "scale": [0.8, 1.2], "shear": [-10, 10, -5, 5]}]
    o = op(spec)
    ours = o.draw(N_OURS, 40, 48, torch.Generator().manual_seed(0))
    tv = torchvision_draws(o.t, N_TV)
    columns = {
        "angle": (torch.tensor(ours["angle"]), torch.tensor([d["angle"] for d in tv])),
        "tx": (torch.tensor([v[0] for v in ours["translate"]]), torch.tensor([d["translate"][0] for d in tv])),
        "ty": (torch.tensor([v[1] for v in ours["translate"]]), torch.tensor([d["translate"][1] for d in tv])),
        "scale": (torch.tensor(ours["scale"]), torch.tensor([d["scale"] for d in tv])),
        "shear_x": (torch.tensor([v[0] for v in ours["shear"]]), torch.tensor([d["shear"][0] for d in tv])),
        "shear_y": (torch.tensor([v[1] for v in ours["shear"]]), torch.tensor([d["shear"][1] for d in tv])),
    }
    for name, (a, b) in columns.items():
        assert ks_distance(a, b) < KS_LIMIT, name
    angle, tx, ty = columns["angle"][0], columns["tx"][0], columns["ty"][0]
    assert -20 <= angle.min() < -19.9 and 19.9 < angle.max() <= 20
    assert set(tx.tolist()) == set(range(-5, 6)) and set(ty.tolist()) == set(range(-8, 9))


def test_rotation_and_blur_draws_follow_torchvisions_distributions():
    rot = op(["RandomRotation", {"degrees": 45}])
    ours = torch.tensor(rot.draw(N_OURS, 40, 48, torch.Generator().manual_seed(0))["angle"])
    assert ks_distance(ours, torch.tensor([d["angle"] for d in torchvision_draws(rot.t, N_TV)])) < KS_LIMIT
    blur = op(["GaussianBlur", {"kernel_size": 9, "sigma": [0.5, 3.0]}])
    ours = blur.draw(N_OURS, 40, 48, torch.Generator().manual_seed(0))["sigma"]
    assert ks_distance(ours, torch.tensor([d["sigma"][0] for d in torchvision_draws(blur.t, N_TV)])) < KS_LIMIT
    assert 0.5 <= ours.min() < 0.51 and 2.99 < ours.max() <= 3.0


def test_color_jitter_draws_factors_like_torchvision_and_orders_uniformly():
    o = op(["ColorJitter", {"brightness": 0.4, "contrast": [0.5, 1.5], "saturation": 0.05, "hue": 0.1}])
    ours = o.draw(N_OURS, 40, 48, torch.Generator().manual_seed(0))
    tv = torchvision_draws(o.t, N_TV)
    for i, key in enumerate(["brightness_factor", "contrast_factor", "saturation_factor", "hue_factor"]):
        assert ks_distance(ours[i], torch.tensor([d[key] for d in tv])) < KS_LIMIT, key
    # All 24 orders of the four adjustments, each about 1/24 of the time (±5 standard deviations).
    counts = {perm: 0 for perm in itertools.permutations(range(4))}
    for row in ours["order"].tolist():
        counts[tuple(row)] += 1
    expected, sd = N_OURS / 24, math.sqrt(N_OURS * (1 / 24) * (23 / 24))
    assert all(abs(c - expected) < 5 * sd for c in counts.values())


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_flip_probability_is_p(images, p):
    # Measured on the pixels: the fraction of a large batch that comes out mirrored.
    o = op(["RandomHorizontalFlip", {"p": p}])
    x = images[:1].expand(10000, -1, -1, -1)
    out = o(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1).float().mean().item()
    assert abs(flipped - p) < 5 * math.sqrt(p * (1 - p) / 10000)


def test_transforms_without_a_batched_form_run_through_torchvision_per_image(images):
    o = op(["RandomPosterize", {"bits": 3, "p": 0.5}])
    assert isinstance(o, augment.PerImage)
    torch.manual_seed(5)
    ours = o(images, torch.Generator())
    torch.manual_seed(5)
    assert torch.equal(ours, torch.stack([o.t(img) for img in images]))


def test_a_seeded_generator_gives_the_same_batch_and_another_seed_another(images):
    b = augment.batched(augment.build([["RandomHorizontalFlip", {"p": 0.5}], ["RandomAffine", {"degrees": 30}]]))
    first = b(images, torch.Generator().manual_seed(7))
    assert torch.equal(first, b(images, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, b(images, torch.Generator().manual_seed(8)))
    assert augment.batched(None) is None
