"""The authors' released reward design, re-expressed in a few lines of our own, to measure against.

What the release does (facts from its public repository, not its code): one caption per call; encode the
caption; exact search as one ``matmul`` of the caption embedding with the whole gallery's text embeddings and a
``topk``; K = 3 (every released training script); the source image stays in the gallery (nothing excluded);
reward = sum_r 0.5^(r-1) cos(img_r, img_src) + ||mean(img_r)||_2 (beta = 1), returned as a bare float. It is
served one caption per HTTP request, and verl's reward manager sends one blocking request per response, in
sequence.

- :class:`ReleasedReward`: that design in-process, on any torch device. The maths is this project's own
  (:mod:`cim.reward.equations` with K=3, decay 0.5, beta 1), called for one caption at a time as the release
  does; what differs from :class:`cim.reward.scorer.Scorer` is the calling pattern (one encoder call, one
  full-gallery matmul and one topk per caption), which is what the measurements compare.
- :func:`released_http_rewards`: the release's HTTP pattern, one blocking request per caption in sequence,
  against a running ``cim serve`` (or any server speaking its ``POST /score``).

Used by perf/reward_vs_release.py and perf/gpu_check.py; not part of the product.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

RELEASED_K = 3
RELEASED_DECAY = 0.5
RELEASED_BETA = 1.0


class ReleasedReward:
    """``reward(caption, source_row) -> float``, one caption at a time, as released.

    ``text_table`` (N, Dt) and ``image_table`` (N, Di): L2-normalised gallery embeddings (numpy or torch; kept
    as given, so a float16 image table stays float16 and only the K retrieved rows are cast to float32);
    ``encode``: texts -> (n, Dt) float32 embeddings (a :class:`cim.encoders.TextEncoder`'s ``encode``).
    """

    def __init__(self, encode, text_table, image_table, *, device: str = "cpu", k: int = RELEASED_K):
        import torch

        self.torch, self.encode, self.k, self.device = torch, encode, k, device
        self.text = torch.as_tensor(text_table).to(device=device, dtype=torch.float32)
        self.images = torch.as_tensor(image_table).to(device)

    def top(self, caption: str, n: int):
        """The ``n`` best gallery rows for ``caption`` and their similarities (exact, whole gallery)."""
        torch = self.torch
        query = torch.as_tensor(self.encode([caption])).to(self.device, torch.float32)   # (1, Dt)
        values, rows = torch.topk(query @ self.text.T, n, dim=1)
        return rows[0], values[0]

    def __call__(self, caption: str, source_row: int) -> float:
        from cim.reward.equations import cim_reward, grc, qir

        top, _ = self.top(caption, self.k)
        retrieved = self.images[top].float()                                              # (K, Di)
        source = self.images[source_row].float()                                          # in the gallery
        g = grc(retrieved)
        q = qir(source, retrieved, decay=RELEASED_DECAY)
        return float(cim_reward(g, q, beta=RELEASED_BETA, mode="both"))                              # a bare float

    def score_serially(self, captions: Sequence[str], source_rows: Sequence[int]) -> list[float]:
        return [self(c, int(r)) for c, r in zip(captions, source_rows)]


def agreement(released: ReleasedReward, results: Sequence[dict], captions: Sequence[str],
              source_rows: Sequence[int], margin: float = 2e-4) -> dict:
    """Does the released design give this project's scorer's scores (``results``, scored with the same K)?

    Compared only where the ranking is clear: the K+1 best similarities at least ``margin`` apart and the
    source's own row not among them (the scorer ranks near-ties by rounded similarity, then row, and leaves
    the source out; the release takes topk's order and keeps it), so any difference there is a real one."""
    compared, diffs = 0, []
    for caption, row, result in zip(captions, source_rows, results):
        rows, sims = released.top(caption, released.k + 1)
        gaps = (sims[:-1] - sims[1:]).min().item()
        if gaps < margin or int(row) in rows.tolist():
            continue
        compared += 1
        diffs.append(abs(result["score"] - released(caption, int(row))))
    return {"compared": compared, "skipped_near_ties": len(results) - compared,
            "max_abs_diff": max(diffs) if diffs else None}


def released_http_rewards(url: str, captions: Sequence[str], image_ids: Sequence[str],
                          token: str | None = None, timeout_s: float = 120.0) -> list[float | None]:
    """One blocking ``POST /score`` per caption, in sequence (the release's reward manager)."""
    from cim.service.client import RewardClient

    out: list[float | None] = []
    with RewardClient(url, token=token, timeout_s=timeout_s, retries=0) as client:
        for caption, image_id in zip(captions, image_ids):
            out.append(client.score([{"caption": caption, "image_id": str(image_id)}])[0]["score"])
    return out


def random_unit_rows(n: int, dim: int, seed: int, dtype=np.float32, chunk: int = 65536) -> np.ndarray:
    """``n`` random L2-normalised rows, generated in chunks so a float16 table of 1M rows never exists in
    float32 whole; the same ``seed`` gives the same table in any process."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=dtype)
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + len(block)] = block
    return out
