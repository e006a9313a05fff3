"""This project's batched reward vs the authors' released design, side by side in one run; prints one JSON.

Same text encoder (the embedded MiniLM, on the CPU), same corpus per size: random L2-normalised tables of the
embedded default's dims (text 384-d float32, image 1280-d float16 as the index stores it), 10k / 100k / 1M
rows; the same captions (demo-world-like sentences) with random source rows. Per corpus size:

- ``encoder_only``: the text encoder's own batched rate over all captions (the limit for any reward path);
- ``scorer``: :class:`cim.reward.scorer.Scorer` over a :meth:`CorpusIndex.from_arrays` index (exact search,
  batches of ``reward.batch_size``), with K = 3 as released and the project's ``exclude_source`` default;
- ``released``: :class:`released_design.ReleasedReward`, one caption at a time (encode, full-gallery matmul,
  topk, K = 3, source left in the gallery, a bare float);
- each path's share of the encoder-only rate, and scorer / released;
- for ``--http-sizes``: the reward service (``cim serve``'s server: RewardService + build_app + aiohttp, in a
  child process over the same seeded corpus, since ``cim serve`` itself loads an index folder) on loopback,
  driven three ways: the release's pattern (one blocking request per caption, in sequence), this project's
  client batching (all captions in one ``RewardClient.score`` call), and concurrent one-caption requests
  batched by the service (how verl 0.9.1's reward workers call it).

Bytes per corpus row and the process's peak RSS are reported; so are the machine's load (`uptime`) before and
after, since other processes share its CPUs. Targets (for the scale work, reported, not asserted): the scorer
at >= 90 % of the encoder-only rate at 100k rows and >= 80 % at 1M rows; >= 3x the released design through HTTP.

    python perf/reward_vs_release.py [--sizes 10000 100000 1000000] [--http-sizes 10000 100000]
        [--captions 300] [--threads 2] [--repeats 3] [--out perf/results/reward_vs_release.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules below
from perf_report import emit, uptime  # noqa: E402

TEXT_DIM, IMAGE_DIM = 384, 1280       # MiniLM text, EfficientNet-Lite0 image: the embedded default
TARGETS = {"scorer_share_100k": 0.90, "scorer_share_1m": 0.80, "http_speedup_vs_released": 3.0}


def _env_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def corpus(rows: int, seed: int):
    """``(ids, text (N, 384) float32, image (N, 1280) float16)``, the same for the same (rows, seed)."""
    from released_design import random_unit_rows
    import numpy as np

    ids = [f"r{i}" for i in range(rows)]
    return ids, random_unit_rows(rows, TEXT_DIM, seed), random_unit_rows(rows, IMAGE_DIM, seed + 1, np.float16)


def text_encoder():
    from cim.config import load_config
    from cim.encoders import build_text_encoder

    cfg = load_config(None, ["encoders.text.device=cpu"])
    return build_text_encoder(cfg.encoders.text), cfg


def build_scorer(ids, text, image, encoder, exclude_source: bool):
    from cim.index import CorpusIndex
    from cim.reward.scorer import Scorer
    from released_design import RELEASED_BETA, RELEASED_DECAY, RELEASED_K

    index = CorpusIndex.from_arrays(ids, text, image)
    return Scorer(index, encoder, top_k=RELEASED_K, decay=RELEASED_DECAY, beta=RELEASED_BETA, mode="both",
                  exclude_source=exclude_source)


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls (after the caller's warm-up)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def workload(n_captions: int, rows: int, seed: int):
    import numpy as np
    from reward_throughput import captions

    texts = captions(n_captions, seed=seed)
    source_rows = np.random.default_rng(seed + 2).integers(0, rows, n_captions)
    items = [{"caption": c, "image_id": f"r{r}"} for c, r in zip(texts, source_rows)]
    return texts, [int(r) for r in source_rows], items


def in_process(rows: int, args, encoder, cfg) -> dict:
    from cim.reward.scorer import score_in_batches
    from released_design import ReleasedReward, agreement

    t0 = time.perf_counter()
    ids, text, image = corpus(rows, args.seed)
    made_s = time.perf_counter() - t0
    texts, source_rows, items = workload(args.captions, rows, args.seed)
    scorer = build_scorer(ids, text, image, encoder, args.exclude_source)
    released = ReleasedReward(encoder.encode, text, image)
    warm = slice(0, 8)
    encoder.encode(texts[warm])
    score_in_batches(scorer, items[warm], cfg.reward.batch_size)
    released.score_serially(texts[warm], source_rows[warm])

    n = len(texts)
    enc_s = timed(lambda: encoder.encode(texts), args.repeats)
    scorer_s = timed(lambda: score_in_batches(scorer, items, cfg.reward.batch_size), args.repeats)
    rel_n = min(n, args.released_captions or n)
    rel_s = timed(lambda: released.score_serially(texts[:rel_n], source_rows[:rel_n]), max(1, args.repeats - 1))
    ours = scorer.score(items[:16])
    enc_rate, scorer_rate, rel_rate = n / enc_s, n / scorer_s, rel_n / rel_s
    return {
        "rows": rows, "corpus_generated_s": round(made_s, 1),
        "bytes": {"text_fp32_per_row": TEXT_DIM * 4, "image_fp16_per_row": IMAGE_DIM * 2,
                  "tables_total": int(text.nbytes + image.nbytes), "ids_list_estimate": int(rows * 60)},
        "captions": n,
        "encoder_only_captions_per_s": round(enc_rate, 1),
        "scorer_captions_per_s": round(scorer_rate, 1),
        "released_captions_per_s": round(rel_rate, 1),
        "released_timed_captions": rel_n,
        "scorer_share_of_encoder": round(scorer_rate / enc_rate, 3),
        "released_share_of_encoder": round(rel_rate / enc_rate, 3),
        "scorer_over_released": round(scorer_rate / rel_rate, 2),
        "agreement_with_released": agreement(released, ours, texts[:len(ours)], source_rows[:len(ours)]),
    }


# -- HTTP ----------------------------------------------------------------------------------------------------
def serve(args) -> None:
    """Child process: the reward service over the seeded corpus of ``args.rows`` rows (blocks)."""
    import torch

    from cim.service.server import RewardService, build_app, serve_forever

    torch.set_num_threads(args.threads)
    encoder, cfg = text_encoder()
    ids, text, image = corpus(args.rows, args.seed)
    scorer = build_scorer(ids, text, image, encoder, args.exclude_source)
    service = RewardService(scorer, max_batch=cfg.train.service.max_batch,
                            window_s=cfg.train.service.batch_window_ms / 1e3)
    serve_forever(build_app(service, max_request_items=cfg.train.service.max_request_items), "127.0.0.1", args.port)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def through_http(rows: int, args) -> dict:
    import asyncio

    from cim.service.client import AsyncRewardClient, RewardClient
    from released_design import released_http_rewards

    port = _free_port()
    cmd = [sys.executable, __file__, "serve", "--rows", str(rows), "--port", str(port), "--seed", str(args.seed),
           "--threads", str(args.threads)] + (["--include-source"] if not args.exclude_source else [])
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        with RewardClient(url, timeout_s=600, retries=0) as client:
            try:
                client.wait_ready(timeout_s=900)
            except Exception:
                child.kill()
                raise SystemExit(f"the service child did not start: {child.communicate()[1][-3000:]}")
            startup_s = time.perf_counter() - t0
            texts, _, items = workload(args.captions, rows, args.seed)
            client.score(items[:8])                                   # warm
            n = len(items)
            rel_n = min(n, args.released_captions or n)
            ids = [it["image_id"] for it in items]
            rel_s = timed(lambda: released_http_rewards(url, texts[:rel_n], ids[:rel_n]), max(1, args.repeats - 1))
            batched_s = timed(lambda: client.score(items), args.repeats)

            async def concurrent() -> None:
                c = AsyncRewardClient(url, timeout_s=600, retries=0, max_connections=64)
                try:
                    await asyncio.gather(*(c.score([it]) for it in items))
                finally:
                    await c.aclose()

            concurrent_s = timed(lambda: asyncio.run(concurrent()), args.repeats)
            batching = client.health().get("batching", {})
    finally:
        child.terminate()
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
    rel_rate = rel_n / rel_s
    return {"rows": rows, "service_startup_s": round(startup_s, 1), "captions": n,
            "released_serial_requests_captions_per_s": round(rel_rate, 1),
            "released_timed_captions": rel_n,
            "client_batched_captions_per_s": round(n / batched_s, 1),
            "concurrent_single_requests_captions_per_s": round(n / concurrent_s, 1),
            "client_batched_over_released": round(n / batched_s / rel_rate, 2),
            "concurrent_over_released": round(n / concurrent_s / rel_rate, 2),
            "service_batching_stats": {k: v for k, v in batching.items() if k != "recent_batches"},
            "note": "both patterns hit this project's server (the release's FastAPI server is not run); the "
                    "client and the service share the machine's CPUs"}


def _targets(sizes: dict, http: dict) -> dict:
    def share(rows):
        return sizes.get(str(rows), {}).get("scorer_share_of_encoder")

    best_http = max((h["client_batched_over_released"] for h in http.values()), default=None)
    out = {}
    for key, rows in (("scorer_share_100k", 100_000), ("scorer_share_1m", 1_000_000)):
        value = share(rows)
        out[key] = {"target": TARGETS[key], "value": value, "met": None if value is None else value >= TARGETS[key]}
    out["http_speedup_vs_released"] = {"target": TARGETS["http_speedup_vs_released"], "value": best_http,
                                       "per_size": {k: h["client_batched_over_released"] for k, h in http.items()},
                                       "met": None if best_http is None else best_http >= TARGETS[
                                           "http_speedup_vs_released"]}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", nargs="?", default="measure", choices=("measure", "serve"),
                    help="serve: the HTTP child (internal)")
    ap.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--http-sizes", type=int, nargs="*", default=[10_000, 100_000])
    ap.add_argument("--captions", type=int, default=300)
    ap.add_argument("--released-captions", type=int, default=0,
                    help="time the released design on this many captions only (0: all); rates stay per caption")
    ap.add_argument("--threads", type=int, default=2, help="torch / BLAS threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--include-source", dest="exclude_source", action="store_false",
                    help="scorer: keep the source's own row (the release's setting); default: the project's "
                         "reward.exclude_source=true")
    ap.add_argument("--rows", type=int, default=10_000, help="serve: corpus rows")
    ap.add_argument("--port", type=int, default=0, help="serve: port")
    ap.add_argument("--out", help="write the JSON here too (e.g. perf/results/reward_vs_release.json)")
    args = ap.parse_args(argv)
    _env_threads(args.threads)
    if args.mode == "serve":
        serve(args)
        return

    import torch

    torch.set_num_threads(args.threads)
    load_before = uptime()
    encoder, cfg = text_encoder()
    result: dict = {
        "script": "perf/reward_vs_release.py", "argv": sys.argv[1:],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "uptime_before": load_before},
        "settings": {"threads": args.threads, "captions": args.captions, "repeats": args.repeats, "k": 3,
                     "decay": 0.5, "beta": 1.0, "scorer_exclude_source": args.exclude_source,
                     "released_source_in_gallery": True, "search": "exact (scorer: cim exact_topk; released: "
                     "torch matmul + topk)", "text_encoder": encoder.describe(), "dims": {"text": TEXT_DIM,
                     "image": IMAGE_DIM}, "image_table_dtype": "float16", "reward_batch_size": cfg.reward.batch_size},
        "sizes": {}, "http": {},
    }
    for rows in args.sizes:
        result["sizes"][str(rows)] = in_process(rows, args, encoder, cfg)
        print(json.dumps({"done": f"in-process {rows}", **result["sizes"][str(rows)]}), file=sys.stderr)
    for rows in args.http_sizes:
        result["http"][str(rows)] = through_http(rows, args)
        print(json.dumps({"done": f"http {rows}", **result["http"][str(rows)]}), file=sys.stderr)
    result["targets"] = _targets(result["sizes"], result["http"])
    result["reference_issue_measurement"] = {
        "3k_rows": {"released": 113, "scorer": 201, "ratio": 1.8},
        "100k_rows": {"released": 64, "scorer": 142, "ratio": 2.2, "scorer_share_of_encoder": 0.67}}
    result["machine"]["uptime_after"] = uptime()
    result["machine"]["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    emit(result, args.out)


if __name__ == "__main__":
    main()
