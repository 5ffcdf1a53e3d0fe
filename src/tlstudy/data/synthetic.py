"""The embedded demo data: seven classes of coloured shapes on light backgrounds, as JPEGs.

Each class has its own shape and hue; position, size, rotation, shade and background vary per
image, so a model has something to learn but cannot read the class off one pixel. Everything
comes from the seed, and the files are real JPEGs so the demo exercises the same decoding path
as PACS.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

CLASSES = ("circle", "square", "triangle", "cross", "ring", "diamond", "bars")
HUES = (
    (200, 40, 40),
    (40, 90, 200),
    (40, 150, 60),
    (150, 60, 170),
    (220, 140, 20),
    (20, 150, 160),
    (90, 90, 90),
)


def _polygon(cx, cy, r, n, angle):
    return [
        (cx + r * math.cos(angle + 2 * math.pi * k / n), cy + r * math.sin(angle + 2 * math.pi * k / n))
        for k in range(n)
    ]


def _draw(draw: ImageDraw.ImageDraw, cls: str, cx, cy, r, angle, fill, size):
    w = max(2, int(r / 3))
    if cls == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif cls == "square":
        draw.polygon(_polygon(cx, cy, r * 1.2, 4, angle + math.pi / 4), fill=fill)
    elif cls == "triangle":
        draw.polygon(_polygon(cx, cy, r * 1.3, 3, angle), fill=fill)
    elif cls == "diamond":
        pts = _polygon(cx, cy, r * 1.3, 4, angle)
        pts = [(cx + (x - cx) * 0.6, y) for x, y in pts]
        draw.polygon(pts, fill=fill)
    elif cls == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=w)
    elif cls == "cross":
        for a in (angle, angle + math.pi / 2):
            dx, dy = r * math.cos(a), r * math.sin(a)
            draw.line([cx - dx, cy - dy, cx + dx, cy + dy], fill=fill, width=w)
    elif cls == "bars":
        for k in (-1, 0, 1):
            off = k * r * 0.7
            dx, dy = r * math.cos(angle), r * math.sin(angle)
            ox, oy = -off * math.sin(angle), off * math.cos(angle)
            draw.line([cx - dx + ox, cy - dy + oy, cx + dx + ox, cy + dy + oy], fill=fill, width=max(2, w // 2))


def render(cls_index: int, rng: np.random.Generator, size: int) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(215, 256, size=3))
    img = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.18, 0.32) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    shade = rng.uniform(0.75, 1.15)
    fill = tuple(int(np.clip(c * shade + rng.integers(-20, 21), 0, 255)) for c in HUES[cls_index])
    _draw(draw, CLASSES[cls_index], cx, cy, r, rng.uniform(0, 2 * math.pi), fill, size)
    noise = rng.normal(0, 6, size=(size, size, 3))
    arr = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr).filter(ImageFilter.GaussianBlur(radius=size / 128))


# The demo's stand-ins for PACS's other domains: the same shapes, drawn in another style each.
STYLES = {
    "inverted": ImageOps.invert,  # dark backgrounds, complementary hues
    "gray": lambda im: ImageOps.grayscale(im).convert("RGB"),
    "sketch": lambda im: ImageOps.invert(im.convert("L").filter(ImageFilter.FIND_EDGES)).convert("RGB"),
}


def generate(root: str | Path, per_class: int, size: int, seed: int, style: str | None = None) -> Path:
    """Write `per_class` JPEGs per class under `root/<class>/img_NNN.jpg`; returns root. A
    `style` (one of STYLES) redraws them as another domain would."""
    root = Path(root)
    restyle = STYLES[style] if style else None
    for k, cls in enumerate(CLASSES):
        rng = np.random.default_rng([seed, k] if style is None else [seed, k, 1 + list(STYLES).index(style)])
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = render(k, rng, size)
            (restyle(img) if restyle else img).save(folder / f"img_{i:03d}.jpg", quality=90)
    return root
