"""Draw a scene graph as an RGB image (numpy for textures, PIL for shape outlines). Deterministic.

Every random choice of the drawing comes from the scene graph itself (its ``bg_seed`` and the objects'
shade, rotation and pattern fields), so one scene always gives the same pixels.
"""
from __future__ import annotations

import functools
import io
import math

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["render_scene", "encode_png"]


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel x and y coordinates (shared, read-only)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    xx.flags.writeable = yy.flags.writeable = False
    return xx, yy


def _smooth_noise(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """Blobby noise in [-1, 1]: a coarse random grid upsampled bilinearly."""
    n = size // cell + 2
    coarse = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((size + cell, size + cell), Image.BILINEAR)
    ox, oy = rng.integers(0, cell, 2)
    return np.asarray(img)[oy:oy + size, ox:ox + size]


def _background(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    xx, yy = _grid(size)
    u, v = xx / size, yy / size
    shade = rng.uniform(0.85, 1.12)

    def noise(std: float, block: int = 1) -> np.ndarray:
        n = rng.normal(0, std, (size // block + 1, size // block + 1)).astype(np.float32)
        return np.repeat(np.repeat(n, block, 0), block, 1)[:size, :size, None]

    if kind == "plain":
        base = np.array(rng.uniform(200, 240, 3), np.float32)
        img = np.broadcast_to(base, (size, size, 3)) + noise(2.0)
    elif kind == "grass":
        base = np.array([70, 140, 55], np.float32) * shade
        blades = np.sin(xx * rng.uniform(0.9, 1.4) + 3 * _smooth_noise(rng, size, 8))[..., None]
        img = base + noise(14.0) + 18 * blades * np.array([0.4, 1.0, 0.3], np.float32) \
            + 25 * _smooth_noise(rng, size, 24)[..., None]
    elif kind == "sky":
        top, bottom = np.array([40, 110, 210], np.float32) * shade, np.array([170, 215, 250], np.float32)
        img = top + (bottom - top) * v[..., None] + noise(2.0)
        for _ in range(int(rng.integers(0, 3))):               # soft clouds
            cx, cy, rx, ry = rng.uniform(0, 1), rng.uniform(0.1, 0.6), rng.uniform(0.12, 0.25), \
                rng.uniform(0.05, 0.09)
            d = ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2
            alpha = np.clip(1.2 - d, 0, 1)[..., None] * 0.8
            img = img * (1 - alpha) + 245 * alpha
    elif kind == "sand":
        base = np.array([215, 190, 140], np.float32) * shade
        img = base + noise(9.0) + 14 * _smooth_noise(rng, size, 20)[..., None] \
            + 10 * np.sin(v * rng.uniform(18, 30) + 2 * _smooth_noise(rng, size, 32))[..., None]
        specks = rng.random((size, size)) < 0.02
        img[specks] *= 0.7
    elif kind == "brick":
        bh = size / rng.uniform(6, 9)
        bw = bh * 2.2
        row = np.floor(yy / bh)
        col = np.floor((xx + (row % 2) * bw / 2) / bw)
        ids = (row * 31 + col * 17).astype(np.int64) % 64
        tint = rng.uniform(0.8, 1.15, 64).astype(np.float32)[ids][..., None]
        img = np.array([165, 70, 50], np.float32) * shade * tint + noise(8.0)
        mortar = ((yy % bh) < 1.6) | (((xx + (row % 2) * bw / 2) % bw) < 1.6)
        img[mortar] = np.array([200, 195, 185], np.float32)
    elif kind == "wood":
        ph = size / rng.uniform(3, 5)
        grain = np.sin(yy * rng.uniform(0.5, 0.8) + 4 * _smooth_noise(rng, size, 32)
                       + 1.5 * np.floor(yy / ph))[..., None]
        img = np.array([150, 100, 55], np.float32) * shade + 22 * grain + noise(5.0)
        img[(yy % ph) < 1.5] *= 0.55
    elif kind == "night":
        top, bottom = np.array([8, 10, 35], np.float32), np.array([30, 35, 80], np.float32) * shade
        img = top + (bottom - top) * v[..., None] + noise(2.0)
        stars = rng.random((size, size)) < 0.012
        img[stars] = rng.uniform(180, 255, (int(stars.sum()), 1))
    elif kind == "water":
        base = np.array([30, 100, 150], np.float32) * shade
        waves = np.sin(yy * rng.uniform(0.5, 0.8) + 2.5 * np.sin(xx * rng.uniform(0.08, 0.15))
                       + 2 * _smooth_noise(rng, size, 24))[..., None]
        img = base + 25 * waves * np.array([0.6, 0.9, 1.0], np.float32) + noise(4.0)
    else:
        raise ValueError(f"unknown background {kind!r}")
    return img


def _polygon(obj: dict, size: int) -> list[tuple[float, float]] | None:
    """Vertices of the object's outline in pixels (None for circle and ring)."""
    shape, r = obj["shape"], obj["radius"] * size
    if shape == "square":
        pts = [(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]
    elif shape == "triangle":
        pts = [(math.cos(a), math.sin(a) + 0.15) for a in np.radians([-90, 30, 150])]
    elif shape == "star":
        pts = [((1.0 if k % 2 == 0 else 0.45) * math.cos(a), (1.0 if k % 2 == 0 else 0.45) * math.sin(a))
               for k, a in enumerate(np.radians(np.arange(-90, 270, 36)))]
    elif shape == "heart":
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = list(zip(x / 17, (y + 2) / 17))
    elif shape == "cross":
        w = 0.34
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w),
               (-1, -w), (-w, -w)]
    elif shape == "diamond":
        pts = [(0, -1), (0.68, 0), (0, 1), (-0.68, 0)]
    else:
        return None
    rot = math.radians(obj["rotation"])
    c, s = math.cos(rot), math.sin(rot)
    cx, cy = obj["x"] * size, obj["y"] * size
    return [(cx + r * (px * c - py * s), cy + r * (px * s + py * c)) for px, py in pts]


def _mask(obj: dict, size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = obj["x"] * size, obj["y"] * size, obj["radius"] * size
    poly = _polygon(obj, size)
    if poly is not None:
        draw.polygon(poly, fill=255)
    else:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        if obj["shape"] == "ring":
            ri = r * 0.55
            draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=0)
    return np.asarray(canvas) > 127


def _pattern(obj: dict, size: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray | None:
    """Where the second colour of a textured object goes (None for solid)."""
    texture, p = obj["texture"], obj["pattern"]
    period = p["period"] * size
    a = math.radians(p["angle"])
    u = (xx * math.cos(a) + yy * math.sin(a)) / period + p["phase"]
    w = (-xx * math.sin(a) + yy * math.cos(a)) / period + p["phase"]
    if texture == "striped":
        return (u % 1.0) < 0.5
    if texture == "checkered":
        return ((np.floor(u * 0.8) + np.floor(w * 0.8)) % 2) == 0
    if texture == "dotted":
        fu, fw = (u * 0.8) % 1.0 - 0.5, (w * 0.8) % 1.0 - 0.5
        return fu * fu + fw * fw < 0.09
    return None


def _second_colour(rgb: np.ndarray) -> np.ndarray:
    light = rgb.mean() > 150
    return rgb * 0.35 if light else rgb * 0.35 + 255 * 0.65


def render_scene(scene: dict, size: int) -> np.ndarray:
    """``(size, size, 3)`` uint8 image of the scene; objects[0] is drawn last (never hidden)."""
    rng = np.random.default_rng(scene["bg_seed"])
    img = _background(scene["background"], size, rng)
    xx, yy = _grid(size)
    for obj in reversed(scene["objects"]):
        mask = _mask(obj, size)
        rgb = np.array(obj["rgb"], np.float32)
        # gentle shading so a solid object is not a flat stamp
        shade = 1.0 + 0.12 * ((obj["y"] * size - yy) / (obj["radius"] * size + 1e-6)).clip(-1, 1)
        fill = rgb * shade[..., None]
        pat = _pattern(obj, size, xx, yy)
        if pat is not None:
            fill = np.where(pat[..., None], _second_colour(rgb), fill)
        inner = mask.copy()
        inner[1:, :] &= mask[:-1, :]
        inner[:-1, :] &= mask[1:, :]
        inner[:, 1:] &= mask[:, :-1]
        inner[:, :-1] &= mask[:, 1:]
        edge = mask & ~inner
        img = np.where(mask[..., None], fill, img)
        img[edge] = rgb * 0.45 if rgb.mean() > 60 else np.array([150, 150, 150], np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
