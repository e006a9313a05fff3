"""The generated demo world: images drawn from scene graphs, captions of known detail and correctness.

``generate_world(cfg.world)`` writes, under ``out_dir``::

    images/<id>.png        corpus images c00000.., benchmark images b00000..
    corpus.jsonl           corpus manifest: id, image, text, detail (coarse | medium | detailed)
    corpus_scenes.jsonl    id, scene_graph of every corpus image (ground truth for analyses)
    sources.jsonl          train + bench images: id, image, split (train ids ARE corpus ids)
    train.jsonl            id, image, scene_graph, reference, coarse_label, fine_label
    bench.jsonl            same, for the held-out benchmark images (not in the corpus)
    bench_captions.jsonl   one row per (bench image, level): image_id, caption, level, quality[, errors]
    world.json             config, counts, vocabulary; written last: the completion marker

Same config (and generator version) -> byte-identical files. Every file is written tmp-then-rename, and
world.json only after everything else, so an interrupted run never looks complete; a re-run with the same
config finds world.json and skips.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cim.io import atomic_write_bytes, atomic_write_text, write_jsonl

from .manifest import write_image_rows, write_manifest, write_sources
from .world_captions import CORPUS_DETAIL, LEVELS, corpus_text, detailed_caption, evaluation_captions
from .world_render import encode_png, render_scene
from .world_scene import (coarse_label, fine_label, names_fine_label, sample_prototypes, sample_scene,
                          vocabulary)

__all__ = ["generate_world", "world_fingerprint", "is_complete", "coarse_label", "fine_label",
           "names_fine_label", "GENERATOR_VERSION"]

GENERATOR_VERSION = 1   # bump when a change to the generator changes its output
# stream ids for np.random.default_rng([seed, stream, index]): one independent stream per purpose
_CORPUS_SCENE, _CORPUS_TEXT, _BENCH_SCENE, _BENCH_TEXT, _TRAIN_TEXT, _SPLITS, _PROTOTYPES = range(7)
_IMAGE_NAME = re.compile(r"^[cb]\d+\.png$")
_FILES = ("corpus.jsonl", "corpus_scenes.jsonl", "sources.jsonl", "train.jsonl", "bench.jsonl",
          "bench_captions.jsonl")


def _as_dict(cfg: Any) -> dict:
    if is_dataclass(cfg):
        return asdict(cfg)
    if isinstance(cfg, dict):
        return dict(cfg)
    from omegaconf import OmegaConf  # an omegaconf node from load_config
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def world_fingerprint(cfg: Any) -> dict:
    """What determines the world's content (``out_dir`` does not)."""
    d = _as_dict(cfg)
    mix = [float(x) for x in d["corpus_detail_mix"]]
    if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
        raise ValueError(f"world.corpus_detail_mix must be 3 non-negative shares (coarse, medium, "
                         f"detailed) with a positive sum, got {mix}")
    if not 0 <= d["n_train"] <= d["n_corpus"]:
        raise ValueError(f"world.n_train ({d['n_train']}) must be between 0 and world.n_corpus "
                         f"({d['n_corpus']}): training images are corpus images")
    if d["n_corpus"] < 1 or d["n_bench"] < 0 or d["image_size"] < 16:
        raise ValueError("world needs n_corpus >= 1, n_bench >= 0 and image_size >= 16")
    if d["n_families"] < 2 or d["variants_per_family"] < 1 or not 0.0 <= d["attribute_noise"] <= 1.0:
        raise ValueError("world needs n_families >= 2, variants_per_family >= 1, 0 <= attribute_noise <= 1")
    return {"seed": int(d["seed"]), "n_corpus": int(d["n_corpus"]), "n_train": int(d["n_train"]),
            "n_bench": int(d["n_bench"]), "image_size": int(d["image_size"]), "corpus_detail_mix": mix,
            "n_families": int(d["n_families"]), "variants_per_family": int(d["variants_per_family"]),
            "attribute_noise": float(d["attribute_noise"]), "generator_version": GENERATOR_VERSION}


