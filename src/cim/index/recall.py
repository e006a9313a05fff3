"""Recall of an approximate index against exact search (what ivf / hnsw give up for speed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cim.index.search import exact_topk, faiss_search

__all__ = ["recall_at_k"]


def recall_at_k(source: Any, queries: np.ndarray, k: int) -> float:
    """Mean over queries of |approximate top-k ∩ exact top-k| / k.

    ``source`` is an index folder (str / Path), a loaded :class:`CorpusIndex`, or a pair
    ``(vectors (N, D) float32, faiss_index)`` of the vectors and an approximate FAISS index built over them.
    An exact index scores 1.0 by construction.
    """
    from cim.index.store import CorpusIndex

    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if isinstance(source, (str, Path)):
        source = CorpusIndex.load(source, device="cpu")
    if isinstance(source, CorpusIndex):
        vectors = source.text_vectors()
        _, approx = source.search(queries, k)
    else:
        vectors, index = source
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        _, approx = faiss_search(index, queries, k)
    _, exact = exact_topk(vectors, queries, k)
    kk = min(k, len(vectors))
    if kk == 0 or len(queries) == 0:
        return 1.0
    hits = sum(len(set(a[a >= 0].tolist()) & set(e[e >= 0].tolist())) for a, e in zip(approx, exact))
    return hits / (len(queries) * kk)
