"""The audit as one library call: :func:`run_audit`.

Steps: pick the captions (a seeded sample of the manifest's corpus texts, each with its own image as the
source; or of a ``--captions`` file), parse them and the donor texts with spaCy, make the pairs
(:mod:`cim.audit.perturb`), score originals and copies with the batched scorer (:func:`cim.reward.scorer.
score_in_batches`: the configured reward, the source excluded from retrieval exactly as in training),
measure (:mod:`cim.audit.measure`) and write the report (:mod:`cim.audit.report`).

Manifests are streamed twice (count, then keep the sampled and donor rows), so a million-row manifest
costs memory only for what is audited.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from cim.audit.measure import components as components_of, summarise, value
from cim.audit.donors import DonorPool, SourceKey
from cim.audit.perturb import Pair, caption_seed, make_pairs, parse
from cim.audit.report import verdicts, warnings, write
from cim.audit.settings import AuditConfig, describe, resolve
from cim.errors import InputError
from cim.io import atomic_open, read_jsonl

__all__ = ["run_audit", "Original", "select_corpus", "select_captions", "build_pairs", "score_pairs",
           "report_from"]


@dataclass
class Original:
    """A caption to audit: its key (corpus id, or the captions row's id / line), text and source image (by
    ``image_id`` or by ``image`` path; ``src`` keeps its rows out of the donors)."""

    key: str
    text: str
    image_id: Optional[str]
    image: Optional[str]
    src: SourceKey

    def item(self, caption: str) -> dict:
        return {"caption": caption, "image_id": self.image_id} if self.image_id is not None else \
            {"caption": caption, "image": self.image}


# -- reading ------------------------------------------------------------------------------------------------------
def _count_rows(path: Path) -> int:
    n = 0
    with open(path, "rb") as fh:
        for raw in fh:
            n += bool(raw.strip())
    return n


def _order(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng([int(seed), 0xA0D1]).permutation(n)


def _rows_at(path: Path, positions: Iterable[int], required: Sequence[str]) -> dict[int, dict]:
    """The rows at ``positions`` (0-based among non-blank lines), image paths resolved against the file's
    folder, each checked for ``required`` keys."""
    want = set(int(p) for p in positions)
    folder = Path(os.path.abspath(path)).parent
    out: dict[int, dict] = {}
    for pos, (lineno, row) in enumerate(read_jsonl(path)):
        if pos not in want:
            continue
        missing = [k for k in required if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            raise InputError(f"{path}:{lineno}: missing or empty {', '.join(missing)}")
        if isinstance(row.get("image"), str):
            row["image"] = os.path.normpath(os.path.join(folder, row["image"]))
        out[pos] = row
    return out


def _row_group(index, keys: np.ndarray, corpus_id: str) -> int:
    row = index.row_of.get(corpus_id)
    return -1 if row is None else int(keys[row])


def _digest_group(index, path: str) -> int:
    from cim.index.identity import file_digest

    try:
        return index.identity.group_of_digest(file_digest(path))
    except OSError:
        return -1


def _donor_rows(index, keys: np.ndarray, rows: dict[int, dict], positions) -> list[dict]:
    return [dict(rows[int(p)], group=_row_group(index, keys, rows[int(p)]["id"])) for p in positions]


def select_corpus(index, manifest: str | Path, sample: int, donors: int, seed: int
                  ) -> tuple[list[Original], list[dict], dict]:
    """The audited corpus rows (``sample`` of them in a seeded order, 0: all) with their own images as
    sources, the donor rows (the first ``max(sample, donors)`` of the same order; ``sample=None``: donors
    only) and counts.

    A row whose id names a corpus row of the index that shows the same image (checked by content, the
    index's image identity) is scored by id (its embedding is in the index, and the scorer excludes
    every row of that image); any other row is scored by its image path (embedded on the fly, excluded by
    the file's hash)."""
    from cim.index.identity import file_digest, row_keys

    manifest = Path(manifest)
    n = _count_rows(manifest)
    if n == 0:
        raise InputError(f"{manifest}: no rows")
    order = _order(n, seed)
    k = 0 if sample is None else n if sample == 0 else min(sample, n)
    chosen, donor_pos = order[:k], order[:max(k, min(donors, n))]
    rows = _rows_at(manifest, donor_pos, ("id", "image", "text"))
    keys = row_keys(index)
    identity = index.identity
    originals, counts = [], {"by_id": 0, "by_path": 0}
    for pos in chosen:
        row = rows[int(pos)]
        group = _row_group(index, keys, row["id"])
        by_id = row["id"] in index.row_of
        if by_id and len(identity.digests):         # (an in-memory index knows no bytes: its ids are trusted)
            try:
                by_id = bytes(identity.digests[group]) == file_digest(row["image"])
            except OSError:
                pass                    # the file moved: the index's own embedding of the row still holds
        if by_id:
            originals.append(Original(row["id"], row["text"], row["id"], None, SourceKey(group, row["image"])))
        else:
            originals.append(Original(row["id"], row["text"], None, row["image"],
                                      SourceKey(_digest_group(index, row["image"]), row["image"])))
        counts["by_id" if by_id else "by_path"] += 1
    return originals, _donor_rows(index, keys, rows, donor_pos), {"available": n, **counts}


def select_captions(index, captions, sample: int, seed: int) -> tuple[list[Original], dict]:
    """The audited rows of a caption file (the caption-file format, :mod:`cim.captions`: ``caption`` and
    ``image_id`` or ``image``, optional ``id`` label) or list of such dicts: ``sample`` of them in a seeded
    order (0: all)."""
    from cim.captions import read_lines, row_problem
    from cim.index.identity import source_keys

    if isinstance(captions, (str, Path)):
        rows = []
        for row in read_lines(captions):
            if "_error" in row and not row["_error"].endswith("is blank"):
                raise InputError(f"{captions}: {row['_error']}")
            if "_error" not in row:
                rows.append(row)
    else:
        rows = [dict(r) for r in captions]
    if not rows:
        raise InputError("the captions to audit are empty")
    order = _order(len(rows), seed)
    k = len(rows) if sample == 0 else min(sample, len(rows))
    originals, counts = [], {"by_id": 0, "by_path": 0}
    for pos in order[:k]:
        row = rows[int(pos)]
        key = str(row.get("id", f"line{int(pos) + 1}"))
        where = f"captions line {row['_line']}" if "_line" in row else f"captions row {int(pos) + 1}"
        problem = row_problem(row)
        if problem is not None:
            raise InputError(f"{where}: {problem}")
        if not isinstance(row.get("caption"), str) or not row["caption"].strip():
            raise InputError(f"{where}: no caption")
        if row.get("image_id") is not None:
            sid = str(row["image_id"])
            group = int(source_keys(index, [sid], [None])[0])
            originals.append(Original(key, row["caption"], sid, None, SourceKey(group, None)))
            counts["by_id"] += 1
        elif row.get("image") is not None:
            image = str(row["image"])
            originals.append(Original(key, row["caption"], None, image,
                                      SourceKey(_digest_group(index, image), os.path.normpath(image))))
            counts["by_path"] += 1
    return originals, {"available": len(rows), **counts}


# -- pairs and scores ---------------------------------------------------------------------------------------------
def build_pairs(originals: Sequence[Original], donor_rows: Sequence[dict], options: AuditConfig
                ) -> tuple[list[list[Pair]], DonorPool, dict]:
    """Parse every text once, build the donor pool, make each caption's pairs."""
    texts = list(dict.fromkeys([o.text for o in originals] + [r["text"] for r in donor_rows]))
    started = time.perf_counter()
    docs = dict(zip(texts, parse(texts, options.spacy_model)))
    parsed = time.perf_counter()
    pool = DonorPool([r["id"] for r in donor_rows], [r["text"] for r in donor_rows],
                     [docs[r["text"]] for r in donor_rows], [r.get("group", -1) for r in donor_rows],
                     [r.get("image") for r in donor_rows])
    pairs = [make_pairs(docs[o.text], caption_seed(options.seed, o.key, o.text), pool, o.src, options.kinds)
             for o in originals]
    return pairs, pool, {"parse_s": parsed - started, "perturb_s": time.perf_counter() - parsed,
                         "parsed_texts": len(texts)}


def score_pairs(scorer, originals: Sequence[Original], pairs: Sequence[Sequence[Pair]], batch_size: int,
                progress: bool = False) -> tuple[list[dict], list[list[dict]]]:
    """Score every original and every copy (one batched pass, caption-major order); returns the originals'
    results and, per caption, its pairs' results."""
    from cim.reward.scorer import score_in_batches

    items, shares = [], []
    for o, ps in zip(originals, pairs):
        items.append(o.item(o.text))
        items += [o.item(p.text) for p in ps]
        shares += [1 / (1 + len(ps))] * (1 + len(ps))     # the bar counts captions audited, not texts scored
    # scored in order of length (then text): batches of like lengths pad little, and equal texts (repeated
    # corpus captions, their equal copies) share a batch, where the scorer encodes each distinct text once
    order = sorted(range(len(items)), key=lambda i: (len(items[i]["caption"]), items[i]["caption"], i))
    ordered = score_in_batches(scorer, [items[i] for i in order], batch_size, progress=progress,
                               desc="audit (captions, with their copies)", shares=[shares[i] for i in order])
    results: list = [None] * len(items)
    for i, res in zip(order, ordered):
        results[i] = res
    it = iter(results)
    firsts, rest = [], []
    for ps in pairs:
        firsts.append(next(it))
        rest.append([next(it) for _ in ps])
    return firsts, rest


def audit_settings(scorer, options: AuditConfig, source: str, counts: dict, n_pairs: int, failed: dict,
              pool_size: int, spacy_version: str) -> dict:
    meta = scorer.index.meta or {}
    enc = meta.get("encoders") or {}
    return {
        "source": source, **{f"captions_{k}" if k == "available" else f"sources_{k}": v for k, v in counts.items()},
        **describe(options), "donor_rows": pool_size, "pairs": n_pairs, "failed": failed,
        "spacy": spacy_version, "corpus_rows": len(scorer.index.ids),
        "reward": scorer.settings(),
        "encoders": {"text": (enc.get("text") or {}).get("model"), "image": (enc.get("image") or {}).get("model"),
                     "center_images": bool((meta.get("centering") or {}).get("enabled"))},
    }


def report_from(originals, pairs, first, rest, options: AuditConfig, settings: dict) -> tuple[dict, list[dict]]:
    """The report (``components``, ``n``, ``settings``, ``verdicts``, ``warnings``, ``examples``) and the
    rows of ``pairs.jsonl`` from scored pairs. Captions whose original failed to score are left out."""
    comps = components_of(list(settings["reward"].get("guards") or ()))
    pair_caption, pair_kind, deltas = [], [], {c: [] for c in comps}
    rows, examples = [], {}
    failed = {"captions": 0, "pairs": 0}
    n = 0
    for o, ps, r0, rs in zip(originals, pairs, first, rest):
        if r0["error"] is not None:
            failed["captions"] += 1
            continue
        rows.append({"id": o.key, "kind": "original", "text": o.text,
                     **{c: round(value(r0, c), 6) for c in comps}})
        for p, r in zip(ps, rs):
            if r["error"] is not None:
                failed["pairs"] += 1
                continue
            pair_caption.append(n)
            pair_kind.append(p.kind)
            d = {c: value(r0, c) - value(r, c) for c in comps}
            for c in comps:
                deltas[c].append(d[c])
            rows.append({"id": o.key, "kind": p.kind, "axis": p.axis, "text": p.text, "donor": p.donor,
                         **{c: round(value(r, c), 6) for c in comps},
                         **{f"delta_{c}": round(d[c], 6) for c in comps}})
            examples.setdefault(p.kind, {"id": o.key, "original": o.text, "text": p.text})
        n += 1
    settings = dict(settings, failed=failed, pairs=len(pair_kind))
    components = summarise(np.array(pair_caption, dtype=np.int64), pair_kind,
                           {c: np.array(v, dtype=np.float64) for c, v in deltas.items()}, n,
                           kinds=options.kinds, tie_within=options.tie_within, bootstrap=options.bootstrap,
                           seed=options.seed)
    report = {"components": components, "n": n, "settings": settings}
    report["verdicts"] = verdicts(components, settings["reward"]["mode"])
    report["warnings"] = warnings(components, settings)
    report["examples"] = {k: examples[k] for k in options.kinds if k in examples}
    return report, rows


def _spacy_version(model: str) -> str:
    from cim.eval.parsers.spacy_rules import load_spacy

    meta = load_spacy(model).meta
    return f"{meta.get('lang', '?')}_{meta.get('name', model)}-{meta.get('version', '?')}"


# -- the one call -------------------------------------------------------------------------------------------------
def run_audit(cfg, *, index_dir: str | Path | None = None, manifest: str | Path | None = None,
              captions=None, out_dir: str | Path | None = None, sample: int | None = None,
              progress: bool = True, scorer=None, **options) -> dict:
    """Audit the configured reward on a corpus: does it score a caption above its less detailed, its false
    and its hacked copies? Writes ``audit.json``, ``audit.md``, ``audit.png`` (and ``pairs.jsonl``) to
    ``out_dir`` and returns the report.

    - ``cfg``: the configuration (``reward.*``, ``encoders.*``, ``index.*``; ``cfg.audit`` when it has one,
      :class:`cim.audit.settings.AuditConfig`);
    - ``index_dir``: the corpus index (default ``index.out_dir``); ``scorer``: a ready
      :class:`cim.reward.scorer.Scorer` instead (its index, K, β, mode and exclusion are what is audited);
    - ``manifest``: the corpus manifest (default ``index.manifest``): the texts audited (each with its own
      image as the source) and the donors every swap and concatenation draws from;
    - ``captions``: audit these instead of corpus texts: a jsonl path or a list of dicts with ``caption``
      and ``image_id`` (an index source or corpus id) or ``image`` (a path), optional ``id``;
    - ``sample``: how many captions (seeded; 0: all; default ``audit.sample``, 3,000);
    - ``options``: any other :class:`AuditConfig` field (``seed``, ``bootstrap``, ``donors``, ``kinds``,
      ``tie_within``, ``spacy_model``, ``write_pairs``).

    The report: ``components`` (``score``/``grc``/``qir`` -> ``detail``/``precision`` (each with ``kinds``)
    and ``hacks`` -> kind -> ``rate``, ``ci95``, ``margin``, ``ties``, ``wins``, ``pairs``, ``captions``;
    with guard terms, ``reward.guards``, the composed ``score``, ``upsilon`` (the paper's Υ), ``grc``,
    ``qir`` and ``guard_<name>`` each, :func:`cim.audit.measure.components`),
    ``n`` (captions audited), ``settings``, ``verdicts`` (one line per component), ``warnings``,
    ``examples`` (one pair per kind), ``runtime`` (seconds, captions and texts per second) and ``files``.
    """
    from cim.reward.scorer import Scorer

    started = time.perf_counter()
    opts = resolve(cfg, sample=sample, **options)
    out = Path(out_dir or opts.out_dir)
    if scorer is None:
        scorer = Scorer.from_config(cfg, index_dir=str(index_dir) if index_dir else None)
    index = scorer.index
    manifest = Path(manifest or cfg.index.manifest)
    if captions is None:
        originals, donor_rows, counts = select_corpus(index, manifest, opts.sample, opts.donors, opts.seed)
        source = "corpus texts, each with its own image as the source"
    else:
        originals, counts = select_captions(index, captions, opts.sample, opts.seed)
        _, donor_rows, _ = select_corpus(index, manifest, None, opts.donors, opts.seed)
        source = "captions file"
    loaded = time.perf_counter()
    pairs, pool, timing = build_pairs(originals, donor_rows, opts)
    built = time.perf_counter()
    first, rest = score_pairs(scorer, originals, pairs, int(cfg.reward.batch_size), progress=progress)
    scored = time.perf_counter()
    settings = audit_settings(scorer, opts, source, counts, 0, {}, len(pool), _spacy_version(opts.spacy_model))
    report, rows = report_from(originals, pairs, first, rest, opts, settings)
    files = write(report, out)
    if opts.write_pairs:
        with atomic_open(out / "pairs.jsonl") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        files["pairs"] = out / "pairs.jsonl"
    done = time.perf_counter()
    texts = len(originals) + sum(len(p) for p in pairs)
    report["runtime"] = {"total_s": round(done - started, 2), "load_s": round(loaded - started, 2),
                         "parse_s": round(timing["parse_s"], 2), "perturb_s": round(timing["perturb_s"], 2),
                         "pairs_s": round(built - loaded, 2), "score_s": round(scored - built, 2),
                         "report_s": round(done - scored, 2), "texts_scored": texts,
                         "texts_per_s": round(texts / max(scored - built, 1e-9), 1),
                         "captions_per_s": round(len(originals) / max(done - started, 1e-9), 2)}
    report["files"] = {k: str(v) for k, v in files.items()}
    return report
