"""`cim index --manifest FILE --out DIR [--sources FILE] [key=value ...]`: embed a corpus and build its index.

Resumable: run it again after an interruption and finished shards are reused (docs/index.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", default=None, help="corpus manifest jsonl (default: index.manifest)")
    parser.add_argument("--out", default=None, help="index folder (default: index.out_dir)")
    parser.add_argument("--sources", default=None,
                        help="source images jsonl (id, image, split) to embed by id (default: index.sources, "
                             "skipped with a note when that default file does not exist)")
    parser.add_argument("--no-sources", action="store_true", help="do not embed source images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-mlflow", action="store_true", help="do not record the run in MLflow")


def run(args: argparse.Namespace) -> int:
    from cim.config import load_config
    from cim.errors import InputError

    cfg = load_config(args.params, args.overrides)
    manifest = Path(args.manifest or cfg.index.manifest)
    out = Path(args.out or cfg.index.out_dir)
    sources: Path | None = None
    if not args.no_sources:
        if args.sources:
            sources = Path(args.sources)
            if not sources.is_file():
                raise InputError(f"sources file {sources} does not exist (pass --no-sources to build without)")
        elif cfg.index.sources and Path(cfg.index.sources).is_file():
            sources = Path(cfg.index.sources)
        elif cfg.index.sources:
            print(f"cim index: note: {cfg.index.sources} does not exist; building without source embeddings",
                  file=sys.stderr)
    if not manifest.is_file():
        raise InputError(f"manifest {manifest} does not exist (write one with `cim manifest` or `cim prepare`)")

    from cim.determinism import deterministic
    from cim.index import build_index

    started, wall = time.perf_counter(), time.time()
    stats: dict = {}
    with deterministic(int(cfg.seed)):
        build_index(cfg, manifest, out, sources=sources, progress=not args.no_progress, stats=stats)
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    summary = {"out": str(out), "rows": meta["rows"], "kind": meta["kind"], "dims": meta["dims"],
               "skipped": len(meta["manifest"]["skipped"]), "sources": (meta["sources"] or {}).get("rows", 0),
               "shards": {**meta["shards"], "reused": stats["reused"]}}
    print(json.dumps(summary))
    if not args.no_mlflow:
        from cim.tracking import log_stage

        seconds = time.perf_counter() - started
        log_stage(cfg, "index", {"rows": meta["rows"], "seconds": seconds, "rows_per_s": meta["rows"] / seconds,
                                 "shards_reused": stats["reused"], "skipped": summary["skipped"],
                                 "sources": summary["sources"]},
                  tags={"data.index_sha256": _index_hash(meta)}, artifacts=[out / "meta.json"], started=wall)
    return 0


def _index_hash(meta: dict) -> str:
    """One short hash over the index's file checksums: the data version this run produced."""
    import hashlib

    return hashlib.sha256(json.dumps(meta.get("checksums", {}), sort_keys=True).encode()).hexdigest()[:16]
