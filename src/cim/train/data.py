"""`cim prepare-train`: verl's multimodal parquet (the geo3k layout) from a training manifest.

One row per training image::

    data_source  "cim_caption"
    prompt       [{"role": "user", "content": "<image>Describe this image in detail."}]
    images       [{"bytes": <the image file's bytes>}]
    ability      "caption"
    reward_model {"style": "model", "ground_truth": <image id>}
    extra_info   {"split": "train" | "val", "index": i, "image_id": <image id>}

verl drops ``images`` before the reward is called, so the reward finds the source image by id
(``extra_info.image_id``; ``ground_truth`` carries it too, as a fallback): every id must have a source
embedding in the index (the sources file lists the training images).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterable, Sequence

from cim.errors import ConfigError, InputError

DATA_SOURCE = "cim_caption"
IMAGE_TOKEN = "<image>"


def _read_training_manifest(path: str | Path) -> list[dict]:
    from cim.data.manifest import read_manifest

    rows = read_manifest(path, require_text=False)
    seen: set[str] = set()
    for r in rows:
        if r["id"] in seen:
            raise InputError(f"{path}: duplicate id {r['id']!r}")
        seen.add(r["id"])
    return rows


def to_verl_rows(rows: Sequence[dict], prompt: str, split: str) -> list[dict]:
    """Manifest rows (``id``, absolute ``image`` path) -> verl parquet rows."""
    text = prompt if IMAGE_TOKEN in prompt else IMAGE_TOKEN + prompt
    if text.count(IMAGE_TOKEN) != 1:
        raise ConfigError(f"train.prompt must hold exactly one {IMAGE_TOKEN}: {prompt!r}")
    out = []
    for i, r in enumerate(rows):
        image_id = str(r["id"])
        out.append({
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": text}],
            "images": [{"bytes": Path(r["image"]).read_bytes()}],
            "ability": "caption",
            "reward_model": {"style": "model", "ground_truth": image_id},
            "extra_info": {"split": split, "index": i, "image_id": image_id},
        })
    return out


def write_parquet(rows: Iterable[dict], path: str | Path) -> Path:
    """Atomic: written next to ``path`` and renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(list(rows))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def split_train_val(rows: list[dict], val_size: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic hold-out of ``val_size`` rows (never all of them)."""
    n_val = max(0, min(val_size, len(rows) - 1))
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    val_idx = set(order[:n_val])
    return ([r for i, r in enumerate(rows) if i not in val_idx], [r for i, r in enumerate(rows) if i in val_idx])


def prepare_train(cfg, manifest: str | None = None, val_manifest: str | None = None,
                  out_dir: str | None = None) -> dict:
    """Writes ``train.parquet`` and ``val.parquet``; returns their paths and row counts."""
    t = cfg.train
    rows = _read_training_manifest(manifest or t.manifest)
    if not rows:
        raise InputError(f"{manifest or t.manifest}: no training rows")
    val_path = val_manifest if val_manifest is not None else t.val_manifest
    if val_path:
        train_rows, val_rows = rows, _read_training_manifest(val_path)
    else:
        train_rows, val_rows = split_train_val(rows, t.val_size, cfg.seed)
    out = Path(out_dir or t.data_dir)
    train_file = write_parquet(to_verl_rows(train_rows, t.prompt, "train"), out / "train.parquet")
    val_file = write_parquet(to_verl_rows(val_rows, t.prompt, "val"), out / "val.parquet")
    return {"train_files": str(train_file.resolve()), "val_files": str(val_file.resolve()),
            "train_rows": len(train_rows), "val_rows": len(val_rows)}
