"""Captions/s of CAPTURE on CPU: parse (offline spaCy parser) + match (exact -> WordNet -> SBERT soft), printed
as JSON.

Candidates are real dense captions when ``--references`` names SC-Captioner's COCO-LN500 references file
(``test_cocoln_500_gt.json`` from the SC-Captioner release; each scored against another image's reference,
so every matching stage has work), else generated sentences. Three timings over
the same n pairs, each from a cold scorer (no parse cache):

- ``parse``: scene-graph parsing of the distinct captions (captions/s counts captions parsed);
- ``match_hard``: filtering + exact + WordNet stages only (graphs already parsed);
- ``end_to_end``: parse + all three stages with the MiniLM text encoder (the offline default), the number
  to quote: candidate captions scored per second.

    python perf/eval_throughput.py [--n 200] [--references .../test_cocoln_500_gt.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pairs(n: int, references: Path | None = None) -> tuple[dict, dict, str]:
    if references is not None:
        refs = json.loads(references.read_text())
        ids = sorted(refs)[:n]
        return ({k: [refs[k]] for k in ids}, {k: [refs[ids[(i + 1) % len(ids)]]] for i, k in enumerate(ids)},
                "COCO-LN500 references (candidate = the next image's reference)")
    colours, shapes = "red green blue yellow".split(), "cat dog car tree bench lamp".split()
    make = lambda i: (f"A {colours[i % 4]} {shapes[i % 6]} sits next to a small {colours[(i + 1) % 4]} "  # noqa: E731
                      f"{shapes[(i + 2) % 6]} on a wooden table. The sky is clear and blue.")
    return ({str(i): [make(i)] for i in range(n)}, {str(i): [make(i + 1)] for i in range(n)}, "generated sentences")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="candidate captions (each with one reference)")
    ap.add_argument("--references", type=Path, help="SC-Captioner references JSON {id: caption} "
                    "(default: generated sentences)")
    args = ap.parse_args()

    import torch

    from cim.config import TextEncoderConfig
    from cim.encoders import build_text_encoder
    from cim.eval.capture import Capture
    from cim.eval.parsers import SpacyParser
    from cim.eval.wordnet import ensure_wordnet, lemma_names

    gts, res, source = pairs(args.n, args.references)
    texts = sorted({c for v in res.values() for c in v} | {r for v in gts.values() for r in v})
    words = sum(len(t.split()) for t in texts) / len(texts)

    t0 = time.perf_counter()
    parser = SpacyParser()
    parser.parse("warm up.")
    ensure_wordnet()
    lemma_names("dog")
    encoder = build_text_encoder(TextEncoderConfig(device="cpu"))
    encoder.encode(["warm up"])
    load_s = time.perf_counter() - t0

    cap = Capture(parser, None)
    t0 = time.perf_counter()
    cap.graphs(texts)
    parse_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hard = cap.compute_score(gts, res)
    hard_s = time.perf_counter() - t0

    full = Capture(SpacyParser(), encoder)
    t0 = time.perf_counter()
    result = full.compute_score(gts, res)
    e2e_s = time.perf_counter() - t0

    print(json.dumps({
        "benchmark": "eval_throughput", "metric": "CAPTURE", "device": "cpu",
        "cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "parser": parser.name, "text_encoder": full.embeddings.name, "captions": source,
        "n_candidates": len(res), "n_distinct_captions_parsed": len(texts), "mean_words_per_caption": round(words, 1),
        "load_s": round(load_s, 2),
        "parse": {"seconds": round(parse_s, 3), "captions_per_s": round(len(texts) / parse_s, 1)},
        "match_hard": {"seconds": round(hard_s, 3), "candidates_per_s": round(len(res) / hard_s, 1)},
        "end_to_end": {"seconds": round(e2e_s, 3), "candidates_per_s": round(len(res) / e2e_s, 2),
                       "captions_parsed_per_s": round(len(texts) / e2e_s, 2),
                       "encoder_calls": full.embeddings.encode_calls},
        "capture_score": round(result.score, 4), "capture_without_soft": round(hard.score, 4),
    }, indent=2))


if __name__ == "__main__":
    main()
