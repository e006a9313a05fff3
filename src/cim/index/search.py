"""Search kernels: deterministic exact top-k (numpy on CPU, torch on CUDA) and FAISS index construction.

Exact search must not depend on how queries are batched (a reward that changes with batch composition is
not a function of the caption). A float32 matrix product does depend on it (BLAS picks other kernels for
other shapes, so the last bits move), which is enough to swap near-tied rows. So exact search
1. ranks with float32 ``Q @ X.T`` only to find candidates: every row within a rounding-error bound of the
   k-th best score;
2. rescores the candidates in float64 one dot product at a time and rounds to float32;
3. orders by (score descending, row ascending): equal scores always resolve to the lower row.
The result is identical for a query whatever else is in its batch, and ties are broken the same way always.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

__all__ = ["exact_topk", "exact_topk_torch", "build_faiss_index", "configure_faiss_index", "faiss_search",
           "faiss_vectors", "rounding_tolerance"]

_U = 2.0 ** -24     # float32 unit roundoff


def rounding_tolerance(dim: int, qnorm: np.ndarray, xmax: float) -> np.ndarray:
    """A bound, with margin, on |float32 dot - exact dot| for a query of norm ``qnorm``, rows of norm <= xmax.

    Two such errors separate a candidate from the k-th score (each side rounded once), hence the factor 2.
    """
    return 2.0 * (2.0 * dim * _U) * qnorm * xmax + 1e-6


def _finish(b: int, kk: int, k: int, qi: np.ndarray, rows: np.ndarray, exact: np.ndarray):
    """From candidate (query, row, exact float32 score) triples, the top ``kk`` per query, padded to ``k``."""
    order = np.lexsort((rows, -exact.astype(np.float64), qi))   # by query, score desc, row asc
    counts = np.bincount(qi, minlength=b)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if np.any(counts < kk):  # cannot happen: the k-th score itself is a candidate
        raise AssertionError("exact search found fewer candidates than k")
    take = order[starts[:, None] + np.arange(kk)[None, :]]
    scores = np.full((b, k), -np.inf, dtype=np.float32)
    out = np.full((b, k), -1, dtype=np.int64)
    scores[:, :kk] = exact[take]
    out[:, :kk] = rows[take]
    return scores, out


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, *, xmax: float | None = None,
               block_bytes: int = 256 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k over rows of ``vectors``; see the module doc for determinism.

    Returns ``(scores (B, k) float32, rows (B, k) int64)``; when k exceeds the row count the tail is padded
    with score -inf and row -1 (as FAISS does).
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n, d = vectors.shape
    b = queries.shape[0]
    kk = min(k, n)
    if b == 0 or kk == 0:
        return np.full((b, k), -np.inf, np.float32), np.full((b, k), -1, np.int64)
    if xmax is None:
        xmax = float(np.sqrt((vectors.astype(np.float64) ** 2).sum(1).max()))
    chunk = max(1, block_bytes // (4 * n))
    out_s, out_r = [], []
    for q0 in range(0, b, chunk):
        q = queries[q0:q0 + chunk]
        scores = q @ vectors.T
        kth = np.partition(scores, n - kk, axis=1)[:, n - kk]
        tol = rounding_tolerance(d, np.linalg.norm(q.astype(np.float64), axis=1), xmax)
        qi, rows = np.nonzero(scores >= (kth - tol).astype(np.float32)[:, None])
        del scores
        exact = np.einsum("ij,ij->i", q[qi].astype(np.float64), vectors[rows].astype(np.float64))
        s, r = _finish(len(q), kk, k, qi, rows.astype(np.int64), exact.astype(np.float32))
        out_s.append(s)
        out_r.append(r)
    return np.concatenate(out_s), np.concatenate(out_r)


def exact_topk_torch(vectors, queries: np.ndarray, k: int, *, xmax: float, block_bytes: int = 1 << 30):
    """:func:`exact_topk` with the candidate pass and the float64 rescoring on a torch device (CUDA).

    ``vectors`` is a float32 torch tensor already on the device. TF32 is switched off for the candidate
    product so the error bound holds. Ties and ordering are resolved on the CPU exactly as in exact_topk.
    """
    import torch

    n, d = vectors.shape
    b = queries.shape[0]
    kk = min(k, n)
    if b == 0 or kk == 0:
        return np.full((b, k), -np.inf, np.float32), np.full((b, k), -1, np.int64)
    chunk = max(1, block_bytes // (4 * n))
    out_s, out_r = [], []
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for q0 in range(0, b, chunk):
            q_np = np.ascontiguousarray(queries[q0:q0 + chunk], dtype=np.float32)
            q = torch.from_numpy(q_np).to(vectors.device)
            scores = q @ vectors.T
            kth = torch.topk(scores, kk, dim=1).values[:, -1]
            tol = torch.from_numpy(rounding_tolerance(d, np.linalg.norm(q_np.astype(np.float64), axis=1), xmax))
            qi, rows = torch.nonzero(scores >= (kth.double() - tol.to(vectors.device)).float()[:, None],
                                     as_tuple=True)
            del scores
            exact = (q[qi].double() * vectors[rows].double()).sum(1).float()
            s, r = _finish(len(q_np), kk, k, qi.cpu().numpy(), rows.cpu().numpy().astype(np.int64),
                           exact.cpu().numpy())
            out_s.append(s)
            out_r.append(r)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    return np.concatenate(out_s), np.concatenate(out_r)


# -- FAISS --------------------------------------------------------------------------------------------------
def build_faiss_index(vectors: np.ndarray, kind: str, *, nlist: int = 64, nprobe: int = 8, hnsw_m: int = 32,
                      ef_search: int = 64, ef_construction: int = 40, seed: int = 1234) -> tuple[Any, dict]:
    """An inner-product FAISS index over ``vectors`` and the parameters it really got.

    exact -> IndexFlatIP; ivf -> IndexIVFFlat (nlist clamped to n // 39 so every list trains on >= 39
    points, as FAISS recommends; nprobe <= nlist); hnsw -> IndexHNSWFlat(M) with efConstruction/efSearch.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
        params: dict = {}
    elif kind == "ivf":
        eff = max(1, min(int(nlist), n // 39))
        if eff != nlist:
            warnings.warn(f"index.nlist={nlist} is too many lists for {n} rows; using {eff}", stacklevel=2)
        index = faiss.index_factory(d, f"IVF{eff},Flat", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = int(seed)
        index.train(vectors)
        params = {"nlist": eff, "nprobe": min(int(nprobe), eff), "seed": int(seed)}
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(ef_construction)
        params = {"hnsw_m": int(hnsw_m), "ef_construction": int(ef_construction), "ef_search": int(ef_search)}
    else:
        raise ValueError(f"index.kind={kind!r} is not one of exact, ivf, hnsw")
    if n:
        index.add(vectors)
    configure_faiss_index(index, kind, params)
    return index, params


def configure_faiss_index(index, kind: str, params: dict) -> None:
    """Apply search-time parameters (nprobe, efSearch) to a CPU index."""
    import faiss

    if kind == "ivf" and params.get("nprobe"):
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    elif kind == "hnsw" and params.get("ef_search"):
        faiss.downcast_index(index).hnsw.efSearch = int(params["ef_search"])


def faiss_vectors(index, kind: str) -> np.ndarray:
    """The float32 vectors stored in a flat / IVF-flat / HNSW-flat index, in row (id) order."""
    import faiss

    n = index.ntotal
    if kind == "exact":
        return faiss.rev_swig_ptr(faiss.downcast_index(index).get_xb(), n * index.d).reshape(n, index.d).copy()
    if kind == "hnsw":
        storage = faiss.downcast_index(faiss.downcast_index(index).storage)
        return storage.reconstruct_n(0, n)
    if kind == "ivf":
        ivf = faiss.extract_index_ivf(index)
        ivf.make_direct_map()
        return ivf.reconstruct_n(0, n)
    raise ValueError(f"unknown index kind {kind!r}")


def faiss_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), int(k))
    return scores.astype(np.float32, copy=False), rows.astype(np.int64, copy=False)
