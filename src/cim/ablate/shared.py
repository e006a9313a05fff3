"""What the variants of an ablation share: encoders (one per setting), the corpus index of each text x image
encoder pair, and the corpus subsets of the scale axis.

Nothing is encoded twice: the index at ``index.out_dir`` serves every pair it was built with; the others
come from new builds under ``<work>/index/`` (resumable shards, :func:`cim.index.build_index`), one build per
encoder missing from what exists, pairing missing text and image encoders, and every other pair is
combined from the text side of one index and the image side of another (:mod:`cim.index.views`).
A subset reuses its full index's embeddings.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from itertools import zip_longest
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["Shared", "fingerprint", "slug"]


def _key(fields: dict) -> str:
    return json.dumps(fields, sort_keys=True, default=str)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60]


def fingerprint(index) -> str:
    """sha256 of an index's rows, text vectors and image table (what a variant's result is a function of)."""
    from cim.index.store import sha256_array

    h = hashlib.sha256(json.dumps(index.ids).encode())
    for arr in (index.text_vectors(), index.image_table, index.sources_emb):
        h.update(sha256_array(arr).encode())
    return h.hexdigest()


class Shared:
    def __init__(self, base_cfg, work: Path, progress: bool = True):
        self.base_cfg, self.work, self.progress = base_cfg, Path(work), progress
        self._text: dict[str, object] = {}
        self._image: dict[str, object] = {}
        self._indexes: list = []            # (text describe key, image describe key, CorpusIndex)
        self._pairs: dict[tuple, object] = {}
        self._subsets: dict[tuple, object] = {}

    # -- encoders ------------------------------------------------------------------------------------
    def text_encoder(self, cfg):
        from cim.encoders import build_text_encoder

        key = _key(dict(cfg.encoders.text))
        if key not in self._text:
            self._text[key] = build_text_encoder(cfg.encoders.text)
        return self._text[key]

    def image_encoder(self, cfg):
        from cim.encoders import build_image_encoder

        key = _key(dict(cfg.encoders.image))
        if key not in self._image:
            self._image[key] = build_image_encoder(cfg.encoders.image)
        return self._image[key]

    def sides(self, cfg) -> tuple[str, str]:
        return _key(self.text_encoder(cfg).describe()), _key(self.image_encoder(cfg).describe())

    # -- indexes -------------------------------------------------------------------------------------
    def _load(self, path) -> None:
        from cim.index import CorpusIndex

        c = self.base_cfg
        index = CorpusIndex.load(path, device=c.index.device, search_backend=c.index.search_backend)
        enc = index.meta.get("encoders", {})
        self._indexes.append((_key(enc.get("text")), _key(enc.get("image")), index))

    def prepare(self, cfgs) -> None:
        """Load the configured index and build, for every encoder no loaded index has, one index with it."""
        base_dir = Path(self.base_cfg.index.out_dir)
        if not self._indexes and (base_dir / "meta.json").is_file():
            self._load(base_dir)
        for built in sorted((self.work / "index").glob("*/meta.json")):
            if built.parent not in {i[2].path for i in self._indexes}:
                self._load(built.parent)
        have_t, have_i = {t for t, _, _ in self._indexes}, {i for _, i, _ in self._indexes}
        need_t, need_i = {}, {}
        for cfg in cfgs:
            t, i = self.sides(cfg)
            if t not in have_t:
                need_t.setdefault(t, cfg)
            if i not in have_i:
                need_i.setdefault(i, cfg)
        base = cfgs[0]
        for tcfg, icfg in zip_longest(need_t.values(), need_i.values()):
            tcfg, icfg = tcfg or base, icfg or base
            self._build(tcfg, icfg)

    def _build(self, tcfg, icfg) -> None:
        from cim.index import build_index

        te, ie = self.text_encoder(tcfg), self.image_encoder(icfg)
        out = self.work / "index" / f"{slug(te.describe().get('model', 'text'))}+{slug(ie.describe().get('model', 'image'))}"
        log.info("ablate: building the index %s (encoders no existing index has)", out)
        c = self.base_cfg
        build_index(c, c.index.manifest, out, c.index.sources or None, progress=self.progress, encoders=(te, ie))
        self._load(out)

    def index(self, cfg):
        """The full-corpus index of ``cfg``'s encoders (call :meth:`prepare` with every config first)."""
        from cim.errors import ConfigError
        from cim.index.views import combine_index

        t, i = self.sides(cfg)
        if (t, i) not in self._pairs:
            exact = [ix for tt, ii, ix in self._indexes if (tt, ii) == (t, i)]
            if exact:
                self._pairs[(t, i)] = exact[0]
            else:
                text = [ix for tt, _, ix in self._indexes if tt == t]
                image = [ix for _, ii, ix in self._indexes if ii == i]
                if not text or not image:
                    raise ConfigError("ablate: no index holds these encoders (prepare() was not given this config)")
                self._pairs[(t, i)] = combine_index(text[0], image[0])
        return self._pairs[(t, i)]

    def subset(self, cfg, share: float | None, train_ids, seed: int, shares):
        """The nested subset of share ``share`` among ``shares`` (None: the full index)."""
        from cim.ablate.subsets import nested_subsets, training_rows
        from cim.index.views import subset_index

        full = self.index(cfg)
        if share is None:
            return full
        key = (id(full), share)
        if key not in self._subsets:
            ordered = sorted(shares)
            rows = nested_subsets(len(full.ids), training_rows(full, train_ids), ordered, seed)
            for s, r in zip(ordered, rows):
                self._subsets[(id(full), s)] = full if len(r) == len(full.ids) else subset_index(full, r)
        return self._subsets[key]
