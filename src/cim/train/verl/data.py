"""`cim prepare-train`: verl's multimodal parquet (the geo3k layout) from a training manifest.

One row per training image::

    data_source  "cim_caption"
    prompt       [{"role": "user", "content": "<image>" + the row's ``prompt``, else ``train.prompt``}]
    images       [{"bytes": <the image file's bytes>}]
    ability      "caption"
    reward_model {"style": "model", "ground_truth": <image id>}
    extra_info   {"split": "train" | "val", "index": <row of the image in the gallery>, "image_id": <image id>}

verl drops ``images`` before the reward is called, so the reward finds the source image by id
(``extra_info.image_id``; ``ground_truth`` carries it too, as a fallback): every id must have a source
embedding in the index (the sources file lists the training images). ``extra_info.index`` is the id's
position in the gallery manifest (``index.manifest``, the corpus the index is built from; -1 when the image
is not in it), as in the released implementation.

Every training row is trained on. ``val.parquet`` is the validation manifest when one is given; else
``train.val_size`` training rows drawn as a validation monitor (they stay in training), or, with
``train.val_size: 0``, no separate file: verl validates on the training parquet (the release's setting).
"""
from __future__ import annotations

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


def _user_turn(prompt: str, where: str = "") -> str:
    text = prompt if IMAGE_TOKEN in prompt else IMAGE_TOKEN + prompt
    if text.count(IMAGE_TOKEN) != 1:
        if where:
            raise InputError(f"{where}: the prompt must hold exactly one {IMAGE_TOKEN}: {prompt!r}")
        raise ConfigError(f"train.prompt must hold exactly one {IMAGE_TOKEN}: {prompt!r}")
    return text


def gallery_rows(path: str | Path) -> dict[str, int]:
    """id -> position in the gallery manifest ({} when there is no such file)."""
    from cim.io import read_jsonl

    if not path or not Path(path).is_file():
        return {}
    return {str(obj["id"]): n for n, (_, obj) in enumerate(read_jsonl(path))}


def to_verl_rows(rows: Sequence[dict], prompt: str, split: str, gallery: dict[str, int] | None = None) -> list[dict]:
    """Manifest rows (``id``, absolute ``image`` path, optional ``prompt``) -> verl parquet rows; a row's own
    ``prompt`` wins over ``prompt``. ``gallery``: id -> gallery row (``extra_info.index``; -1 if absent)."""
    default = _user_turn(prompt)
    out = []
    for r in rows:
        image_id = str(r["id"])
        out.append({
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": _user_turn(r["prompt"], f"row {image_id!r}") if r.get("prompt")
                        else default}],
            "images": [{"bytes": Path(r["image"]).read_bytes()}],
            "ability": "caption",
            "reward_model": {"style": "model", "ground_truth": image_id},
            "extra_info": {"split": split, "index": (gallery or {}).get(image_id, -1), "image_id": image_id},
        })
    return out


def write_parquet(rows: Iterable[dict], path: str | Path) -> Path:
    """Atomic (:func:`cim.io.atomic_open`): a reader sees the old file or the whole new one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cim.io import atomic_open

    path = Path(path)
    table = pa.Table.from_pylist(list(rows))
    with atomic_open(path, "wb") as handle:
        pq.write_table(table, handle)
    return path


def validation_sample(rows: list[dict], val_size: int, seed: int) -> list[dict]:
    """``val_size`` rows drawn deterministically (in manifest order) as a validation monitor."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    keep = set(order[:max(0, min(val_size, len(rows)))])
    return [r for i, r in enumerate(rows) if i in keep]


def prepare_train(cfg, manifest: str | None = None, val_manifest: str | None = None,
                  out_dir: str | None = None) -> dict:
    """Writes ``train.parquet`` and ``val.parquet``; returns their paths and row counts."""
    t = cfg.train
    rows = _read_training_manifest(manifest or t.manifest)
    if not rows:
        raise InputError(f"{manifest or t.manifest}: no training rows")
    val_path = val_manifest if val_manifest is not None else t.val_manifest
    val_rows = _read_training_manifest(val_path) if val_path else validation_sample(rows, t.val_size, cfg.seed)
    gallery = gallery_rows(cfg.index.manifest)
    out = Path(out_dir or t.data_dir)
    train_file = write_parquet(to_verl_rows(rows, t.prompt, "train", gallery), out / "train.parquet")
    val_file = train_file
    if val_rows:
        val_file = write_parquet(to_verl_rows(val_rows, t.prompt, "val", gallery), out / "val.parquet")
    else:
        (out / "val.parquet").unlink(missing_ok=True)
    return {"train_files": str(train_file.resolve()), "val_files": str(val_file.resolve()),
            "train_rows": len(rows), "val_rows": len(val_rows) if val_rows else len(rows),
            "val_is_train_subset": not val_path, "in_gallery": sum(1 for r in rows if str(r["id"]) in gallery),
            "gallery": str(cfg.index.manifest), "row_prompts": sum(1 for r in rows if r.get("prompt"))}
