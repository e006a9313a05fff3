"""How much does a caption's embedding (and its similarity to the corpus) move with the batch it is encoded in?

The reward must not depend on which other captions share a batch, yet a text encoder is not batch-invariant:
sentence-transformers sorts a batch by length and pads it, and BLAS picks other kernels for other shapes, so
the last bits of an embedding move. This script measures that noise for the embedded default (MiniLM on the
CPU) on the demo world's texts, and how often real top-K similarity gaps are that small:

- every probe caption is encoded alone (the reference) and inside batches of sizes 2 .. 512 of several
  compositions (shuffled, mixed short/long, long-only, short-only, copies of the probes), twice each, at each
  torch thread count given;
- ``max_abs_emb``: max |delta| over embedding coordinates; ``max_abs_sim``: max |delta| of the caption's
  similarity to every corpus text (what ranking sees); ``max_abs_gap``: max change of the gap between two
  corpus rows' similarities (what can reorder them), over the top ``--gap-k`` rows of each caption;
- ``gaps``: over the probe captions' top-(K+8) corpus hits, the share of consecutive similarity gaps below
  each candidate tolerance (how often a tie rule with that tolerance would override the encoder's order).

Prints JSON (and writes it with ``--out``). Numbers, not timings: machine load does not change them.

    python perf/encoder_batch_noise.py [--probes 48] [--threads 1 2] [--sizes 2 8 32 128 512]
                                       [--out perf/results/encoder_batch_noise.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below
from perf_report import emit, uptime  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SIZES = (2, 8, 32, 128, 512)
TOLERANCES = (1e-7, 1e-6, 1e-5, 1e-4)


def world_texts(root: Path, n_corpus: int) -> tuple[list[str], list[str]]:
    """Corpus texts and benchmark captions (4 quality levels) of a generated demo world."""
    from cim.config import load_config
    from cim.data.world import generate_world

    cfg = load_config(None, [f"world.out_dir={root}", f"world.n_corpus={n_corpus}", "world.n_train=10",
                             "world.n_bench=150", "world.image_size=32"])
    generate_world(cfg.world, progress=False)
    corpus = [json.loads(line)["text"] for line in open(root / "corpus.jsonl")]
    bench = [json.loads(line)["caption"] for line in open(root / "bench_captions.jsonl")]
    return corpus, bench


def batches(probes: list[str], pool: list[str], size: int, rng: np.random.Generator) -> dict[str, list[str]]:
    """Batches of ``size`` holding up to 16 probes at random places, the rest filled by several rules."""
    by_len = sorted(pool, key=len)
    k = min(size, 16, len(probes))
    chosen = [probes[i] for i in rng.choice(len(probes), k, replace=False)]
    n = size - k
    fillers = {
        "shuffled": list(rng.choice(pool, n, replace=False)) if n else [],
        "mixed_short_long": [by_len[i // 2] if i % 2 else by_len[-1 - i // 2] for i in range(n)],
        "long_only": by_len[::-1][:n],
        "short_only": by_len[:n],
        "probes_only": [chosen[i % k] for i in range(n)],          # copies of the probes themselves
    }
    out = {}
    for name, rest in fillers.items():
        batch = list(rest)
        for p in chosen:
            batch.insert(int(rng.integers(0, len(batch) + 1)), p)
        out[name] = batch
    return out


def measure(encoder, corpus_vecs: np.ndarray, probes: list[str], pool: list[str], gap_k: int,
            seed: int, sizes=SIZES, repeats: int = 2) -> dict:
    rng = np.random.default_rng(seed)
    alone = {p: encoder.encode([p])[0] for p in probes}
    top = {p: np.argsort(-(alone[p] @ corpus_vecs.T))[:gap_k] for p in probes}
    out: dict = {}
    worst = {"max_abs_emb": 0.0, "max_abs_sim": 0.0, "max_abs_gap": 0.0}
    for size in sizes:
        for _ in range(repeats):
            for name, batch in batches(probes, pool, size, rng).items():
                emb = encoder.encode(batch)
                cell = out.setdefault(name, {}).setdefault(
                    str(size), {"max_abs_emb": 0.0, "max_abs_sim": 0.0, "max_abs_gap": 0.0})
                for j, text in enumerate(batch):
                    if text not in alone:
                        continue
                    delta = emb[j] - alone[text]
                    d_sim_all = delta @ corpus_vecs.T                    # (N,)
                    d_top = d_sim_all[top[text]]
                    values = {"max_abs_emb": float(np.abs(delta).max()),
                              "max_abs_sim": float(np.abs(d_sim_all).max()),
                              "max_abs_gap": float(np.abs(d_top[:, None] - d_top[None, :]).max())}
                    for key, value in values.items():
                        cell[key] = max(cell[key], value)
                        worst[key] = max(worst[key], value)
    return {"by_composition_and_size": out, "worst": worst}


def gap_shares(encoder, corpus_vecs: np.ndarray, captions: list[str], k: int) -> dict:
    """Share of consecutive top-(k+8) similarity gaps below each tolerance, over ``captions``."""
    q = encoder.encode(captions)
    sims = q @ corpus_vecs.T
    top = -np.sort(-sims, axis=1)[:, : k + 8].astype(np.float64)
    gaps = (top[:, :-1] - top[:, 1:]).ravel()
    exact_dupes = float(np.mean(gaps == 0.0))
    return {"captions": len(captions), "gaps": int(gaps.size), "zero_gap_share": exact_dupes,
            "share_below": {f"{t:g}": float(np.mean(gaps < t)) for t in TOLERANCES},
            "min_nonzero_gap": float(gaps[gaps > 0].min()) if np.any(gaps > 0) else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--probes", type=int, default=48, help="captions measured alone vs in batches")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to measure")
    ap.add_argument("--corpus", type=int, default=3000, help="demo-world corpus size")
    ap.add_argument("--gap-k", type=int, default=10, help="top rows per caption whose pairwise gaps are checked")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="batch sizes")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()

    import torch

    from cim.config import load_config
    from cim.encoders import build_text_encoder

    with tempfile.TemporaryDirectory(prefix="cim-noise-") as tmp:
        corpus, bench = world_texts(Path(tmp) / "world", args.corpus)
    rng = np.random.default_rng(0)
    probes = [bench[i] for i in rng.choice(len(bench), min(args.probes, len(bench)), replace=False)]
    pool = corpus + bench
    encoder = build_text_encoder(load_config(None).encoders.text)
    result = {"script": "perf/encoder_batch_noise.py", "encoder": encoder.describe(),
              "machine": {"cpus": os.cpu_count(), "uptime_before": uptime()},
              "probes": len(probes), "corpus_rows": len(corpus), "batch_sizes": list(args.sizes), "threads": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        corpus_vecs = encoder.encode(corpus)
        result["threads"][str(threads)] = measure(encoder, corpus_vecs, probes, pool, args.gap_k, seed=threads,
                                                  sizes=args.sizes)
    torch.set_num_threads(args.threads[0])
    corpus_vecs = encoder.encode(corpus)
    result["gaps"] = gap_shares(encoder, corpus_vecs, bench, k=5)
    result["worst"] = {key: max(t["worst"][key] for t in result["threads"].values())
                       for key in ("max_abs_emb", "max_abs_sim", "max_abs_gap")}
    result["machine"]["uptime_after"] = uptime()
    emit(result, args.out)


if __name__ == "__main__":
    main()
