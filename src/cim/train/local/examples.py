"""What the local backend trains and evaluates on: (caption, image features) pairs for the SFT warm-up,
the training images' and the held-out images' features (the index's source embeddings, looked up by id)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cim.io import read_jsonl


def read_rows(path: str | Path) -> list[dict]:
    return [row for _, row in read_jsonl(path)]


def rows_with_features(index, rows: Sequence[dict]) -> tuple[list[dict], np.ndarray]:
    """The rows whose id has a source embedding in ``index``, and those embeddings (float32)."""
    feats, found = index.source_embeddings([r["id"] for r in rows])
    return [r for r, ok in zip(rows, found) if ok], feats[found].astype(np.float32)


def sft_pairs(cfg, index) -> tuple[list[str], np.ndarray]:
    """(captions, features) for the SFT warm-up: every corpus row's text and image (``sft_data=corpus``) or
    the training images' reference captions (``reference``)."""
    if cfg.train.local.sft_data == "corpus":
        rows = read_rows(cfg.index.manifest)
        row_of = index.row_of
        keep = [r for r in rows if r["id"] in row_of]
        feats = np.asarray(index.image_table[[row_of[r["id"]] for r in keep]], dtype=np.float32)
        return [r["text"] for r in keep], feats
    rows, feats = rows_with_features(index, [r for r in read_rows(cfg.train.manifest) if r.get("reference")])
    return [r["reference"] for r in rows], feats


