"""Shared, built-once helpers for the service / verl / train tests (imported as `support.train_world`).

- a tiny real world: 24 rendered PNGs (shape x colour x background) with one caption each, as a corpus
  manifest, a sources file and a training manifest;
- a real index over it (the embedded MiniLM text encoder and EfficientNet-Lite0 image encoder, exact search)
  and a real :class:`cim.reward.scorer.Scorer` built from config;
- a tiny real Qwen2-VL processor (a Qwen2Tokenizer trained offline with ``tokenizers``, :mod:`e2e.full_path.tokenizers`,
  + Qwen2VLImageProcessor) as verl's model folder.

Everything is cached per test session (module-level), so the encoders load once.
"""
from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40)}
BACKGROUNDS = {"white": (250, 250, 250), "black": (15, 15, 15)}


@functools.lru_cache(maxsize=None)
def root() -> Path:
    return Path(tempfile.mkdtemp(prefix="cim-train-tests-"))


# verl's RLHFDataset reads parquet through `datasets`, which caches under ~/.cache unless told otherwise
os.environ.setdefault("HF_DATASETS_CACHE", str(root() / "hf-datasets"))


def _draw(shape: str, colour, background, size: int = 64):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), background)
    d = ImageDraw.Draw(im)
    box = (12, 12, size - 12, size - 12)
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    else:
        d.polygon([(size // 2, 10), (size - 10, size - 10), (10, size - 10)], fill=colour)
    return im


@functools.lru_cache(maxsize=None)
def world() -> dict:
    """Paths of the tiny world: corpus.jsonl, sources.jsonl, train.jsonl; and the rows."""
    out = root() / "world"
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for shape in SHAPES:
        for cname, colour in COLOURS.items():
            for bname, bg in BACKGROUNDS.items():
                rid = f"{cname}-{shape}-{bname}"
                path = out / "images" / f"{rid}.png"
                _draw(shape, colour, bg).save(path)
                rows.append({"id": rid, "image": f"images/{rid}.png",
                             "text": f"a {cname} {shape} on a {bname} background"})
    train = rows[::2]
    with open(out / "corpus.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(out / "sources.jsonl", "w") as f:
        f.writelines(json.dumps({"id": r["id"], "image": r["image"], "split": "train"}) + "\n" for r in rows)
    with open(out / "train.jsonl", "w") as f:
        f.writelines(json.dumps({"id": r["id"], "image": r["image"], "split": "train"}) + "\n" for r in train)
    return {"dir": out, "corpus": out / "corpus.jsonl", "sources": out / "sources.jsonl",
            "train": out / "train.jsonl", "rows": rows, "train_rows": train}


@functools.lru_cache(maxsize=None)
def params_file() -> Path:
    """A params.yaml for the tiny world (the embedded encoders, small images, exact search)."""
    w = world()
    path = root() / "params.yaml"
    path.write_text(
        "encoders:\n"
        "  image: {image_size: 96, batch_size: 32, device: cpu}\n"
        "  text: {device: cpu}\n"
        f"index: {{manifest: {w['corpus']}, sources: {w['sources']}, out_dir: {root() / 'index'}, "
        "shard_size: 16, kind: exact, device: cpu}\n"
        "reward: {top_k: 3, exclude_source: true}\n"
        f"tracking: {{uri: 'sqlite:///{root() / 'mlruns' / 'mlflow.db'}', artifact_dir: {root() / 'mlruns' / 'art'}}}\n"
        f"train: {{manifest: {w['train']}, data_dir: {root() / 'train_data'}, val_size: 3, "
        f"local: {{report_dir: {root() / 'reports'}}}}}\n")
    return path


def config(*overrides: str):
    from cim.config import load_config

    return load_config(params_file(), list(overrides))


@functools.lru_cache(maxsize=None)
def index_dir() -> Path:
    from cim.index import build_index

    cfg = config()
    w = world()
    return Path(build_index(cfg, w["corpus"], Path(cfg.index.out_dir), w["sources"]))


@functools.lru_cache(maxsize=None)
def scorer():
    """One real scorer for the session (``scorer().calls`` counts batched calls)."""
    from cim.reward.scorer import Scorer

    index_dir()
    return Scorer.from_config(config())


@functools.lru_cache(maxsize=None)
def guarded_scorer():
    """The same index scored with the guarded protocol's reward (Υ + the repetition, length and fluency guards)."""
    from cim.reward.scorer import Scorer

    index_dir()
    return Scorer.from_config(config("protocol=guarded"))


def captions_for(rows, kinds=("right", "vague", "wrong")) -> list[dict]:
    """(caption, image_id) items of varied quality for the given world rows."""
    items = []
    for i, r in enumerate(rows):
        kind = kinds[i % len(kinds)]
        if kind == "right":
            cap = r["text"]
        elif kind == "vague":
            cap = "a shape"
        else:
            cap = "a purple hexagon on a striped background"
        items.append({"caption": cap, "image_id": r["id"]})
    return items


@functools.lru_cache(maxsize=None)
def tiny_vl_model() -> Path:
    """A folder verl loads as ``actor_rollout_ref.model.path``: a Qwen2-VL processor (Qwen2Tokenizer trained on the
    world's captions with Qwen's special tokens and Qwen-VL's chat template, :mod:`e2e.full_path.tokenizers`, the
    builder the full-tiny profile uses) and a config naming the architecture; no weights."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor

    from e2e.full_path.tokenizers import QWEN_VL_TEMPLATE, qwen_tokenizer

    out = root() / "tiny-vl"
    corpus = [r["text"] for r in world()["rows"]] + ["Describe this image in detail.", "a shape", "user assistant"]
    fast = qwen_tokenizer(corpus * 10, chat_template=QWEN_VL_TEMPLATE, vocab_size=500)
    try:
        from transformers import Qwen2VLVideoProcessor
        video = Qwen2VLVideoProcessor()
    except Exception:  # noqa: BLE001 - older transformers: no separate video processor
        video = None
    proc = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64),
                            tokenizer=fast, video_processor=video, chat_template=QWEN_VL_TEMPLATE)
    proc.save_pretrained(out)
    fast.save_pretrained(out)
    (out / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    return out
