"""The encoder interface, the name -> builder registries (``cim.registry``), and what every encoder shares.

Nothing here imports torch or a model library at import time; builders import what they need when they
run, so ``import cim.encoders`` is cheap and never downloads anything.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, Union

import numpy as np

from cim.errors import CimError, WeightsNotFound
from cim.io import cache_dir

__all__ = [
    "TextEncoder", "ImageEncoder", "WeightsNotFound", "ImageReadError", "ImageInput",
    "TEXT_ENCODERS", "IMAGE_ENCODERS",
    "build_text_encoder", "build_image_encoder",
    "resolve_device", "l2_normalize", "load_image",
    "cache_dir",
]


class ImageReadError(CimError, OSError):
    """An image file that cannot be opened or decoded. ``path`` names the file."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read image {path!r}: {reason}")
        self.path = path
        self.reason = reason


ImageInput = Union["PIL.Image.Image", str, os.PathLike]  # noqa: F821


class TextEncoder:
    """Texts -> (n, dim) float32, rows L2-normalised."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:  # pragma: no cover - interface
        """What identifies the embedding space (recorded in index metadata, compared on load)."""
        raise NotImplementedError


class ImageEncoder:
    """PIL images or image paths -> (n, dim) float32, rows L2-normalised."""

    name: str
    dim: int

    def encode(self, images: Sequence[ImageInput]) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> dict:  # pragma: no cover - interface
        raise NotImplementedError


# -- registry ------------------------------------------------------------------------------------------
# name (``encoders.text.name`` / ``encoders.image.name``) -> builder(cfg section) -> encoder
from cim.plugins import IMAGE_ENCODERS, TEXT_ENCODERS  # noqa: E402  (declared with every other kind)


def build_text_encoder(cfg) -> TextEncoder:
    """Build the text encoder named by ``cfg.name`` (a TextEncoderConfig or anything with its fields)."""
    return TEXT_ENCODERS.get(cfg.name)(cfg)


def build_image_encoder(cfg) -> ImageEncoder:
    """Build the image encoder named by ``cfg.name`` (an ImageEncoderConfig or anything with its fields)."""
    return IMAGE_ENCODERS.get(cfg.name)(cfg)


# -- shared helpers ---------------------------------------------------------------------------------------
def resolve_device(device: str | None) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is present, else ``cpu``; an explicit cuda without one fails."""
    import torch

    device = (device or "auto").strip()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was asked for but torch sees no CUDA device (use auto or cpu)")
    return device


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm, in float32 (an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


def load_image(image: ImageInput):
    """A PIL image (converted to RGB) from a PIL image or a path; ImageReadError names an unreadable file."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(f"expected a PIL image or a path, got {type(image).__name__}")
    path = os.fspath(image)
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three for broken files
        raise ImageReadError(path, f"{type(exc).__name__}: {exc}") from None


def map_images(fn: Callable, images: Sequence[ImageInput], workers: int | None = None) -> list:
    """``[fn(load_image(x)) for x in images]``, decoding paths on a few threads (PIL releases the GIL)."""
    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    paths = sum(1 for x in images if isinstance(x, (str, os.PathLike)))
    if workers <= 1 or paths < 4:
        return [fn(load_image(x)) for x in images]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cim-img") as pool:
        return list(pool.map(lambda x: fn(load_image(x)), images))




def hf_hub_cache() -> str:
    """The Hugging Face hub cache folder, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return os.path.join(os.path.expanduser("~"), ".cache", "huggingface", "hub")


def seeded(seed: int):
    """A context in which torch's CPU RNG is seeded and restored afterwards (random-init weights)."""
    import torch

    ctx = torch.random.fork_rng(devices=[])

    class _Seeded:
        def __enter__(self):
            ctx.__enter__()
            torch.manual_seed(seed)

        def __exit__(self, *exc):
            return ctx.__exit__(*exc)

    return _Seeded()
