"""Embed a corpus manifest in resumable shards, then build the search index and its metadata.

The shards (:mod:`cim.index.shards`: files, markers, bad images) are embedded by an engine -- this process
(:class:`~cim.index.shards.LocalEngine`) or a Ray cluster (:class:`cim.index.ray_engine.RayRun`,
``index.engine=ray``) -- which writes the same files, so either resumes the other's build. Then the arrays are
assembled into the image table (fp16, centred if ``index.center_images``, L2-normalised), the FAISS text
index, the source images' embeddings and the image identity (:mod:`cim.index.identity`). meta.json is removed
when a build starts and written last, so a folder is loadable only after a build finished.

Nothing written here depends on where the checkout lives or when the build ran: paths are stored relative
(image paths to the manifest's folder, the manifest and sources files to the index folder) and there is no
timestamp (MLflow records when a run happened), so a copied or moved checkout resumes with every shard
reused and two builds of the same inputs are byte-identical.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from cim.errors import ConfigError, InputError
from cim.index.search import build_faiss_index
from cim.index.shards import (encode_images, inputs_sha, portable_skipped, relative, save_npy, shard_names,
                              valid_marker, write_shard)
from cim.index.store import FORMAT, sha256_array, transform_images
from cim.io import atomic_write, atomic_write_json

__all__ = ["build_index"]

log = logging.getLogger(__name__)


def _save_faiss(path: Path, index) -> str:
    import faiss

    data = faiss.serialize_index(index).tobytes()
    return atomic_write(path, lambda f: f.write(data))


def _read_rows(path: Path, require_text: bool) -> list[dict]:
    from cim.data.manifest import read_manifest

    return read_manifest(path, require_text=require_text)


def _engine(cfg, encoders: tuple | None):
    if cfg.index.engine == "ray":
        from cim.index.ray_engine import RayRun

        return RayRun(cfg)                        # starts (or joins) Ray; the encoders live in its actors
    from cim.index.shards import LocalEngine

    return LocalEngine(cfg, encoders)


def build_index(cfg, manifest: str | Path, out_dir: str | Path, sources: str | Path | None = None,
                progress: bool = True, *, encoders: tuple | None = None,
                on_shard: Callable[[int, int], None] | None = None, stats: dict | None = None) -> Path:
    """Embed ``manifest`` (jsonl id/image/text) in shards of ``cfg.index.shard_size`` and build the index in
    ``out_dir`` (layout: docs/architecture.md, docs/index.md). Resumable: finished shards whose inputs are
    unchanged are reused. Returns ``out_dir``.

    ``sources`` (jsonl id/image[/split]) adds source-image embeddings keyed by id. ``encoders`` -- an optional
    ``(text_encoder, image_encoder)`` pair already built (else they are built from ``cfg.encoders``; unused by
    the Ray engine, whose actors build their own). ``on_shard(i, n_shards)`` is called after each shard is on
    disk (progress reporting; tests that interrupt a build). ``stats``, when given, is filled with how this
    build went (``{"shards": n, "reused": shards reused}``); meta.json does not record it, so a resumed build
    writes the same bytes as an uninterrupted one.
    """
    if cfg.index.shard_size < 1:
        raise ConfigError(f"index.shard_size must be >= 1, got {cfg.index.shard_size}")
    manifest, out = Path(manifest), Path(out_dir)
    rows = _read_rows(manifest, require_text=True)
    if not rows:
        raise InputError(f"{manifest}: the manifest has no rows")
    source_rows = _read_rows(Path(sources), require_text=False) if sources is not None else None
    engine = _engine(cfg, encoders)
    try:
        shards = _embed(cfg, engine, rows, manifest.parent, out, progress, on_shard, stats)
        _assemble(cfg, engine, manifest, out, rows, shards, source_rows, Path(sources) if sources else None, progress)
    finally:
        engine.close()
    return out


def _embed(cfg, engine, rows: list[dict], root: Path, out: Path, progress: bool, on_shard, stats) -> list:
    """Every shard on disk (the unfinished ones embedded by ``engine``); returns ``(text, image, skipped)`` per
    shard, in order."""
    from tqdm.auto import tqdm

    policy, size = cfg.index.on_bad_image, int(cfg.index.shard_size)
    shard_dir = out / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)              # from here on the folder is "not finished"
    for leftover in list(shard_dir.glob(".*.tmp")) + list(out.glob(".*.tmp")):
        leftover.unlink(missing_ok=True)
    n_shards = (len(rows) + size - 1) // size
    for stale in shard_dir.iterdir():                        # shards of an earlier, longer manifest
        number = stale.name.split("_")[-1].split(".")[0]
        if number.isdigit() and int(number) >= n_shards:
            stale.unlink()
    plan = [(i, i * size, min(len(rows), (i + 1) * size)) for i in range(n_shards)]
    plan = [(i, a, z, inputs_sha(engine.described, policy, a, rows[a:z], root)) for i, a, z in plan]
    todo = [job for job in plan if valid_marker(shard_dir, *job) is None]
    done = sum(job[2] - job[1] for job in plan if job not in todo)
    bar = tqdm(total=len(rows), initial=done, desc="embedding corpus", unit="row", disable=not progress)

    def write(job, text, image, skipped):
        write_shard(shard_dir, *job, text, image, skipped, root)
        if on_shard is not None:
            on_shard(job[0], n_shards)

    try:
        for i, *_ in todo:
            (shard_dir / shard_names(i)[2]).unlink(missing_ok=True)
        engine.embed([(job, rows[job[1]:job[2]]) for job in todo], policy, write, bar.update)
    finally:
        bar.close()
    if len(todo) < n_shards:
        log.info("reused %d of %d finished shards", n_shards - len(todo), n_shards)
    if stats is not None:
        stats.update({"shards": n_shards, "reused": n_shards - len(todo)})
    out_shards = []
    for job in plan:
        marker = valid_marker(shard_dir, *job)
        if marker is None:
            raise AssertionError(f"shard {job[0]} was not written by the {cfg.index.engine} engine")
        text_name, img_name, _ = shard_names(job[0])
        out_shards.append((np.load(shard_dir / text_name, allow_pickle=False),
                           np.load(shard_dir / img_name, allow_pickle=False), marker.get("skipped", [])))
    return out_shards


def _assemble(cfg, engine, manifest: Path, out: Path, rows: list[dict], shards: list, source_rows, sources: Path | None,
              progress: bool) -> None:
    """The image table, the FAISS index, the sources, the identity and meta.json (last) from the shards."""
    icfg = cfg.index
    skipped = [s for _, _, bad in shards for s in bad]
    bad_ids = {s["id"] for s in skipped}
    ids = [r["id"] for r in rows if r["id"] not in bad_ids]
    if not ids:
        raise InputError(f"{manifest}: no row has a readable image")
    text_emb = np.ascontiguousarray(np.concatenate([t for t, _, _ in shards], axis=0), dtype=np.float32)
    raw = np.concatenate([m for _, m, _ in shards], axis=0).astype(np.float32, copy=False)
    center = bool(icfg.center_images)
    mean = raw.astype(np.float64).mean(axis=0).astype(np.float32) if center else None
    table = transform_images(raw, mean).astype(np.float16)

    files: dict[str, str] = {"ids.json": atomic_write_json(out / "ids.json", ids),
                             "image_table.npy": save_npy(out / "image_table.npy", table)}
    if center:
        files["image_mean.npy"] = save_npy(out / "image_mean.npy", mean)
    else:
        (out / "image_mean.npy").unlink(missing_ok=True)
    index, params = build_faiss_index(text_emb, icfg.kind, nlist=icfg.nlist, nprobe=icfg.nprobe, hnsw_m=icfg.hnsw_m,
                                      ef_search=icfg.ef_search, ef_construction=int(icfg.ef_construction))
    files["text.faiss"] = _save_faiss(out / "text.faiss", index)
    sources_meta = None
    if source_rows is not None:
        sources_meta, source_files = _build_sources(source_rows, rows, ids, raw, mean, engine.image_encoder,
                                                    icfg.on_bad_image, out, sources, progress)
        files.update(source_files)
    else:
        for name in ("sources_ids.json", "sources_emb.npy"):
            (out / name).unlink(missing_ok=True)
    from cim.index.identity import record_identity   # rows and sources keyed by image content (exclude_source)

    identity, identity_files = record_identity(out, ids, rows, source_rows, progress=progress)
    files.update(identity_files)
    meta = {
        "format": FORMAT, "rows": len(ids), "kind": icfg.kind, "faiss": params, "encoders": engine.described,
        "dims": {"text": int(text_emb.shape[1]), "image": int(table.shape[1])},
        "centering": {"enabled": center, "file": "image_mean.npy" if center else None},
        "manifest": {"path": relative(manifest, out), "rows": len(rows), "skipped": skipped,
                     "on_bad_image": icfg.on_bad_image},
        "sources": sources_meta, "shards": {"size": int(icfg.shard_size), "count": len(shards)},
        "checksums": {"files": files, "arrays": {"text_emb": sha256_array(text_emb)}}, "identity": identity,
    }
    atomic_write_json(out / "meta.json", meta)


def _build_sources(source_rows: list[dict], rows: list[dict], ids: list[str], raw: np.ndarray,
                   mean: np.ndarray | None, image_encoder, policy: str, out: Path, path: Path,
                   progress: bool) -> tuple[dict, dict]:
    """Source-image embeddings (same transform as the table). A source whose id and image path equal a
    corpus row's reuses that row's embedding instead of encoding the image again."""
    from tqdm.auto import tqdm

    corpus_row = {rid: i for i, rid in enumerate(ids)}
    corpus_image = {r["id"]: r["image"] for r in rows}
    emb = np.zeros((len(source_rows), raw.shape[1]), dtype=np.float32)
    todo, reused = [], 0
    for j, s in enumerate(source_rows):
        i = corpus_row.get(s["id"])
        if i is not None and os.path.normpath(corpus_image[s["id"]]) == os.path.normpath(s["image"]):
            emb[j] = raw[i]
            reused += 1
        else:
            todo.append(j)
    bar = tqdm(total=len(todo), desc="embedding sources", unit="img", disable=not progress or not todo)
    try:
        sub = [dict(source_rows[j], text="") for j in todo]
        batch = int(getattr(image_encoder, "batch_size", 32) or 32)
        enc, skipped = encode_images(image_encoder, sub, policy, batch, bar.update)
    finally:
        bar.close()
    bad = {s["id"] for s in skipped}
    kept_todo = [j for j in todo if source_rows[j]["id"] not in bad]
    emb[kept_todo] = enc
    keep = [j for j in range(len(source_rows)) if source_rows[j]["id"] not in bad]
    sids = [source_rows[j]["id"] for j in keep]
    final = transform_images(emb[keep], mean)
    files = {"sources_ids.json": atomic_write_json(out / "sources_ids.json", sids),
             "sources_emb.npy": save_npy(out / "sources_emb.npy", final)}
    meta = {"path": relative(path, out), "rows": len(sids), "reused_from_corpus": reused,
            "skipped": portable_skipped(skipped, path.parent),
            "splits": _count(source_rows[j].get("split") for j in keep)}
    return meta, files


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out
