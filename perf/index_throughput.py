"""Embedding throughput and FAISS build/search cost for the corpus index. Prints one JSON object.

    python perf/index_throughput.py [--quick] [--rows 10000 100000] [--queries 1000] [--k 5]
    python perf/index_throughput.py --engines --params P [key=value ...]   # local vs ray build of index.manifest
    python perf/index_throughput.py --text-backends [--texts 512]           # MiniLM: torch vs onnx, same run

- text: MiniLM (embedded) texts/s on caption-length strings;
- image: EfficientNet-Lite0 (embedded) images/s at 160 and 224 px, from in-memory PIL images;
- engines (``--engines``): the corpus of ``index.manifest`` built from scratch by the local engine and by the
  Ray engine (a local cluster of ``--ray-cpus`` CPUs: decoding in CPU tasks overlapped with embedding in
  the actor pool), rows/s, against the encoders alone on pixels decoded beforehand (the limit: the image
  encoder's ``embed_pixels`` plus the text encoder, same chunks) and against decoding alone;
- index: for each row count (random unit vectors, dim 384; and a clustered set, see make_data), build time,
  search time and recall@k against exact search for exact / ivf / hnsw. Exact is timed twice: CIM's deterministic search
  (cim.index.exact_topk: float32 candidates, float64 rescoring, lower row on ties) and plain
  faiss.IndexFlatIP for reference.

Random isotropic vectors have no cluster structure, which is the hard case for approximate indices: real
text embeddings cluster, and recall on them is higher at the same settings. Measure on your corpus with
``cim.index.recall_at_k(index_dir, queries, k)``. Measurements, not pass/fail: run on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _captions(n: int, rng: np.random.Generator) -> list[str]:
    colors = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
    shapes = ["square", "circle", "triangle", "star", "ring"]
    places = ["left", "right", "top", "bottom", "centre"]
    out = []
    for _ in range(n):
        c1, c2 = rng.choice(colors, 2, replace=False)
        s1, s2 = rng.choice(shapes, 2)
        out.append(f"A photo of a large {c1} {s1} near the {rng.choice(places)} edge of the frame, next to a "
                   f"small {c2} {s2} with a thin outline, on a plain light background with soft shadows.")
    return out


def _images(n: int, rng: np.random.Generator):
    from PIL import Image

    return [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(n)]


def _rate(fn, items, repeats: int = 1) -> float:
    fn(items[: max(1, len(items) // 8)])                      # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        fn(items)
    return len(items) * repeats / (time.perf_counter() - t)


def bench_encoders(n_texts: int, n_images: int) -> dict:
    import torch

    from cim.config import ImageEncoderConfig, TextEncoderConfig
    from cim.encoders import build_image_encoder, build_text_encoder

    rng = np.random.default_rng(0)
    out: dict = {}
    _log("text: MiniLM")
    text = build_text_encoder(TextEncoderConfig(device="cpu", batch_size=128))
    out["text"] = {"model": text.describe()["model"], "n": n_texts,
                   "texts_per_s": round(_rate(text.encode, _captions(n_texts, rng)), 1)}
    images = _images(n_images, rng)
    out["image"] = {}
    for size in (160, 224):
        _log(f"image: EfficientNet-Lite0 at {size} px")
        enc = build_image_encoder(ImageEncoderConfig(device="cpu", image_size=size, batch_size=32))
        out["image"][f"efficientnet-lite0@{size}"] = {"n": n_images,
                                                      "images_per_s": round(_rate(enc.encode, images), 1)}
    out["torch_threads"] = torch.get_num_threads()
    return out


def _unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def make_data(kind: str, rows: int, dim: int, n_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``random``: isotropic unit vectors, queries too (every row is about equally far from a query: the
    worst case for approximate search). ``clustered``: rows around 1 centre per 100 rows, queries are
    perturbed rows (a query has true near neighbours, as a caption has among corpus texts)."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return _unit(rng.standard_normal((rows, dim))), _unit(rng.standard_normal((n_queries, dim)))
    centres = rng.standard_normal((max(1, rows // 100), dim))
    x = _unit(centres[rng.integers(0, len(centres), rows)] + 0.8 * rng.standard_normal((rows, dim)))
    q = _unit(x[rng.integers(0, rows, n_queries)] + 0.05 * rng.standard_normal((n_queries, dim)))
    return x, q


def bench_index(rows: int, dim: int, n_queries: int, k: int, params: dict, data: str = "random") -> dict:
    import faiss

    from cim.index import build_faiss_index, exact_topk

    x, q = make_data(data, rows, dim, n_queries, seed=rows)
    res: dict = {}

    t = time.perf_counter()
    _, truth = exact_topk(x, q, k)
    res["exact"] = {"build_s": 0.0, "search_s": round(time.perf_counter() - t, 4), "recall": 1.0,
                    "note": "cim deterministic exact search (numpy; no index structure to build)"}
    t = time.perf_counter()
    flat, _ = build_faiss_index(x, "exact")
    build = time.perf_counter() - t
    t = time.perf_counter()
    _, frows = flat.search(q, k)
    res["faiss_flat_ip"] = {"build_s": round(build, 4), "search_s": round(time.perf_counter() - t, 4),
                            "recall": _recall(frows, truth, k)}
    for kind in ("ivf", "hnsw"):
        _log(f"index: {kind} over {rows} {data} rows")
        t = time.perf_counter()
        index, used = build_faiss_index(x, kind, **params)
        build = time.perf_counter() - t
        t = time.perf_counter()
        _, rows_k = index.search(q, k)
        search = time.perf_counter() - t
        res[kind] = {"build_s": round(build, 3), "search_s": round(search, 4), "recall": _recall(rows_k, truth, k),
                     "params": used}
    for v in res.values():
        v["ms_per_query"] = round(1000 * v["search_s"] / n_queries, 4)
    res["faiss_threads"] = faiss.omp_get_max_threads()
    return res


def _recall(got: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(got, truth))
    return round(hits / (len(truth) * k), 4)


def bench_text_backends(n_texts: int, repeats: int = 3) -> dict:
    """The embedded MiniLM with encoders.text.backend=torch and =onnx, timed alternately in one run."""
    from cim.config import load_config
    from cim.encoders import build_text_encoder

    rng = np.random.default_rng(0)
    texts = _captions(n_texts, rng)
    enc = {b: build_text_encoder(load_config(None, [f"encoders.text.backend={b}", "encoders.text.device=cpu"])
                                 .encoders.text) for b in ("torch", "onnx")}
    rates: dict = {b: [] for b in enc}
    for _ in range(repeats):
        for b, e in enc.items():
            rates[b].append(_rate(e.encode, texts))
    diff = float(np.abs(enc["torch"].encode(texts) - enc["onnx"].encode(texts)).max())
    best = {b: round(max(r), 1) for b, r in rates.items()}
    return {"texts": n_texts, "repeats": repeats, "threads": __import__("torch").get_num_threads(),
            "captions_per_s_best": best, "captions_per_s_all": {b: [round(x, 1) for x in r] for b, r in rates.items()},
            "onnx_over_torch": round(best["onnx"] / best["torch"], 2), "embedding_max_abs_diff": diff}


def bench_engines(params: str | None, overrides: list[str], ray_cpus: int) -> dict:
    import shutil
    import tempfile

    from cim.config import load_config
    from cim.data.manifest import read_manifest
    from cim.determinism import deterministic
    from cim.encoders import build_image_encoder, build_text_encoder
    from cim.encoders.image import preprocess_images
    from cim.index import build_index

    cfg = load_config(params, overrides)
    rows = read_manifest(cfg.index.manifest)
    text, image = build_text_encoder(cfg.encoders.text), build_image_encoder(cfg.encoders.image)
    out: dict = {"rows": len(rows), "shard_size": int(cfg.index.shard_size), "image_batch": image.batch_size,
                 "torch_threads": __import__("torch").get_num_threads()}
    paths, texts, b = [r["image"] for r in rows], [r["text"] for r in rows], image.batch_size
    with deterministic(int(cfg.seed)):
        t0 = time.perf_counter()
        pixels = [preprocess_images(image._preprocess, paths[i:i + b]) for i in range(0, len(paths), b)]
        decode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for px in pixels:
            image.embed_pixels(px)
        image_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, len(texts), cfg.index.shard_size):
            text.encode(texts[i:i + cfg.index.shard_size])
        text_s = time.perf_counter() - t0
    del pixels
    out["decode_only_images_per_s"] = round(len(rows) / decode_s, 1)
    out["image_encoder_only_images_per_s"] = round(len(rows) / image_s, 1)
    out["encoders_only_rows_per_s"] = round(len(rows) / (image_s + text_s), 1)
    tmp = Path(tempfile.mkdtemp(prefix="cim-engines-"))
    try:
        for engine in ("local", "ray"):
            ecfg = load_config(params, overrides + [f"index.engine={engine}"])
            if engine == "ray":
                import ray

                ray.init(num_cpus=ray_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
            t0 = time.perf_counter()
            with deterministic(int(cfg.seed)):
                build_index(ecfg, cfg.index.manifest, tmp / engine, None, progress=False,
                            encoders=(text, image) if engine == "local" else None)
            seconds = time.perf_counter() - t0
            if engine == "ray":
                ray.shutdown()
            out[f"{engine}_build_s"] = round(seconds, 1)
            out[f"{engine}_rows_per_s"] = round(len(rows) / seconds, 1)
            out[f"{engine}_share_of_encoders_only"] = round(len(rows) / seconds / out["encoders_only_rows_per_s"], 3)
        same = all((tmp / "local" / "shards" / f.name).read_bytes() == f.read_bytes()
                   for f in sorted((tmp / "ray" / "shards").glob("*.npy")))
        out["ray_shards_identical_to_local"] = same
        out["ray_cpus"] = ray_cpus
        out["note"] = ("the Ray build includes starting the cluster and its actors (model loads); on a few shared "
                       "cores decoding and embedding compete for the same CPUs")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--texts", type=int, default=512)
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--data", nargs="+", default=["random", "clustered"], choices=["random", "clustered"])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    p.add_argument("--skip-encoders", action="store_true")
    p.add_argument("--engines", action="store_true", help="local vs ray build of index.manifest (see above)")
    p.add_argument("--params", default=None, help="--engines: params file")
    p.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 2, help="--engines: local Ray cluster CPUs")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="--engines: config overrides")
    p.add_argument("--text-backends", action="store_true", help="MiniLM torch vs onnx backend (see above)")
    args = p.parse_intermixed_args(argv)
    if args.text_backends:
        report = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                              "platform": platform.platform(), "load_average_before": list(os.getloadavg())},
                  "text_backends": bench_text_backends(args.texts)}
        report["machine"]["load_average_after"] = list(os.getloadavg())
        print(json.dumps(report, indent=1))
        return 0
    if args.engines:
        report = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                              "platform": platform.platform(), "load_average_before": list(os.getloadavg())},
                  "engines": bench_engines(args.params, args.overrides, args.ray_cpus)}
        report["machine"]["load_average_after"] = list(os.getloadavg())
        print(json.dumps(report, indent=1))
        return 0
    if args.quick:
        args.rows, args.queries, args.texts, args.images = [2000], 100, 64, 16

    from cim.config import IndexConfig

    icfg = IndexConfig()
    params = {"nlist": icfg.nlist, "nprobe": icfg.nprobe, "hnsw_m": icfg.hnsw_m, "ef_search": icfg.ef_search,
              "ef_construction": icfg.ef_construction}
    report: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                "platform": platform.platform()},
                    "k": args.k, "queries": args.queries, "dim": args.dim, "index_params": params}
    if not args.skip_encoders:
        report["encoders"] = bench_encoders(args.texts, args.images)
    report["index"] = {data: {str(n): bench_index(n, args.dim, args.queries, args.k, params, data)
                              for n in args.rows} for data in args.data}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
