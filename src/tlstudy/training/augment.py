"""Augmentation variants declared in params.yaml, applied to a whole batch at once on its device.

A variant's transform objects are built by torchvision (transforms.build), and
`Batched` applies them to a uint8 batch with one random draw per image, with the same
distributions and pixel arithmetic as the torchvision kernels: flip/invert/grayscale with
probability p, ColorJitter's factors and its random order of the four adjustments, RandomAffine's
angle/translate/scale/shear, GaussianBlur's sigma. Transforms without a batched form here
(autocontrast, equalize, posterize, solarize, sharpness, rotation with expand) run per image
through torchvision itself. Draws come from a torch.Generator on the CPU, so a seeded run gives
the same augmentations on any device.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as nnf
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

# Private torchvision helpers (pinned version): using them keeps the HSV round trip, the fill
# lookup and the inverse affine matrix exactly those of the per-image kernels.
from torchvision.transforms.v2._utils import _get_fill
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv
from torchvision.transforms.v2.functional._geometry import _check_interpolation, _get_inverse_affine_matrix

# Build and family of a variant live with the transforms they name (params validation needs them
# without the kernels); train, pretrain and bench reach them here too.
from tlstudy.training.transforms import ALLOWED, FAMILIES, GEOMETRIC, build, family  # noqa: F401


class Batched:
    """A variant's transforms applied to a uint8 N×C×H×W batch, one random draw per image."""

    def __init__(self, compose: v2.Compose):
        self.ops = [op_for(t) for t in compose.transforms]

    def __call__(self, images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for op in self.ops:
            images = op(images, gen)
        return images


def batched(compose: v2.Compose | None) -> Batched | None:
    return None if compose is None else Batched(compose)


# Random draws: on the CPU generator, then moved to the images' device.


def uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.empty(n, dtype=torch.float64).uniform_(low, high, generator=gen)


def coin(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """Per image: whether a random transform with probability p applies (torchvision: rand < p)."""
    return torch.rand(n, generator=gen) < p


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.to(a.device).view(-1, 1, 1, 1), a, b)


def _col(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-image scalars as an N×1×1×1 float32 tensor on the images' device."""
    return values.to(device=like.device, dtype=torch.float32).view(-1, 1, 1, 1)


# Pixel kernels with one parameter per image; each mirrors the torchvision kernel named.


def _luminance(x: torch.Tensor) -> torch.Tensor:
    """torchvision's float grayscale of uint8 RGB: N×1×H×W."""
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """F.rgb_to_grayscale(x, 3) for uint8 RGB."""
    return _luminance(x).to(x.dtype).expand(x.shape).contiguous()


def _gray_float(x: torch.Tensor) -> torch.Tensor:
    """The grayscale that adjust_contrast / adjust_saturation blend with (floored, float)."""
    return _luminance(x).floor_()


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """F._blend with a per-image ratio: ratio·x + (1 − ratio)·other, clamped, truncated to uint8."""
    r = _col(ratio, x)
    keep = _col(1.0 - ratio, x)  # 1 − ratio in float64 first, as torchvision's alpha is
    # addcmul fuses the multiply-add as torchvision's add_(other, alpha) does, so pixels round alike.
    return torch.addcmul(x.mul(r), other, keep).clamp_(0, 255).to(x.dtype)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return x.mul(_col(factor, x)).clamp_(0, 255).to(x.dtype)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = _gray_float(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, factor)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, _gray_float(x), factor)


def hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    hsv = _rgb_to_hsv(F.to_dtype(x, torch.float32, scale=True))
    h, s, v = hsv.unbind(dim=-3)
    h = h.add(_col(shift, x).view(-1, 1, 1)).remainder_(1.0)
    return F.to_dtype(_hsv_to_rgb(torch.stack((h, s, v), dim=-3)), x.dtype, scale=True)


def affine(x: torch.Tensor, matrices: list[list[float]], interpolation: str, fill) -> torch.Tensor:
    """F.affine / F.rotate (no expand) with one inverse affine matrix per image."""
    n, c, h, w = x.shape
    theta = torch.tensor(matrices, dtype=torch.float32, device=x.device).view(n, 2, 3)
    # torchvision's _affine_grid: pixel-centred base grid, theta applied, then normalised.
    base = torch.empty(1, h, w, 3, dtype=torch.float32, device=x.device)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=x.device))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=x.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2).div_(torch.tensor([0.5 * w, 0.5 * h], device=x.device))
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(scaled).view(n, h, w, 2)
    img = x.float()
    if fill is not None:
        img = torch.cat((img, torch.ones(n, 1, h, w, device=x.device)), dim=1)
    img = nnf.grid_sample(img, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    if fill is not None:
        img, mask = torch.tensor_split(img, indices=(-1,), dim=-3)
        mask = mask.expand_as(img)
        fills = fill if isinstance(fill, (tuple, list)) else [float(fill)]
        fill_img = torch.tensor(fills, dtype=img.dtype, device=img.device).view(1, -1, 1, 1)
        if interpolation == "nearest":
            img = torch.where(mask < 0.5, fill_img.expand_as(img), img)
        else:
            img = img.sub_(fill_img).mul_(mask).add_(fill_img)
    return img.round_().to(x.dtype)


def gaussian_kernels(size: int, sigma: torch.Tensor) -> torch.Tensor:
    """F._get_gaussian_kernel1d for each sigma: N×size."""
    lim = (size - 1) / (2.0 * math.sqrt(2.0))
    pos = torch.linspace(-lim, lim, steps=size)
    return torch.softmax(pos.view(1, -1).div(sigma.float().view(-1, 1)).pow(2).neg(), dim=1)


def gaussian_blur(x: torch.Tensor, size_xy: tuple[int, int], sigma: torch.Tensor) -> torch.Tensor:
    """F.gaussian_blur with one sigma per image, as two 1-D passes (the 2-D kernel is their
    outer product; the sum order differs, so a pixel may round one level apart)."""
    kx, ky = size_xy
    n, c, h, w = x.shape
    out = x.float().reshape(1, n * c, h, w)
    for k, dim in ((kx, -1), (ky, -2)):
        if k == 1:
            continue
        weights = gaussian_kernels(k, sigma).to(x.device).repeat_interleave(c, dim=0)
        shape = (n * c, 1, 1, k) if dim == -1 else (n * c, 1, k, 1)
        pad = (k // 2, k // 2, 0, 0) if dim == -1 else (0, 0, k // 2, k // 2)
        out = nnf.conv2d(nnf.pad(out, pad, mode="reflect"), weights.view(shape), groups=n * c)
    return out.reshape(n, c, h, w).round_().to(x.dtype)


# One op per torchvision transform object: `draw` takes every image's random parameters (as
# the transform's make_params would, once per image), `apply` is the pixel kernel.


class Op:
    def __init__(self, t: v2.Transform):
        self.t = t

    def draw(self, n: int, h: int, w: int, gen: torch.Generator) -> dict:
        return {}

    def apply(self, x: torch.Tensor, p: dict) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.draw(len(x), x.shape[-2], x.shape[-1], gen))


class PerImage(Op):
    """torchvision itself, image by image; its draws come from torch's global generator."""

    def apply(self, x, p):
        return torch.stack([self.t(img) for img in x])


class Coin(Op):
    """RandomHorizontalFlip, RandomVerticalFlip, RandomInvert, RandomGrayscale: each image
    transformed with probability p (torchvision: when rand < p)."""

    KERNELS = {
        "RandomHorizontalFlip": lambda x: x.flip(-1),
        "RandomVerticalFlip": lambda x: x.flip(-2),
        "RandomInvert": lambda x: x.bitwise_not(),
        "RandomGrayscale": grayscale,
    }

    def draw(self, n, h, w, gen):
        return {"apply": coin(n, self.t.p, gen)}

    def apply(self, x, p):
        return _where(p["apply"], self.KERNELS[type(self.t).__name__](x), x)


class Grayscale(Op):
    def apply(self, x, p):
        return grayscale(x)


class ColorJitter(Op):
    """Brightness, contrast, saturation and hue factors, applied in a random order per image."""

    KERNELS = (brightness, contrast, saturation, hue)

    def __init__(self, t: v2.ColorJitter):
        super().__init__(t)
        self.ranges = {i: r for i, r in enumerate((t.brightness, t.contrast, t.saturation, t.hue)) if r is not None}

    def draw(self, n, h, w, gen):
        # A uniformly random order of the four per image, as torch.randperm(4) draws it.
        p = {"order": torch.rand(n, 4, generator=gen).argsort(dim=1)}
        p.update({i: uniform(n, lo, hi, gen) for i, (lo, hi) in self.ranges.items()})
        return p

    def apply(self, x, p):
        if len(self.ranges) == 1:  # one adjustment: its place in the order does not matter
            (i,) = self.ranges
            return self.KERNELS[i](x, p[i])
        x = x.clone()
        for position in range(4):
            for i in self.ranges:
                sel = (p["order"][:, position] == i).nonzero().flatten()
                if len(sel):
                    on_dev = sel.to(x.device)
                    x[on_dev] = self.KERNELS[i](x[on_dev], p[i][sel])
        return x


def _center(t, h: int, w: int) -> list[float]:
    return [0.0, 0.0] if t.center is None else [c - s * 0.5 for c, s in zip(t.center, [w, h])]


def _fill(t) -> float | list[float] | None:
    fill = _get_fill(t._fill, torch.Tensor)
    return fill if fill is None or isinstance(fill, (int, float)) else [float(f) for f in fill]


def _mode(t) -> str:
    return _check_interpolation(t.interpolation).value


class RandomAffine(Op):
    def draw(self, n, h, w, gen):
        t = self.t
        p = {"angle": uniform(n, t.degrees[0], t.degrees[1], gen).tolist()}
        if t.translate is not None:
            dx, dy = float(t.translate[0] * w), float(t.translate[1] * h)
            tx = [int(round(v)) for v in uniform(n, -dx, dx, gen).tolist()]
            ty = [int(round(v)) for v in uniform(n, -dy, dy, gen).tolist()]
            p["translate"] = list(zip(tx, ty))
        else:
            p["translate"] = [(0, 0)] * n
        p["scale"] = uniform(n, t.scale[0], t.scale[1], gen).tolist() if t.scale is not None else [1.0] * n
        shear = t.shear or []
        sx = uniform(n, shear[0], shear[1], gen).tolist() if len(shear) >= 2 else [0.0] * n
        sy = uniform(n, shear[2], shear[3], gen).tolist() if len(shear) == 4 else [0.0] * n
        p["shear"] = list(zip(sx, sy))
        return p

    def apply(self, x, p):
        center = _center(self.t, *x.shape[-2:])
        mats = [
            _get_inverse_affine_matrix(center, a, [float(v) for v in tr], sc, list(sh))
            for a, tr, sc, sh in zip(p["angle"], p["translate"], p["scale"], p["shear"])
        ]
        return affine(x, mats, _mode(self.t), _fill(self.t))


class RandomRotation(Op):
    def draw(self, n, h, w, gen):
        return {"angle": uniform(n, self.t.degrees[0], self.t.degrees[1], gen).tolist()}

    def apply(self, x, p):
        center = _center(self.t, *x.shape[-2:])
        # F.rotate turns by −angle in F.affine's convention, after reducing the angle mod 360.
        mats = [_get_inverse_affine_matrix(center, -(a % 360), [0.0, 0.0], 1.0, [0.0, 0.0]) for a in p["angle"]]
        return affine(x, mats, _mode(self.t), _fill(self.t))


class GaussianBlur(Op):
    def draw(self, n, h, w, gen):
        return {"sigma": uniform(n, self.t.sigma[0], self.t.sigma[1], gen)}

    def apply(self, x, p):
        kx, ky = self.t.kernel_size[0], self.t.kernel_size[1]
        return x if kx == ky == 1 else gaussian_blur(x, (kx, ky), p["sigma"])


def op_for(t: v2.Transform) -> Op:
    """The batched op for a transform; PerImage where there is none (or it would differ)."""
    kind = type(t).__name__
    if kind in Coin.KERNELS:
        return Coin(t)
    if kind == "Grayscale" and t.num_output_channels == 3:
        return Grayscale(t)
    if kind == "ColorJitter":
        return ColorJitter(t)
    if kind in ("RandomAffine", "RandomRotation") and _mode(t) in ("nearest", "bilinear"):
        if kind == "RandomAffine":
            return RandomAffine(t)
        if not t.expand:
            return RandomRotation(t)
    if kind == "GaussianBlur":
        return GaussianBlur(t)
    return PerImage(t)
