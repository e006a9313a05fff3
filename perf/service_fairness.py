"""Latency of small requests while one big request runs on the reward service; prints JSON.

    python perf/service_fairness.py [--big 2048] [--max-batch 256] [--small-clients 4] [--out FILE]

One in-process service (loopback, the real MiniLM text encoder on the CPU, a synthetic corpus of random unit
vectors: the encoder is the whole cost, and which rows are retrieved does not matter for scheduling) and two
batchers, measured in one run:

- ``whole``: ``max_batch`` >= the big request, so it is one scorer call (what the batcher did with every
  request above ``max_batch`` before requests were cut into pieces);
- ``pieces``: ``max_batch`` = ``--max-batch``: the big request is scored in pieces interleaved with the
  small requests.

For each: ``--small-clients`` clients send one-caption requests back to back from the moment the big request
is sent until it is answered; reported are their latency percentiles, how many they got through, and the big
request's own time (what fairness costs it). Also the small requests' latency with no big request (idle).
Run against main's code (``PYTHONPATH=<main>/src``) it measures the old behaviour for both variants.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time


def _scorer(corpus: int, threads: int):
    import numpy as np
    import torch

    from cim.config import load_config
    from cim.encoders import build_text_encoder
    from cim.index import CorpusIndex
    from cim.reward.scorer import Scorer

    torch.set_num_threads(threads)
    text = build_text_encoder(load_config(None, ["encoders.text.device=cpu"]).encoders.text)
    rng = np.random.default_rng(0)
    t = rng.standard_normal((corpus, text.dim)).astype(np.float32)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    img = rng.standard_normal((corpus, 64)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    index = CorpusIndex.from_arrays([f"c{i}" for i in range(corpus)], t, img.astype(np.float16))
    return Scorer(index, text, top_k=5)


def _captions(n: int, corpus: int, offset: int = 0) -> list[dict]:
    colours = ("red", "green", "blue", "yellow", "purple", "orange")
    shapes = ("circle", "square", "triangle", "star")
    return [{"caption": f"a {colours[i % 6]} {shapes[(i // 6) % 4]} next to {i % 7 + 1} small "
                        f"{shapes[(i // 24) % 4]}s on a {colours[(i // 3) % 6]} background",
             "image_id": f"c{(i + offset) % corpus}"} for i in range(n)]


def _percentiles(lat: list[float]) -> dict:
    if not lat:
        return {"n": 0}
    lat = sorted(lat)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else lat * 99
    return {"n": len(lat), "p50_ms": round(q[49] * 1e3, 1), "p90_ms": round(q[89] * 1e3, 1),
            "p99_ms": round(q[98] * 1e3, 1), "max_ms": round(lat[-1] * 1e3, 1)}


async def _small_loop(client, items, stop: asyncio.Event, out: list, limit: int | None = None) -> None:
    i = 0
    while not stop.is_set() and (limit is None or i < limit):
        t0 = time.perf_counter()
        await client.score([items[i % len(items)]])
        out.append(time.perf_counter() - t0)
        i += 1


async def _measure(url: str, big: list[dict], small: list[dict], clients: int, idle_requests: int) -> dict:
    from cim.service.client import AsyncRewardClient

    import inspect

    bounded = {"deadline_s": 3600} if "deadline_s" in inspect.signature(AsyncRewardClient).parameters else {}
    client = AsyncRewardClient(url, max_connections=clients + 2, retries=0, timeout_s=3600,
                               max_request_items=len(big), **bounded)
    try:
        idle: list[float] = []
        never = asyncio.Event()
        await asyncio.gather(*(_small_loop(client, small[c::clients], never, [], 2) for c in range(clients)))  # warm
        await asyncio.gather(*(_small_loop(client, small[c::clients], never, idle, idle_requests)
                               for c in range(clients)))
        loaded: list[float] = []
        stop = asyncio.Event()
        t0 = time.perf_counter()
        big_task = asyncio.ensure_future(client.score(big))
        big_task.add_done_callback(lambda _: stop.set())
        await asyncio.gather(*(_small_loop(client, small[c::clients], stop, loaded) for c in range(clients)))
        results = await big_task
        big_s = time.perf_counter() - t0
        assert len(results) == len(big) and all(r["error"] is None for r in results)
    finally:
        await client.aclose()
    return {"small_idle": _percentiles(idle), "small_during_big": _percentiles(loaded), "big_request_s": round(big_s, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--big", type=int, default=2048, help="captions in the big request")
    p.add_argument("--max-batch", type=int, default=256, help="max_batch of the 'pieces' variant")
    p.add_argument("--small-clients", type=int, default=4)
    p.add_argument("--idle-requests", type=int, default=10, help="small requests per client with no big one")
    p.add_argument("--corpus", type=int, default=2000, help="synthetic corpus rows")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared CPU)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    from cim.service.server import RewardService, ServerHandle, build_app

    load_before = [round(x, 2) for x in os.getloadavg()]
    scorer = _scorer(args.corpus, args.threads)
    big = _captions(args.big, args.corpus)
    small = _captions(64, args.corpus, offset=7)
    scorer.score(small[:8])                                      # warm the encoder
    report = {"benchmark": "service_fairness", "big_request_items": args.big, "small_clients": args.small_clients,
              "corpus_rows": args.corpus, "text_encoder": scorer.text_encoder.describe().get("model"),
              "torch_threads": args.threads, "variants": {}}
    for name, max_batch in (("whole", max(args.big, args.max_batch)), ("pieces", args.max_batch)):
        service = RewardService(scorer, max_batch=max_batch, window_s=0.005)
        with ServerHandle(build_app(service, max_request_items=args.big, max_request_bytes=64 << 20)) as handle:
            res = asyncio.run(_measure(handle.url, big, small, args.small_clients, args.idle_requests))
            res.update(max_batch=max_batch, scorer_batches=service.batcher.stats.batches,
                       largest_batch=service.batcher.stats.largest)
        report["variants"][name] = res
    w, pcs = report["variants"]["whole"], report["variants"]["pieces"]
    if w["small_during_big"].get("n") and pcs["small_during_big"].get("n"):
        report["p99_during_big_whole_over_pieces"] = round(
            w["small_during_big"]["p99_ms"] / pcs["small_during_big"]["p99_ms"], 1)
    report["big_request_pieces_over_whole"] = round(pcs["big_request_s"] / w["big_request_s"], 2)
    report["machine"] = {"cpus": os.cpu_count(), "load_avg_1_5_15_before": load_before,
                         "load_avg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
                         "python": platform.python_version(), "platform": platform.platform(),
                         "code": os.path.dirname(sys.modules["cim"].__file__)}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
