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

from cim.config.schema import RewardConfig
from cim.errors import ConfigError
from cim.reward.equations import cim_reward, grc, qir
from cim.reward.guards import compose
from cim.reward.guards import evaluate as evaluate_guards
from cim.index.identity import file_digest, row_keys, source_keys
from cim.reward.schema import RESULT_KEYS, CaptionError, RewardResult, caption_text, empty_result
from cim.reward.settings import reward_settings

# Longer captions are cut before tokenising: every encoder truncates far below this (MiniLM at 256 word
# pieces, MPNet at 384), so the cut only saves tokenizer time on pathological inputs.
MAX_CAPTION_CHARS = 20_000

# Text encoders are not batch-invariant: padding and kernel choice move a caption's similarities by up to
# ~1e-7 with the batch it is encoded in (MiniLM, CPU, fp32: perf/encoder_batch_noise.py), enough to swap two
# corpus texts that are (near-)tied, so a caption's reward would depend on its batch. The scorer therefore
# orders hits by similarity, but similarities within ``tie_tolerance`` of their neighbour in that order form
# one tie (chained), ordered by corpus row. The tolerance is a few times the measured noise: any larger and
# genuinely better matches lose their rank to a lower row (the default, ``reward.tie_tolerance``, is the
# schema's). A tie that reaches the last fetched candidate is searched again with twice as many candidates,
# so no member is cut off by the search depth.
TIE_MARGIN = 4
_DEFAULT = RewardConfig()        # a Scorer's keyword defaults are the schema's (reward.*), never restated here

__all__ = ["Scorer", "score_in_batches", "order_with_ties", "RESULT_KEYS", "MAX_CAPTION_CHARS"]


@dataclass
class _Prepared:
    position: int
    caption: str
    truncated: bool
    image_id: Optional[str] = None
    image_path: Optional[str] = None
    digest: Optional[bytes] = None      # sha256 of the image file (image-path items): its image key


