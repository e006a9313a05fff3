"""What changes GRC's detail signal? The audit's detail and precision rates under one factor at a time.
Prints JSON (a measurement, not a pass/fail test); ``--out`` writes it too.

Factors, each against the embedded default (MiniLM + EfficientNet-Lite0 at ``encoders.image.image_size``,
K = 5, raw image embeddings, the whole corpus):

- ``index.center_images`` = true: an index built with centred image embeddings (the default index's shards
  are copied, so only the sources not in the corpus are embedded again);
- ``reward.top_k`` = 3, 10;
- the image encoder EfficientNet-Lite2 (an index built with it; the same text vectors);
- corpus scale: nested subsets (``cim.ablate.subsets``: every row showing a training image, plus 0 / 10 / 30 /
  100 % of the others, seed 0). Only captions whose rows are in every subset can be audited with their own
  image as the source, so this factor audits the training rows' captions (400 on the demo world), and its
  100 % row is their baseline.

Every variant audits the same captions with the same pairs (``cim.audit``: detail and precision kinds, no
hacks), and the caption embeddings are computed once and shared (a caching wrapper around the text
encoder), so variants differ only in the factor.

    PYTHONPATH=src HF_HUB_OFFLINE=1 .venv/bin/python perf/audit_factors.py --out perf/results/audit_factors.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from cim.audit.run import build_pairs, report_from, score_pairs, select_corpus, audit_settings
from cim.audit.settings import DETAIL, PRECISION, resolve
from cim.config import load_config, with_overrides


class CachingText:
    """A text encoder that embeds each distinct text once per process (variants then differ only in the
    factor, not in the encoder's batch noise)."""

    def __init__(self, encoder):
        self.encoder, self.cache, self.encoded = encoder, {}, 0

    def describe(self):
        return self.encoder.describe()

    def encode(self, texts):
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if todo:
            for t, v in zip(todo, self.encoder.encode(todo)):
                self.cache[t] = np.asarray(v, dtype=np.float32)
            self.encoded += len(todo)
        return np.stack([self.cache[t] for t in texts])


def build(cfg, manifest, out: Path, sources, encoders, copy_shards_from: Path | None = None) -> Path:
    from cim.index import build_index

    if (out / "meta.json").is_file():
        return out
    if copy_shards_from is not None and not (out / "shards").exists():
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(copy_shards_from / "shards", out / "shards")
    return build_index(cfg, manifest, out, sources, progress=False, encoders=encoders)


def cells(report: dict) -> dict:
    out = {"n": report["n"], "pairs": report["settings"]["pairs"]}
    for comp in ("grc", "qir", "score"):
        for axis in ("detail", "precision"):
            cell = report["components"][comp][axis]
            out[f"{comp}.{axis}"] = {"rate": cell["rate"], "ci95": cell["ci95"], "margin": cell["margin"],
                                     "ties": cell["ties"]}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--index", default=None, help="the default index (index.out_dir)")
    p.add_argument("--manifest", default=None, help="index.manifest")
    p.add_argument("--work", default="data/ablations/audit-factors", help="indexes built here (git-ignored)")
    p.add_argument("--sample", type=int, default=3000)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--scale", default="0,0.1,0.3,1")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from cim.ablate.subsets import nested_subsets, training_rows
    from cim.data.manifest import read_manifest
    from cim.encoders import build_image_encoder, build_text_encoder
    from cim.index import CorpusIndex
    from cim.index.views import subset_index
    from cim.reward.scorer import Scorer

    t0 = time.perf_counter()
    cfg = load_config(args.params, [])
    base_dir = Path(args.index or cfg.index.out_dir)
    manifest = Path(args.manifest or cfg.index.manifest)
    work = Path(args.work)
    text_real = build_text_encoder(cfg.encoders.text)
    text = CachingText(text_real)
    opts = resolve(cfg, sample=args.sample, bootstrap=args.bootstrap, kinds=list(DETAIL + PRECISION))

    # the indexes of the factors
    timing = {}
    t = time.perf_counter()
    c_cfg = with_overrides(cfg, ["index.center_images=true"])
    centred_dir = build(c_cfg, manifest, work / "index-centred", cfg.index.sources,
                        (text_real, build_image_encoder(cfg.encoders.image)), copy_shards_from=base_dir)
    timing["build_centred_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    l2_cfg = with_overrides(cfg, ["encoders.image.model=efficientnet-lite2"])
    lite2_dir = build(l2_cfg, manifest, work / "index-lite2", cfg.index.sources,
                      (text_real, build_image_encoder(l2_cfg.encoders.image)))
    timing["build_lite2_s"] = round(time.perf_counter() - t, 1)
    load = lambda d: CorpusIndex.load(d, device="cpu")  # noqa: E731
    base, centred, lite2 = load(base_dir), load(centred_dir), load(lite2_dir)

    # the captions and their pairs, once
    t = time.perf_counter()
    originals, donors, counts = select_corpus(base, manifest, opts.sample, opts.donors, opts.seed)
    pairs, pool, _ = build_pairs(originals, donors, opts)
    timing["pairs_s"] = round(time.perf_counter() - t, 1)
    train_ids = [r["id"] for r in read_manifest(cfg.train.manifest, require_text=False)]
    keep = training_rows(base, train_ids)
    kept_ids = {base.ids[r] for r in keep}
    train_sel = [i for i, o in enumerate(originals) if o.key in kept_ids]

    r = cfg.reward

    def audit(index, top_k=r.top_k, which=None):
        chosen = range(len(originals)) if which is None else which
        origs, prs = [originals[i] for i in chosen], [pairs[i] for i in chosen]
        scorer = Scorer(index, text, top_k=top_k, decay=r.decay, beta=r.beta, mode=r.mode,
                        exclude_source=r.exclude_source, tie_tolerance=r.tie_tolerance)
        first, rest = score_pairs(scorer, origs, prs, int(r.batch_size))
        settings = audit_settings(scorer, opts, "corpus", counts, 0, {}, len(pool), "")
        report, _ = report_from(origs, prs, first, rest, opts, settings)
        return cells(report)

    rows = []
    t = time.perf_counter()
    rows.append({"factor": "baseline", "value": "lite0, K=5, raw, 3000 rows", **audit(base)})
    timing["baseline_s"] = round(time.perf_counter() - t, 1)     # includes embedding every caption once
    t = time.perf_counter()
    rows.append({"factor": "index.center_images", "value": True, **audit(centred)})
    for k in (3, 10):
        rows.append({"factor": "reward.top_k", "value": k, **audit(base, top_k=k)})
    rows.append({"factor": "encoders.image", "value": "efficientnet-lite2", **audit(lite2)})
    shares = sorted(float(s) for s in args.scale.split(","))
    for share, sub in zip(shares, nested_subsets(len(base.ids), keep, shares, seed=0)):
        rows.append({"factor": "corpus scale (training-row captions)", "value": f"{len(sub)} rows ({share:.0%})",
                     **audit(subset_index(base, sub), which=train_sel)})
    timing["variants_s"] = round(time.perf_counter() - t, 1)
    timing["total_s"] = round(time.perf_counter() - t0, 1)
    result = {"what": "cim.audit detail and precision rates (original beats its copy, ties half; 95% bootstrap "
                      "intervals over captions) per factor, one at a time, against the embedded default",
              "settings": {"sample": opts.sample, "captions": len(originals), "training_row_captions":
                           len(train_sel), "kinds": opts.kinds, "seed": opts.seed, "bootstrap": opts.bootstrap,
                           "text_encoder": cfg.encoders.text.model, "image_size": cfg.encoders.image.image_size,
                           "texts_embedded": text.encoded},
              "rows": rows, "timing": timing, "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    text_out = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text_out + "\n")
    print(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
