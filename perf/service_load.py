"""Load test of the reward service on loopback: N concurrent clients x M requests each; prints JSON.

    python perf/service_load.py [--params params.yaml] [--clients 16] [--requests 1000] [key=value ...]
    python perf/service_load.py --replicas 1 2 [...]    # 1 vs 2 replicas of `cim serve`, one URL list

With ``--replicas``, that many services are started once and the same load runs against the first n of them
for each n (the clients spread over the URL list, cim.service.client); every answer is compared with the same
request's answer in the first run (``answers_identical_to_first``), and lost/mismatched must be 0 for each.

Starts ``cim serve`` (``python -m cim.cli serve``) in a child process (or targets ``--url``), takes a reference answer for
every distinct (caption, image_id) pair, then runs the clients: each request carries ids, and every answer is
checked against the id and the reference score. Reports lost answers (no answer, HTTP error, missing or
wrong id) and mismatched ones (score differs from the reference by more than --tol), both of which must be
0, and latency percentiles and captions/s. A measurement, not a pass/fail test.

The reference is taken three ways (all pairs in one request, in requests of 16, one by one): on a corpus
with duplicate texts, exact ties in the text search are broken by ~1e-7 differences in the caption embedding,
which depend on what else is in the encoder batch, so a pair can legitimately score differently in different
batches. Such pairs are reported (``batch_variant_pairs``), and an answer counts as matched when it equals any
of its pair's reference values; an answer that equals none of them is a mismatch. A mismatch whose score is
another pair's reference is counted in ``mismatched_matching_another_pair`` (what a routing error looks like);
one that is not is a tie broken yet another way.
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


def _matches(score, accepted: list, tol: float) -> bool:
    if score is None:
        return None in accepted
    return any(a is not None and abs(score - a) <= tol for a in accepted)


def _references(client, pairs: list[dict]) -> list[list]:
    """Every score each pair got in three batch compositions (bulk, 16 a request, one a request)."""
    bulk = client.score(pairs)
    by16 = [r for i in range(0, len(pairs), 16) for r in client.score(pairs[i:i + 16])]
    single = [client.score([p])[0] for p in pairs]
    out = []
    for rs in zip(bulk, by16, single):
        vals: list = []
        for r in rs:
            v = r.get("score")
            if not any((v is None and a is None) or (v is not None and a is not None and abs(v - a) <= 1e-6)
                       for a in vals):
                vals.append(v)
        out.append(vals)
    return out


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
                out["answers"][item["id"]] = ans.get("score")
                if ans.get("id") != item["id"]:
                    out["lost"] += 1
                    continue
                k = int(item["id"].rsplit(":", 1)[1])
                if _matches(ans.get("score"), reference[k], tol):
                    out["ok"] += 1
                else:
                    out["mismatched"] += 1
                    if len(reference[k]) > 1:
                        out["mismatched_variant"] += 1
                    score = ans.get("score")
                    if score is not None and any(_matches(score, reference[j], tol)
                                                 for j in range(len(reference)) if j != k):
                        out["looks_misrouted"] += 1     # it is some other pair's answer
                    if len(out["examples"]) < 5:
                        out["examples"].append({"pair": k, "score": ans.get("score"), "references": reference[k]})
    finally:
        await client.aclose()


async def _load(url, token, clients, n_requests, per_request, pairs, reference, tol):
    out = {"lost": 0, "mismatched": 0, "mismatched_variant": 0, "looks_misrouted": 0, "ok": 0, "latencies": [],
           "errors": [], "examples": [], "answers": {}}
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
    p.add_argument("--replicas", type=int, nargs="+", default=None,
                   help="compare these replica counts (services started once, the first n used)")
    args = p.parse_intermixed_args(argv)
    if args.replicas:
        return _compare_replicas(args)

    from cim.config import load_config
    from cim.service import process
    from cim.service.client import RewardClient, read_token

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
            reference = _references(client, pairs)
            health_before = client.health()
            res = asyncio.run(_load(url, token, args.clients, args.requests, args.per_request, pairs, reference,
                                    args.tol))
            health = client.health()
    finally:
        if handle is not None:
            handle.stop()
    report = _report(args, res, pairs, reference, health_before, health)
    report["startup_s"] = round(startup_s, 1) if startup_s is not None else None
    print(json.dumps(report, indent=2))
    return 0 if res["lost"] == 0 and res["mismatched"] == 0 else 1


def _compare_replicas(args) -> int:
    """The same load against 1..n replicas of `cim serve` (one URL list); answers compared across counts."""
    from cim.config import load_config
    from cim.service import process
    from cim.service.client import RewardClient, read_token

    cfg = load_config(args.params, args.overrides)
    token = read_token(cfg.train.service.token_env)
    handles = []
    runs, first = [], None
    try:
        t0 = time.perf_counter()
        for _ in range(max(args.replicas)):
            handles.append(process.start(args.params, args.overrides, "127.0.0.1", _free_port(),
                                         token_env=cfg.train.service.token_env, startup_timeout_s=600))
        startup_s = time.perf_counter() - t0
        pairs = _pairs(cfg, args.pairs)
        with RewardClient(handles[0].url, token=token, timeout_s=600) as client:
            reference = _references(client, pairs)
        for n in args.replicas:
            urls = ",".join(h.url for h in handles[:n])
            with RewardClient(urls, token=token, timeout_s=600) as client:
                before = client.wait_ready(60)["replicas"]
                res = asyncio.run(_load(urls, token, args.clients, args.requests, args.per_request, pairs, reference,
                                        args.tol))
                after = client.wait_ready(60)["replicas"]
            report = _report(args, res, pairs, reference, before[0], after[0])
            report["replicas"] = n
            report["items_per_replica"] = [a["batching"]["items"] - b["batching"]["items"]
                                           for a, b in zip(after, before)]
            if first is None:
                first = res["answers"]
            same = [res["answers"].get(k) == v for k, v in first.items()]
            diffs = [abs(res["answers"][k] - v) for k, v in first.items()
                     if v is not None and res["answers"].get(k) is not None]
            report["answers_identical_to_first"] = f"{sum(same)}/{len(same)}"
            report["answers_max_abs_diff_to_first"] = max(diffs) if diffs else None
            for key in ("service", "machine", "errors", "mismatch_examples"):
                report.pop(key, None) if n != args.replicas[0] else None
            runs.append(report)
    finally:
        for h in handles:
            h.stop()
    base = runs[0]["captions_per_s"]
    out = {"benchmark": "service_load --replicas", "startup_s_all_replicas": round(startup_s, 1),
           "runs": runs, "speedup_vs_first": [round(r["captions_per_s"] / base, 2) for r in runs],
           "lost_total": sum(r["lost"] for r in runs), "mismatched_total": sum(r["mismatched"] for r in runs),
           "note": "replicas share this machine's CPUs (loopback): the gain measures spreading, not added hardware"}
    print(json.dumps(out, indent=2))
    return 0 if out["lost_total"] == 0 and out["mismatched_total"] == 0 else 1


def _report(args, res, pairs, reference, health_before, health) -> dict:
    lat = sorted(res["latencies"])
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else lat * 99
    total = args.clients * args.requests * args.per_request
    b0, b1 = health_before["batching"], health["batching"]
    return {
        "benchmark": "service_load",
        "clients": args.clients, "requests_per_client": args.requests, "captions_per_request": args.per_request,
        "captions_sent": total, "answered_ok": res["ok"], "lost": res["lost"], "mismatched": res["mismatched"],
        "mismatched_on_batch_variant_pairs": res["mismatched_variant"],
        "mismatched_matching_another_pair": res["looks_misrouted"], "mismatch_examples": res["examples"],
        "distinct_pairs": len(pairs), "batch_variant_pairs": sum(1 for r in reference if len(r) > 1),
        "errors": res["errors"][:5],
        "latency_ms": {"p50": round(q[49] * 1e3, 2), "p90": round(q[89] * 1e3, 2), "p99": round(q[98] * 1e3, 2),
                       "max": round(lat[-1] * 1e3, 2) if lat else None},
        "captions_per_s": round(total / res["wall_s"], 1), "wall_s": round(res["wall_s"], 2),
        "server_batches": b1["batches"] - b0["batches"],
        "mean_server_batch": round((b1["items"] - b0["items"]) / max(1, b1["batches"] - b0["batches"]), 2),
        "largest_server_batch": b1["largest_batch"],
        "service": {k: health.get(k) for k in ("text_encoder", "image_encoder", "corpus_size", "index_checksum")},
        "batching": {"max_batch": b1["max_batch"], "window_ms": b1["window_ms"]},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "load_average": list(os.getloadavg())},
    }


if __name__ == "__main__":
    sys.exit(main())
