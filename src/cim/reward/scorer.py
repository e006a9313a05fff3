"""The CIM scorer: captions -> text embeddings -> top-K corpus rows -> image embeddings -> GRC, QIR, reward.

One text-encoder call and one search per batch. Per-item problems (empty or non-UTF-8 captions, unknown
image ids, unreadable images) become an ``error`` on that item; the rest of the batch is scored. Items and
results are :mod:`cim.reward.schema`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from cim.errors import ConfigError
from cim.reward.equations import cim_reward, grc, qir
from cim.reward.schema import RESULT_KEYS, RewardResult, caption_text, empty_result

# Longer captions are cut before tokenising: every encoder truncates far below this (MiniLM at 256 word
# pieces, MPNet at 384), so the cut only saves tokenizer time on pathological inputs.
MAX_CAPTION_CHARS = 20_000

# Text encoders are not batch-invariant: padding moves an embedding by ~1e-7, enough to swap two corpus texts
# whose similarities are (near-)tied at the top-K boundary, so a caption's reward would depend on its batch.
# The scorer therefore ranks by similarity rounded to SIMILARITY_DECIMALS, then by corpus row, over a few
# extra candidates (TIE_MARGIN). Only similarities straddling a rounding edge can still differ.
SIMILARITY_DECIMALS = 4
TIE_MARGIN = 4

__all__ = ["Scorer", "score_in_batches", "RESULT_KEYS", "MAX_CAPTION_CHARS"]


@dataclass
class _Prepared:
    position: int
    caption: str
    truncated: bool
    image_id: Optional[str] = None
    image_path: Optional[str] = None


def _rank_stably(scores: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray]:
    """Reorder each query's hits by (rounded similarity desc, row asc); missing hits (row -1) go last."""
    rounded = np.where(rows >= 0, np.round(scores.astype(np.float64), SIMILARITY_DECIMALS), -np.inf)
    order = np.lexsort((rows, -rounded), axis=-1)
    return (np.take_along_axis(rows, order, axis=-1),)


