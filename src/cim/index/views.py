"""Indexes made from a loaded index's embeddings, without encoding anything again.

- :func:`subset_index`: the rows ``rows`` of an index (a nested corpus subset of the scale ablation), as its
  own in-memory :class:`CorpusIndex`: the same text vectors, image table, sources and image identity, cut to
  those rows. Row order is kept, so near-ties resolve as in the full index (by row).
- :func:`combine_index`: the text side of one index with the image side of another built from the same
  manifest (the encoder ablation: text encoder x image encoder from one index per encoder).

An index built with ``index.center_images`` keeps the full corpus's mean in a subset (the subset's own mean
would need the raw embeddings, which the index does not keep).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cim.errors import ConfigError
from cim.index.identity import ImageIdentity
from cim.index.store import CorpusIndex

__all__ = ["subset_index", "combine_index"]


def _with(index: CorpusIndex, *, ids, text, image_table, identity, image_from: CorpusIndex, meta: dict) -> CorpusIndex:
    out = CorpusIndex(ids, text, image_table, kind="exact", image_mean=image_from.image_mean,
                      sources_ids=image_from.sources_ids, sources_emb=image_from.sources_emb, meta=meta,
                      device=index.search_device, path=None, search_backend=index.search_backend)
    out.identity = identity
    return out


def subset_index(index: CorpusIndex, rows: Sequence[int]) -> CorpusIndex:
    """The corpus rows ``rows`` (increasing) of ``index`` as an exact in-memory index."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= len(index.ids)):
        raise ValueError("rows must be increasing row numbers of the index")
    ident = index.identity
    identity = ImageIdentity(ident.groups[rows], ident.digests, ident.source_groups, list(ident.source_ids))
    meta = {**index.meta, "rows": int(len(rows)), "subset_of": {"rows": len(index.ids)}}
    return _with(index, ids=[index.ids[r] for r in rows], text=index.text_vectors()[rows],
                 image_table=index.image_table[rows], identity=identity, image_from=index, meta=meta)


def combine_index(text_from: CorpusIndex, image_from: CorpusIndex) -> CorpusIndex:
    """``text_from``'s text vectors with ``image_from``'s image table, sources and identity (same corpus rows)."""
    if text_from.ids != image_from.ids:
        raise ConfigError("the two indexes hold different corpus rows (built from different manifests, or rows "
                          "skipped as bad images in one): build both from the same manifest")
    enc = {"text": text_from.meta.get("encoders", {}).get("text"),
           "image": image_from.meta.get("encoders", {}).get("image")}
    return _with(text_from, ids=text_from.ids, text=text_from.text_vectors(), image_table=image_from.image_table,
                 identity=image_from.identity, image_from=image_from, meta={**image_from.meta, "encoders": enc})
