"""Nested, deterministic corpus subsets for the scale ablation (the paper's Fig. 5 grows its gallery from the
training set RefinedCaps by 10K, 100K and 1M DenseFusion pairs).

Every subset holds every corpus row that shows a training image (by image content, the index's identity), plus the first ``share`` of the other rows in one seeded permutation. A larger share
therefore contains every smaller one, the same seed gives the same subsets, and share 0 is the training
images' own rows (the paper's smallest gallery).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cim.errors import InputError

__all__ = ["training_rows", "nested_subsets"]


def training_rows(index, train_ids: Sequence[str]) -> np.ndarray:
    """Corpus rows (sorted) that show one of the training images ``train_ids``."""
    identity = index.identity
    groups = {int(identity.source_groups[identity.source_position[t]]) for t in train_ids
              if t in identity.source_position}
    groups |= {int(identity.groups[index.row_of[t]]) for t in train_ids if t in index.row_of}
    groups.discard(-1)
    rows = np.flatnonzero(np.isin(identity.groups, sorted(groups)))
    if len(train_ids) and not len(rows):
        raise InputError("no corpus row shows a training image: the scale ablation keeps the training images' "
                         "rows in every subset; check train.manifest and index.manifest")
    return rows.astype(np.int64)


def nested_subsets(n_rows: int, keep: Sequence[int], shares: Sequence[float], seed: int) -> list[np.ndarray]:
    """For each share (sorted ascending), the sorted rows of its subset: ``keep`` plus the first
    ``round(share * others)`` of the other rows in a permutation drawn with ``seed``."""
    keep = np.unique(np.asarray(keep, dtype=np.int64))
    others = np.setdiff1d(np.arange(n_rows, dtype=np.int64), keep)
    order = others[np.random.default_rng(seed).permutation(len(others))]
    out = []
    for share in shares:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share {share} is not in [0, 1]")
        out.append(np.sort(np.concatenate([keep, order[:int(round(share * len(others)))]])))
    return out