def is_complete(out_dir: str | Path, fingerprint: dict) -> bool:
    out = Path(out_dir)
    try:
        meta = json.loads((out / "world.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if meta.get("config") != fingerprint or not all((out / name).exists() for name in _FILES):
        return False
    n_images = sum(1 for p in (out / "images").iterdir() if _IMAGE_NAME.match(p.name))
    return n_images == fingerprint["n_corpus"] + fingerprint["n_bench"]


def _detail_levels(rng: np.random.Generator, n: int, mix: list[float]) -> list[str]:
    """Exactly round(share * n) texts per level (largest remainders), in a seeded random order."""
    shares = np.asarray(mix) / np.sum(mix) * n
    counts = np.floor(shares).astype(int)
    counts[np.argsort(-(shares - counts), kind="stable")[: n - counts.sum()]] += 1
    levels = np.repeat(np.arange(3), counts)
    rng.shuffle(levels)
    return [CORPUS_DETAIL[i] for i in levels]


def _width(n: int) -> int:
    return max(5, len(str(max(n - 1, 0))))


def generate_world(cfg: Any, out_dir: str | Path | None = None, progress: bool = True,
                   force: bool = False) -> dict:
    """Generate the world described by ``cfg`` (a WorldConfig or dict) under ``out_dir`` (default
    ``cfg.out_dir``). Returns the world.json content, plus ``"skipped": True`` when it was already there."""
    fp = world_fingerprint(cfg)
    out = Path(out_dir if out_dir is not None else _as_dict(cfg)["out_dir"])
    if not force and is_complete(out, fp):
        meta = json.loads((out / "world.json").read_text(encoding="utf-8"))
        return {**meta, "skipped": True}
    (out / "world.json").unlink(missing_ok=True)     # incomplete from here until the end
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    seed, size = fp["seed"], fp["image_size"]
    n_corpus, n_train, n_bench = fp["n_corpus"], fp["n_train"], fp["n_bench"]
    wc, wb = _width(n_corpus), _width(n_bench)
    split_rng = np.random.default_rng([seed, _SPLITS])
    details = _detail_levels(split_rng, n_corpus, fp["corpus_detail_mix"])
    train_rows_idx = np.sort(split_rng.choice(n_corpus, size=n_train, replace=False))
    train_set = set(int(i) for i in train_rows_idx)
    prototypes = sample_prototypes(np.random.default_rng([seed, _PROTOTYPES]), fp["n_families"],
                                   fp["variants_per_family"])
    noise = fp["attribute_noise"]

    def instance(stream: int, i: int) -> dict:
        rng = np.random.default_rng([seed, stream, i])
        return sample_scene(rng, prototypes[int(rng.integers(len(prototypes)))], noise)

    bar = tqdm(total=n_corpus + n_bench, desc="rendering world", unit="img", disable=not progress)
    corpus, scenes, train, bench, captions, written = [], [], [], [], [], set()

    def draw(image_id: str, scene: dict) -> str:
        path = images / f"{image_id}.png"
        atomic_write_bytes(path, encode_png(render_scene(scene, size)), fsync=False)
        written.add(path.name)
        bar.update(1)
        return os.path.abspath(path)

    def labelled(image_id: str, image: str, scene: dict, reference: str) -> dict:
        return {"id": image_id, "image": image, "scene_graph": scene, "reference": reference,
                "coarse_label": coarse_label(scene), "fine_label": fine_label(scene)}

    for i in range(n_corpus):
        image_id = f"c{i:0{wc}d}"
        scene = instance(_CORPUS_SCENE, i)
        image = draw(image_id, scene)
        text = corpus_text(np.random.default_rng([seed, _CORPUS_TEXT, i]), scene, details[i])
        corpus.append({"id": image_id, "image": image, "text": text, "detail": details[i]})
        scenes.append({"id": image_id, "scene_graph": scene})
        if i in train_set:
            reference = detailed_caption(np.random.default_rng([seed, _TRAIN_TEXT, i]), scene)
            train.append(labelled(image_id, image, scene, reference))
    for i in range(n_bench):
        image_id = f"b{i:0{wb}d}"
        scene = instance(_BENCH_SCENE, i)
        image = draw(image_id, scene)
        caps = evaluation_captions(np.random.default_rng([seed, _BENCH_TEXT, i]), scene, prototypes, noise)
        bench.append(labelled(image_id, image, scene, caps[0]["caption"]))
        captions.extend({"image_id": image_id, **cap} for cap in caps)
    bar.close()

    for stale in images.iterdir():   # images of an earlier, larger world
        if _IMAGE_NAME.match(stale.name) and stale.name not in written:
            stale.unlink()
    write_manifest(corpus, out / "corpus.jsonl")
    write_jsonl(scenes, out / "corpus_scenes.jsonl")
    write_sources([{"id": r["id"], "image": r["image"], "split": "train"} for r in train]
                  + [{"id": r["id"], "image": r["image"], "split": "bench"} for r in bench],
                  out / "sources.jsonl")
    write_image_rows(train, out / "train.jsonl")
    write_image_rows(bench, out / "bench.jsonl")
    write_jsonl(captions, out / "bench_captions.jsonl")
    meta = {
        "config": fp,
        "counts": {"corpus": n_corpus, "train": n_train, "bench": n_bench, "bench_captions": len(captions),
                   "corpus_detail": {d: details.count(d) for d in CORPUS_DETAIL}},
        "levels": LEVELS,
        "files": {"images": "images/", **{name.split(".")[0]: name for name in _FILES}},
        "vocab": vocabulary(),
    }
    atomic_write_text(out / "world.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return {**meta, "skipped": False}