def order_with_ties(scores: np.ndarray, rows: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Reorder each query's hits: by similarity, except that a run of similarities each within ``tolerance``
    of the next is one tie, ordered by row. Missing hits (row -1) go last.

    Returns ``(rows, tie)``: the reordered rows and, per position, the number of its tie (0, 1, ...), so
    that ``tie[:, -1] == tie[:, j]`` says position j's tie may continue past the fetched hits.
    """
    s = np.where(rows >= 0, scores.astype(np.float64), -np.inf)
    by_score = np.argsort(-s, axis=-1, kind="stable")
    s, r = np.take_along_axis(s, by_score, -1), np.take_along_axis(rows, by_score, -1)
    with np.errstate(invalid="ignore"):
        gaps = s[:, :-1] - s[:, 1:]                         # -inf - -inf is nan: a break below
    breaks = ~(gaps <= tolerance) | (r[:, 1:] < 0)
    tie = np.concatenate([np.zeros((len(s), 1), np.int64), np.cumsum(breaks, axis=-1)], axis=-1)
    order = np.lexsort((np.where(r >= 0, r, np.iinfo(np.int64).max), tie), axis=-1)
    return np.take_along_axis(r, order, -1), np.take_along_axis(tie, order, -1)


class Scorer:
    """Scores (caption, source image) pairs against a loaded :class:`cim.index.CorpusIndex`.

    ``score`` is the paper's Υ (``upsilon``) plus the weighted ``guards`` (:mod:`cim.reward.guards`; none by
    default, when ``score == upsilon``); ``aggregate`` is recorded for the trainers (GDPO normalises the terms).

    ``image_encoder`` may be a callable returning the encoder, so it is only built when an item comes with
    an image path instead of an image id. With ``exclude_source``, every corpus row that shows the source
    image (by content, :mod:`cim.index.identity`) is left out of its retrieval.
    """

    def __init__(self, index, text_encoder, image_encoder=None, *, top_k: int = _DEFAULT.top_k,
                 decay: float = _DEFAULT.decay, beta: float = _DEFAULT.beta, mode: str = _DEFAULT.mode,
                 exclude_source: bool = _DEFAULT.exclude_source, tie_tolerance: float = _DEFAULT.tie_tolerance,
                 guards: Sequence = (), aggregate: str = _DEFAULT.aggregate):
        self.row_keys = row_keys(index)
        self.dropped_max = int(np.bincount(self.row_keys).max()) if exclude_source and len(self.row_keys) else 0
        need = top_k + self.dropped_max
        if len(index.ids) < need:
            raise ConfigError(f"the corpus has {len(index.ids)} rows but reward.top_k={top_k} needs at least {need}"
                              + (f" ({self.dropped_max} more: reward.exclude_source drops the source image's rows)"
                                 if exclude_source else "") + "; lower reward.top_k or index a larger corpus")
        if not tie_tolerance >= 0:
            raise ConfigError(f"reward.tie_tolerance must be >= 0, got {tie_tolerance}")
        self.index, self.text_encoder = index, text_encoder
        self._image_encoder = image_encoder
        self._image_checked = False
        self.top_k, self.decay, self.beta, self.mode = top_k, decay, beta, mode
        self.exclude_source, self.tie_tolerance = exclude_source, float(tie_tolerance)
        self.guards, self.aggregate = list(guards), str(aggregate)   # cim.reward.guards (built), sum | gdpo
        self.calls = 0  # number of batched scoring calls (observable batching)
        self.searches = 0  # index searches (more than calls only when a tie reached the search depth)

    def settings(self) -> dict:
        """What this scorer scores with (:func:`cim.reward.settings.reward_settings`): every report's ``reward``."""
        return reward_settings(self)

    @classmethod
    def from_config(cls, cfg, index_dir: str | None = None, device: str | None = None,
                    text_encoder=None) -> "Scorer":
        """``text_encoder``: one already built from ``cfg.encoders.text`` (shared, not loaded twice)."""
        from cim.encoders import build_image_encoder, build_text_encoder
        from cim.index import CorpusIndex

        from cim.reward.guards import CorpusTexts, build_guards, check_guards

        check_guards(cfg.reward)                # a bad guard name or weight before any model loads
        text_encoder = text_encoder or build_text_encoder(cfg.encoders.text)
        index = CorpusIndex.load(index_dir or cfg.index.out_dir, expect={"text": text_encoder.describe()},
                                 device=device or cfg.index.device, search_backend=cfg.index.search_backend)
        settings = {k: v for k, v in reward_settings(cfg.reward).items() if k not in ("guards", "aggregate")}
        return cls(index, text_encoder, lambda: build_image_encoder(cfg.encoders.image), **settings,
                   guards=build_guards(cfg.reward, CorpusTexts.of_index(index)), aggregate=cfg.reward.aggregate)

    # -- public -------------------------------------------------------------------------------------
    def score(self, items: Sequence[dict]) -> list[RewardResult]:
        """Score a batch; returns one :class:`~cim.reward.schema.RewardResult` per item, in order."""
        self.calls += 1
        results = [empty_result() for _ in items]
        prepared: list[_Prepared] = []
        for pos, item in enumerate(items):
            try:
                p = self._prepare(pos, item)
                if self.guards:             # cheap, and a guard that fails fails this item alone
                    results[pos]["guards"] = evaluate_guards(self.guards, p.caption)
                prepared.append(p)
            except ValueError as exc:
                results[pos].update(error=str(exc), error_kind="caption" if isinstance(exc, CaptionError) else "item",
                                    guards={})
        sources = self._source_embeddings(prepared, results)
        prepared = [p for p in prepared if results[p.position]["error"] is None]
        for r in results:
            if r["error"] is not None:
                r["guards"] = {}
        if not prepared:
            return results
        queries = self._encode_once([p.caption for p in prepared])
        own = source_keys(self.index, [p.image_id for p in prepared], [p.digest for p in prepared])
        chosen, source_ranks = self._retrieve(queries, own)
        retrieved = torch.from_numpy(self.index.image_table[chosen.reshape(-1)].astype(np.float32))
        retrieved = retrieved.view(len(prepared), self.top_k, -1)
        src = torch.from_numpy(np.stack([sources[p.position] for p in prepared]))
        g = grc(retrieved)
        q = qir(src, retrieved, decay=self.decay)
        s = cim_reward(g, q, beta=self.beta, mode=self.mode)
        for i, p in enumerate(prepared):
            upsilon = float(s[i])
            score = compose(upsilon, results[p.position]["guards"], self.guards) if self.guards else upsilon
            results[p.position].update(
                score=score, upsilon=upsilon, grc=float(g[i]), qir=float(q[i]), truncated=p.truncated,
                retrieved=[self.index.ids[r] for r in chosen[i]], source_rank=source_ranks[i])
        return results

    # -- steps ----------------------------------------------------------------------------------------
    def _encode_once(self, captions: list[str]) -> np.ndarray:
        """Caption embeddings, each distinct caption encoded once (GRPO groups repeat captions)."""
        first: dict[str, int] = {}
        where = [first.setdefault(c, len(first)) for c in captions]
        unique = np.ascontiguousarray(self.text_encoder.encode(list(first)), dtype=np.float32)
        return unique if len(first) == len(captions) else np.ascontiguousarray(unique[where])

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
                    results[p.position].update(error=f"unknown image_id {p.image_id!r} (no source embedding in the "
                                                     "index)", error_kind="item")
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
                p.digest = file_digest(p.image_path)
                keep.append(p)
            except (OSError, ValueError) as exc:
                results[p.position].update(error=f"cannot read image {p.image_path!r}: {exc}", error_kind="item")
        if not images:
            return {}
        encoder = self._checked_image_encoder()
        if encoder is None:
            for p in keep:
                results[p.position].update(error="no image encoder configured: pass image_id instead of image",
                                           error_kind="item")
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

    def _retrieve(self, queries: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, list]:
        """The top-K rows of each query (ties by row, the source image's rows dropped when excluding) and
        the rank (1..K) at which the source image was found among the K hits before dropping, else None."""
        n = len(self.index.ids)
        chosen = np.empty((len(queries), self.top_k), dtype=np.int64)
        ranks: list[Optional[int]] = [None] * len(queries)
        pending, k = np.arange(len(queries)), min(n, self.top_k + self.dropped_max + TIE_MARGIN)
        while len(pending):
            self.searches += 1
            scores, rows = self.index.search(queries[pending], k)
            ordered, tie = order_with_ties(scores, rows, self.tie_tolerance)
            again = []
            for j, i in enumerate(pending):
                valid = ordered[j] >= 0
                mine = valid & (self.row_keys[np.maximum(ordered[j], 0)] == own[i]) & (own[i] >= 0)
                keep = np.flatnonzero(valid & ~mine) if self.exclude_source else np.flatnonzero(valid)
                last = keep[self.top_k - 1] if len(keep) >= self.top_k else None
                if k < n and (last is None or (valid[-1] and tie[j, last] == tie[j, -1])):
                    again.append(i)          # too few rows left, or the last tie may go on past the depth
                    continue
                if last is None:
                    raise RuntimeError(f"search returned {len(keep)} usable rows, fewer than top_k={self.top_k}")
                chosen[i] = ordered[j][keep[: self.top_k]]
                found = np.flatnonzero(mine[: self.top_k])
                ranks[i] = int(found[0]) + 1 if len(found) else None
            pending, k = np.array(again, dtype=np.int64), min(n, 2 * k)
        return chosen, ranks


def score_in_batches(scorer: "Scorer", items: Sequence[dict], batch_size: int, progress: bool = False,
                     desc: str = "scoring", shares: Sequence[float] | None = None) -> list[RewardResult]:
    """``scorer.score`` over ``items`` in chunks of ``batch_size`` (``reward.batch_size``): one encoder call
    and one search per chunk, results in input order. ``progress`` shows a bar over captions: one per item,
    or, with ``shares`` (each item's share of a caption, e.g. 1/3 for an original scored with two copies),
    over the captions those items make up."""
    if batch_size < 1:
        raise ConfigError(f"reward.batch_size must be >= 1, got {batch_size}")
    from tqdm.auto import tqdm

    total = len(items) if shares is None else round(sum(shares))
    out: list[RewardResult] = []
    done = 0.0
    with tqdm(total=total, desc=desc, unit="caption", disable=not progress) as bar:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            out.extend(scorer.score(chunk))
            done += len(chunk) if shares is None else sum(shares[start:start + batch_size])
            bar.update(min(total, round(done)) - bar.n)
    return out
