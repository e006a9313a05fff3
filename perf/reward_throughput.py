"""Captions/s of batched vs per-caption CIM scoring at corpus sizes 1k, 10k, 100k (CPU), in one run.

Two measurements per corpus size, both through the real ``Scorer`` and ``CorpusIndex`` (exact search):
- ``end_to_end``: with the real MiniLM text encoder (the embedded default) encoding every caption;
- ``retrieval_reward``: the part after the text encoder (search, gather, GRC/QIR) with caption embeddings
  computed once beforehand, to show what batching does to the index path alone.
Corpus rows are random unit vectors (text 384-d as MiniLM, image 1280-d as EfficientNet-Lite0, fp16 table);
captions are demo-world-like sentences. Also: bytes of memory per corpus row. Prints JSON.
Each pass runs with a given torch/BLAS thread count: on a 2-core machine that other processes share, 2 threads
make small batches up to 10x slower (spinning worker threads), which inflates the batched/per-caption ratio.

    python perf/reward_throughput.py [--sizes 1000 10000 100000] [--batch 512] [--single 48]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    colours = "red green blue yellow purple orange black white".split()
    shapes = "circle square triangle star heart ring cross diamond".split()
    textures = "striped dotted checkered solid".split()
    out = []
    for _ in range(n):
        a, b = rng.choice(colours, 2), rng.choice(shapes, 2)
        out.append(f"A large {a[0]} {rng.choice(textures)} {b[0]} is to the left of a small {a[1]} {b[1]} "
                   f"on a {rng.choice(['grassy', 'sandy', 'brick', 'plain'])} background.")
    return out


class PrecomputedText:
    """Returns embeddings computed beforehand by the real encoder (isolates the post-encoder path)."""

    def __init__(self, texts, emb):
        self.table = dict(zip(texts, emb))
        self.dim = emb.shape[1]

    def encode(self, texts):
        return np.stack([self.table[t] for t in texts])


def rate(fn, n_items: int, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_items / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--batch", type=int, default=512, help="captions in the batched measurement")
    parser.add_argument("--single", type=int, default=48, help="captions scored one call each")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch and BLAS thread counts to measure (each a separate pass)")
    args = parser.parse_args()
    import torch
    from threadpoolctl import threadpool_limits

    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "threads": {}}
    for threads in args.threads:
        torch.set_num_threads(threads)
        with threadpool_limits(limits=threads):
            report["threads"][str(threads)] = measure(args)
    print(json.dumps(report, indent=1))


def measure(args) -> dict:

    from cim.config import TextEncoderConfig
    from cim.encoders import build_text_encoder
    from cim.index import CorpusIndex
    from cim.reward.scorer import Scorer

    encoder = build_text_encoder(TextEncoderConfig())
    caps = captions(args.batch)
    emb = encoder.encode(caps)
    pre = PrecomputedText(caps, emb)
    rng = np.random.default_rng(0)
    report = {"text_encoder": encoder.describe().get("model", "all-MiniLM-L6-v2"), "sizes": {}}
    for n in args.sizes:
        text = rng.standard_normal((n, 384)).astype(np.float32)
        text /= np.linalg.norm(text, axis=1, keepdims=True)
        image = rng.standard_normal((n, 1280)).astype(np.float32)
        image /= np.linalg.norm(image, axis=1, keepdims=True)
        ids = [f"c{i}" for i in range(n)]
        index = CorpusIndex.from_arrays(ids, text, image.astype(np.float16))
        items = [{"caption": c, "image_id": ids[i % n]} for i, c in enumerate(caps)]
        single = items[: args.single]
        row = {"bytes_per_row": {
            "image_table_fp16": index.image_table.nbytes / n,
            "text_vectors_fp32": index.text_vectors().nbytes / n,
            "total_arrays": (index.image_table.nbytes + index.text_vectors().nbytes) / n}}
        for label, text_encoder in (("end_to_end", encoder), ("retrieval_reward", pre)):
            scorer = Scorer(index, text_encoder)
            scorer.score(items[:8])  # warm-up
            batched = rate(lambda: scorer.score(items), len(items), repeats=2)
            per_caption = rate(lambda: [scorer.score([it]) for it in single], len(single))
            row[label] = {"batched_captions_per_s": round(batched, 1),
                          "per_caption_captions_per_s": round(per_caption, 1),
                          "speedup": round(batched / per_caption, 1)}
        report["sizes"][str(n)] = row
        print(json.dumps({n: row}), flush=True)
    return report


if __name__ == "__main__":
    main()
