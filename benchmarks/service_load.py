"""Load test of the reward service on loopback: N concurrent clients x M requests each; prints JSON.

    python benchmarks/service_load.py [--params params.yaml] [--clients 16] [--requests 1000] [key=value ...]

Starts ``python -m cim.service`` in a child process (or targets ``--url``), takes a reference answer for
every distinct (caption, image_id) pair, then runs the clients: each request carries ids, and every answer is
checked against the id and the reference score. Reports lost answers (no answer, HTTP error, missing or
wrong id) and mismatched ones (score differs from the reference by more than --tol), both of which must be
0, and latency percentiles and captions/s. A measurement, not a pass/fail test.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import sys
import time


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pairs(cfg, limit: int) -> list[dict]:
    """Distinct (caption, image_id) pairs of varied quality from the training manifest and the corpus."""
    from cim.data.manifest import read_manifest

    corpus = read_manifest(cfg.index.manifest)
    by_id = {r["id"]: r for r in corpus}
    train = read_manifest(cfg.train.manifest, require_text=False) if os.path.exists(cfg.train.manifest) else corpus
    ids = [r["id"] for r in train if r["id"] in by_id] or list(by_id)
    texts = [r["text"] for r in corpus]
    pairs = []
    for i, image_id in enumerate(ids):
        pairs.append({"caption": by_id[image_id]["text"], "image_id": image_id})
        pairs.append({"caption": texts[(i * 7 + 3) % len(texts)], "image_id": image_id})
        pairs.append({"caption": " ".join(by_id[image_id]["text"].split()[:3]), "image_id": image_id})
        if len(pairs) >= limit:
            break
    return pairs[:limit]


async def _client(url, token, cid, n_requests, per_request, pairs, reference, tol, out):
    from cim.service.client import AsyncRewardClient, ServiceError

    client = AsyncRewardClient(url, token=token, retries=0, max_connections=1)
    try:
        for r in range(n_requests):
            base = (cid * n_requests + r) * per_request
            items = []
            for j in range(per_request):
                k = (base + j) % len(pairs)
                items.append({**pairs[k], "id": f"{cid}:{r}:{j}:{k}"})
            t0 = time.perf_counter()
            try:
                answers = await client.score(items)
            except (ServiceError, asyncio.TimeoutError) as exc:
                out["lost"] += len(items)
                out["errors"].append(str(exc)[:200])
                continue
            out["latencies"].append(time.perf_counter() - t0)
            for item, ans in zip(items, answers):
                if ans.get("id") != item["id"]:
                    out["lost"] += 1
                    continue
                k = int(item["id"].rsplit(":", 1)[1])
                ref = reference[k]
                if (ans.get("score") is None) != (ref.get("score") is None) or (
                        ans.get("score") is not None and abs(ans["score"] - ref["score"]) > tol):
                    out["mismatched"] += 1
                else:
                    out["ok"] += 1
    finally:
        await client.aclose()


async def _load(url, token, clients, n_requests, per_request, pairs, reference, tol):
    out = {"lost": 0, "mismatched": 0, "ok": 0, "latencies": [], "errors": []}
    t0 = time.perf_counter()
    await asyncio.gather(*(_client(url, token, c, n_requests, per_request, pairs, reference, tol, out)
                           for c in range(clients)))
    out["wall_s"] = time.perf_counter() - t0
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--url", default=None, help="target a running service instead of starting one")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=1000, help="requests per client")
    p.add_argument("--per-request", type=int, default=1, help="captions per request")
    p.add_argument("--pairs", type=int, default=600, help="distinct (caption, image_id) pairs cycled through")
    p.add_argument("--tol", type=float, default=1e-4, help="score difference counted as a mismatch")
    args = p.parse_intermixed_args(argv)

    from cim.config import load_config
    from cim.service import process
    from cim.service.client import RewardClient
    from cim.service.server import read_token

    cfg = load_config(args.params, args.overrides)
    token = read_token(cfg.train.service.token_env)
    handle = None
    url = args.url
    if url is None:
        port = _free_port()
        t0 = time.perf_counter()
        handle = process.start(args.params, args.overrides, "127.0.0.1", port, token_env=cfg.train.service.token_env,
                               startup_timeout_s=600)
        startup_s = time.perf_counter() - t0
        url = handle.url
    else:
        startup_s = None
    try:
        pairs = _pairs(cfg, args.pairs)
        with RewardClient(url, token=token, timeout_s=600) as client:
            reference = client.score(pairs)
            health_before = client.health()
            res = asyncio.run(_load(url, token, args.clients, args.requests, args.per_request, pairs, reference,
                                    args.tol))
            health = client.health()
    finally:
        if handle is not None:
            handle.stop()
    lat = sorted(res["latencies"])
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else lat * 99
    total = args.clients * args.requests * args.per_request
    b0, b1 = health_before["batching"], health["batching"]
    report = {
        "benchmark": "service_load",
        "clients": args.clients, "requests_per_client": args.requests, "captions_per_request": args.per_request,
        "captions_sent": total, "answered_ok": res["ok"], "lost": res["lost"], "mismatched": res["mismatched"],
        "errors": res["errors"][:5],
        "latency_ms": {"p50": round(q[49] * 1e3, 2), "p90": round(q[89] * 1e3, 2), "p99": round(q[98] * 1e3, 2),
                       "max": round(lat[-1] * 1e3, 2) if lat else None},
        "captions_per_s": round(total / res["wall_s"], 1), "wall_s": round(res["wall_s"], 2),
        "server_batches": b1["batches"] - b0["batches"],
        "mean_server_batch": round((b1["items"] - b0["items"]) / max(1, b1["batches"] - b0["batches"]), 2),
        "largest_server_batch": b1["largest_batch"],
        "service": {k: health.get(k) for k in ("text_encoder", "image_encoder", "corpus_size", "index_checksum")},
        "batching": {"max_batch": b1["max_batch"], "window_ms": b1["window_ms"]},
        "startup_s": round(startup_s, 1) if startup_s is not None else None,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    print(json.dumps(report, indent=2))
    return 0 if res["lost"] == 0 and res["mismatched"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
