"""The ``index`` stage: embed a corpus manifest in resumable shards, build the search index and the source
images' embeddings (:func:`cim.index.build_index`; docs/index.md)."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from cim.errors import InputError

__all__ = ["index", "FROM_CONFIG"]

FROM_CONFIG = "config"      # sources=FROM_CONFIG: index.sources, skipped with a note when that file is absent


def _sources(cfg, sources) -> Path | None:
    if sources in (None, False, ""):
        return None
    if sources != FROM_CONFIG:
        path = Path(sources)
        if not path.is_file():
            raise InputError(f"sources file {path} does not exist (build without source embeddings instead)")
        return path
    if cfg.index.sources and Path(cfg.index.sources).is_file():
        return Path(cfg.index.sources)
    if cfg.index.sources:
        print(f"cim index: note: {cfg.index.sources} does not exist; building without source embeddings",
              file=sys.stderr)
    return None


def index(cfg, *, manifest: str | Path | None = None, out_dir: str | Path | None = None,
          sources: str | Path | None = FROM_CONFIG, progress: bool = True, track: bool = True,
          on_shard=None) -> dict:
    """Build the index of ``manifest`` (default ``index.manifest``) in ``out_dir`` (default ``index.out_dir``)
    under :func:`~cim.determinism.deterministic` (``seed``), resuming from finished shards; ``sources``: a
    sources file, ``None``, or :data:`FROM_CONFIG`. One MLflow run ``index`` (``track``) tagged with the index's
    data hash. Returns the summary: out, rows, kind, dims, skipped, sources, shards (with how many were reused).
    ``on_shard(i, n)`` is called after each shard is on disk."""
    from cim.config import check_names
    from cim.determinism import deterministic
    from cim.index import build_index

    check_names(cfg, "encoders.text.name", "encoders.image.name")
    manifest = Path(manifest or cfg.index.manifest)
    out = Path(out_dir or cfg.index.out_dir)
    if not manifest.is_file():
        raise InputError(f"manifest {manifest} does not exist (write one with `cim manifest` or `cim prepare`)")
    source_file = _sources(cfg, sources)
    started, wall = time.perf_counter(), time.time()
    stats: dict = {}
    with deterministic(int(cfg.seed)):
        build_index(cfg, manifest, out, sources=source_file, progress=progress, stats=stats, on_shard=on_shard)
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    summary = {"out": str(out), "rows": meta["rows"], "kind": meta["kind"], "dims": meta["dims"],
               "skipped": len(meta["manifest"]["skipped"]), "sources": (meta["sources"] or {}).get("rows", 0),
               "shards": {**meta["shards"], "reused": stats["reused"]}, "data_sha256": data_hash(meta)}
    if track:
        from cim.tracking import log_stage

        seconds = time.perf_counter() - started
        log_stage(cfg, "index", {"rows": meta["rows"], "seconds": seconds, "rows_per_s": meta["rows"] / seconds,
                                 "shards_reused": stats["reused"], "skipped": summary["skipped"],
                                 "sources": summary["sources"]},
                  tags={"data.index_sha256": summary["data_sha256"]}, artifacts=[out / "meta.json"], started=wall)
    return summary


def data_hash(meta: dict) -> str:
    """One short hash over the index's file checksums: the data version a build produced."""
    return hashlib.sha256(json.dumps(meta.get("checksums", {}), sort_keys=True).encode()).hexdigest()[:16]