class Scorer:
    """Scores (caption, source image) pairs against a loaded :class:`cim.index.CorpusIndex`.

    ``image_encoder`` may be a callable returning the encoder, so it is only built when an item comes with
    an image path instead of an image id.
    """

    def __init__(self, index, text_encoder, image_encoder=None, *, top_k: int = 5, decay: float = 0.5,
                 beta: float = 1.0, mode: str = "both", exclude_source: bool = True):
        need = top_k + (1 if exclude_source else 0)
        if len(index.ids) < need:
            raise ConfigError(f"the corpus has {len(index.ids)} rows but reward.top_k={top_k} needs at least {need}"
                              + (" (one more: reward.exclude_source drops the source's own row)"
                                 if exclude_source else "") + "; lower reward.top_k or index a larger corpus")
        self.index, self.text_encoder = index, text_encoder
        self._image_encoder = image_encoder
        self._image_checked = False
        self.top_k, self.decay, self.beta, self.mode = top_k, decay, beta, mode
        self.exclude_source = exclude_source
        self.calls = 0  # number of batched scoring calls (observable batching)

    @classmethod
    def from_config(cls, cfg, index_dir: str | None = None, device: str | None = None,
                    text_encoder=None) -> "Scorer":
        """``text_encoder``: one already built from ``cfg.encoders.text`` (shared, not loaded twice)."""
        from cim.encoders import build_image_encoder, build_text_encoder
        from cim.index import CorpusIndex

        text_encoder = text_encoder or build_text_encoder(cfg.encoders.text)
        index = CorpusIndex.load(index_dir or cfg.index.out_dir, expect={"text": text_encoder.describe()},
                                 device=device or cfg.index.device, search_backend=cfg.index.search_backend)
        r = cfg.reward
        return cls(index, text_encoder, lambda: build_image_encoder(cfg.encoders.image), top_k=r.top_k,
                   decay=r.decay, beta=r.beta, mode=r.mode, exclude_source=r.exclude_source)

    # -- public -------------------------------------------------------------------------------------
    def score(self, items: Sequence[dict]) -> list[RewardResult]:
        """Score a batch; returns one :class:`~cim.reward.schema.RewardResult` per item, in order."""
        self.calls += 1
        results = [empty_result() for _ in items]
        prepared: list[_Prepared] = []
        for pos, item in enumerate(items):
            try:
                prepared.append(self._prepare(pos, item))
            except ValueError as exc:
                results[pos]["error"] = str(exc)
        sources = self._source_embeddings(prepared, results)
        prepared = [p for p in prepared if results[p.position]["error"] is None]
        if not prepared:
            return results
        queries = self.text_encoder.encode([p.caption for p in prepared])
        extra = 1 if self.exclude_source else 0
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32),
                                         self.top_k + extra + TIE_MARGIN)
        chosen, source_ranks = self._choose_rows(prepared, *_rank_stably(scores, rows))
        retrieved = torch.from_numpy(self.index.image_table[chosen.reshape(-1)].astype(np.float32))
        retrieved = retrieved.view(len(prepared), self.top_k, -1)
        src = torch.from_numpy(np.stack([sources[p.position] for p in prepared]))
        g = grc(retrieved)
        q = qir(src, retrieved, decay=self.decay)
        s = cim_reward(g, q, beta=self.beta, mode=self.mode)
        for i, p in enumerate(prepared):
            results[p.position].update(
                score=float(s[i]), grc=float(g[i]), qir=float(q[i]), truncated=p.truncated,
                retrieved=[self.index.ids[r] for r in chosen[i]], source_rank=source_ranks[i])
        return results

    # -- steps ----------------------------------------------------------------------------------------
    def _prepare(self, pos: int, item: dict) -> _Prepared:
        if not isinstance(item, dict):
            raise ValueError(f"item must be an object with 'caption' and 'image_id' or 'image', got {item!r:.80}")
        if "caption" not in item:
            raise ValueError("item has no 'caption'")
        caption = caption_text(item["caption"])
        truncated = len(caption) > MAX_CAPTION_CHARS
        caption = caption[:MAX_CAPTION_CHARS]
        image_id, image_path = item.get("image_id"), item.get("image")
        if image_id is None and image_path is None:
            raise ValueError("item needs 'image_id' or 'image'")
        return _Prepared(pos, caption, truncated,
                         str(image_id) if image_id is not None else None,
                         str(image_path) if image_id is None else None)

    def _source_embeddings(self, prepared: list[_Prepared], results: list[dict]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        by_id = [p for p in prepared if p.image_id is not None]
        if by_id:
            emb, found = self.index.source_embeddings([p.image_id for p in by_id])
            for p, e, ok in zip(by_id, emb, found):
                if ok:
                    out[p.position] = e
                else:
                    results[p.position]["error"] = f"unknown image_id {p.image_id!r} (no source embedding in the index)"
        by_path = [p for p in prepared if p.image_path is not None]
        if by_path:
            out.update(self._embed_paths(by_path, results))
        return out

    def _embed_paths(self, prepared: list[_Prepared], results: list[dict]) -> dict[int, np.ndarray]:
        from PIL import Image

        images, keep = [], []
        for p in prepared:
            try:
                with Image.open(p.image_path) as im:
                    images.append(im.convert("RGB"))
                keep.append(p)
            except (OSError, ValueError) as exc:
                results[p.position]["error"] = f"cannot read image {p.image_path!r}: {exc}"
        if not images:
            return {}
        encoder = self._checked_image_encoder()
        if encoder is None:
            for p in keep:
                results[p.position]["error"] = "no image encoder configured: pass image_id instead of image"
            return {}
        raw = encoder.encode(images)
        emb = self.index.transform_images(raw)
        return {p.position: e.astype(np.float32) for p, e in zip(keep, emb)}

    def _checked_image_encoder(self):
        """The image encoder (built on first use), checked once against the encoder the index was built with:
        an image embedded with other settings (weights, input size, dtype) lies in another space than the
        index's source embeddings and image table. Raises IndexMismatch."""
        if callable(self._image_encoder) and not hasattr(self._image_encoder, "encode"):
            self._image_encoder = self._image_encoder()
        encoder = self._image_encoder
        if encoder is not None and not self._image_checked:
            if (self.index.meta.get("encoders") or {}).get("image") and hasattr(encoder, "describe"):
                from cim.index.store import check_expected

                check_expected(self.index.meta, {"image": encoder.describe()}, self.index.path or "index")
            self._image_checked = True
        return encoder

    def _choose_rows(self, prepared: list[_Prepared], rows: np.ndarray) -> tuple[np.ndarray, list]:
        """Drop the source's own corpus row when excluding; record the rank it was found at (monitor)."""
        chosen = np.empty((len(prepared), self.top_k), dtype=np.int64)
        ranks: list[Optional[int]] = []
        row_of = self.index.row_of
        for i, p in enumerate(prepared):
            own = row_of.get(p.image_id) if p.image_id is not None else None
            hits = [int(r) for r in rows[i] if r >= 0]
            ranks.append(hits.index(own) + 1 if own is not None and own in hits else None)
            if self.exclude_source and own is not None:
                hits = [r for r in hits if r != own]
            if len(hits) < self.top_k:
                raise RuntimeError(f"search returned {len(hits)} rows, fewer than top_k={self.top_k}")
            chosen[i] = hits[: self.top_k]
        return chosen, ranks


def score_in_batches(scorer: "Scorer", items: Sequence[dict], batch_size: int, progress: bool = False,
                     desc: str = "scoring") -> list[RewardResult]:
    """``scorer.score`` over ``items`` in chunks of ``batch_size`` (``reward.batch_size``): one encoder call
    and one search per chunk, results in input order. ``progress`` shows a bar over captions."""
    if batch_size < 1:
        raise ConfigError(f"reward.batch_size must be >= 1, got {batch_size}")
    from tqdm.auto import tqdm

    out: list[RewardResult] = []
    with tqdm(total=len(items), desc=desc, unit="caption", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            out.extend(scorer.score(chunk))
            bar.update(len(chunk))
    return out
