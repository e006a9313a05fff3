"""Embed a corpus manifest in resumable shards, then build the search index and its metadata.

Resumability: shard i covers manifest rows [i*S, (i+1)*S). Its two arrays are written to temporary files and
renamed into place, then a ``shard_NNNNN.done`` marker is written the same way, holding the row range, the
sha256 of the shard's inputs (encoders' describe(), bad-image policy, and per row the id, the text, the image
path relative to the manifest's folder and the sha256 of the image file's bytes) and the sha256 of both
arrays. A shard counts as done only when its marker parses, its inputs hash matches and both arrays hash to
what the marker says; anything else is recomputed. meta.json is removed when a build starts and written last,
so a folder is loadable only after a build finished.

Nothing written here depends on where the checkout lives or when the build ran: paths are stored relative
(image paths to the manifest's folder, the manifest and sources files to the index folder) and there is no
timestamp (MLflow records when a run happened), so a copied or moved checkout resumes with every shard
reused and two builds of the same inputs are byte-identical.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cim.errors import ConfigError, InputError

from cim.index.search import build_faiss_index
from cim.index.store import FORMAT, sha256_array, sha256_file, transform_images
from cim.io import atomic_write, atomic_write_json

__all__ = ["build_index", "BAD_IMAGE_POLICIES"]

log = logging.getLogger(__name__)
BAD_IMAGE_POLICIES = ("error", "skip")


def _save_npy(path: Path, arr: np.ndarray) -> str:
    return atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(arr), allow_pickle=False))


def _save_json(path: Path, obj) -> str:
    return atomic_write_json(path, obj)


def _save_faiss(path: Path, index) -> str:
    import faiss

    data = faiss.serialize_index(index).tobytes()
    return atomic_write(path, lambda f: f.write(data))


def _relative(path: str | Path, base: str | Path) -> str:
    """``path`` relative to the folder ``base`` (POSIX separators): what meta.json and markers record."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()


def _content_sha(path: str) -> str:
    """sha256 of an image file's bytes ("unreadable" when it cannot be read: the bad-image policy decides)."""
    try:
        return sha256_file(path)
    except OSError:
        return "unreadable"


# -- manifest ---------------------------------------------------------------------------------------------
def _read_rows(path: Path, require_text: bool) -> list[dict]:
    from cim.data.manifest import read_manifest

    return read_manifest(path, require_text=require_text)


# -- shards ---------------------------------------------------------------------------------------------------
def _shard_names(i: int) -> tuple[str, str, str]:
    return f"text_emb_{i:05d}.npy", f"img_emb_{i:05d}.npy", f"shard_{i:05d}.done"


def _inputs_sha(encoders: dict, policy: str, start: int, rows: Sequence[dict], root: Path) -> str:
    """What a shard's embeddings are a function of: encoders, policy, and per row id, text, the image path
    relative to ``root`` (the manifest's folder) and the image file's content."""
    h = hashlib.sha256()
    h.update(json.dumps({"encoders": encoders, "on_bad_image": policy, "start": start}, sort_keys=True).encode())
    for r in rows:
        h.update(json.dumps([r["id"], r["text"], _relative(r["image"], root), _content_sha(r["image"])],
                            ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _valid_marker(shard_dir: Path, i: int, start: int, end: int, inputs: str) -> dict | None:
    text_name, img_name, done_name = _shard_names(i)
    try:
        marker = json.loads((shard_dir / done_name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("rows") != [start, end] or marker.get("inputs_sha256") != inputs:
        return None
    files = marker.get("files", {})
    for name in (text_name, img_name):
        path = shard_dir / name
        if not path.is_file() or files.get(name) != sha256_file(path):
            return None
    return marker


def bad_image_error(exc, chunk: Sequence[dict]):
    """What ``index.on_bad_image=error`` raises for ``exc`` (an ImageReadError) met in ``chunk``: the row
    id named, and the setting that skips such rows."""
    from cim.encoders import ImageReadError

    bad = next((r for r in chunk if r["image"] == exc.path), None)
    where = f" (id {bad['id']!r})" if bad else ""
    return ImageReadError(exc.path, f"{exc.reason}{where}; set index.on_bad_image=skip to leave such rows out of "
                                    "the index")


def readable_rows(chunk: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """``(rows whose image decodes, skipped records {id, image, error})`` of ``chunk`` (index.on_bad_image=skip)."""
    from cim.encoders import ImageReadError, load_image

    good, skipped = [], []
    for r in chunk:
        try:
            load_image(r["image"])
            good.append(r)
        except ImageReadError as exc:
            skipped.append({"id": r["id"], "image": r["image"], "error": exc.reason})
    return good, skipped


def _encode_images(image_encoder, rows: Sequence[dict], policy: str, batch: int,
                   tick: Callable[[int], None]) -> tuple[np.ndarray, list[dict]]:
    """Raw image embeddings of ``rows`` in fixed chunks; unreadable images raise or are skipped by policy."""
    from cim.encoders import ImageReadError

    out, skipped = [], []
    for c0 in range(0, len(rows), batch):
        chunk = rows[c0:c0 + batch]
        try:
            out.append(image_encoder.encode([r["image"] for r in chunk]))
        except ImageReadError as exc:
            if policy == "error":
                raise bad_image_error(exc, chunk) from None
            good, bad = readable_rows(chunk)
            for b in bad:
                log.warning("skipping %s: %s", b["id"], b["error"])
            skipped.extend(bad)
            emb = image_encoder.encode([r["image"] for r in good]) if good else \
                np.zeros((0, image_encoder.dim), np.float32)
            out.append(emb)
        tick(len(chunk))
    emb = np.concatenate(out, axis=0) if out else np.zeros((0, image_encoder.dim), np.float32)
    return emb.astype(np.float32, copy=False), skipped


def _embed_shard(text_encoder, image_encoder, rows: Sequence[dict], policy: str,
                 tick: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    batch = int(getattr(image_encoder, "batch_size", 32) or 32)
    img, skipped = _encode_images(image_encoder, rows, policy, batch, tick)
    bad = {s["id"] for s in skipped}
    texts = [r["text"] for r in rows if r["id"] not in bad]
    text = text_encoder.encode(texts).astype(np.float32, copy=False)
    if text.shape[0] != img.shape[0]:
        raise AssertionError("text and image rows disagree within a shard")
    return text, img, skipped


# -- the build --------------------------------------------------------------------------------------------------
def build_index(cfg, manifest: str | Path, out_dir: str | Path, sources: str | Path | None = None,
                progress: bool = True, *, encoders: tuple | None = None,
                on_shard: Callable[[int, int], None] | None = None, stats: dict | None = None) -> Path:
    """Embed ``manifest`` (jsonl id/image/text) in shards of ``cfg.index.shard_size`` and build the index in
    ``out_dir`` (layout: docs/architecture.md, docs/index.md). Resumable: finished shards whose inputs are
    unchanged are reused. Returns ``out_dir``.

    ``sources`` (jsonl id/image[/split]) adds source-image embeddings keyed by id. ``encoders`` — an optional
    ``(text_encoder, image_encoder)`` pair already built (else they are built from ``cfg.encoders``); with
    ``index.engine=ray`` the encoders live in Ray actors built from ``cfg.encoders`` and this is unused
    (cim.index.ray_engine: the same shard files, so either engine resumes the other's build).
    ``on_shard(i, n_shards)`` is called after each shard is on disk (a hook for progress reporting and for
    tests that interrupt a build). ``stats``, when given, is filled with how this build went
    (``{"shards": n, "reused": shards reused}``); meta.json does not record it, so a resumed build writes
    the same bytes as an uninterrupted one.
    """
    icfg = cfg.index
    policy = str(getattr(icfg, "on_bad_image", "error"))
    if policy not in BAD_IMAGE_POLICIES:
        raise ConfigError(f"index.on_bad_image={policy!r} is not one of {', '.join(BAD_IMAGE_POLICIES)}")
    shard_size = int(icfg.shard_size)
    if shard_size < 1:
        raise ConfigError(f"index.shard_size must be >= 1, got {shard_size}")
    manifest = Path(manifest)
    out = Path(out_dir)
    rows = _read_rows(manifest, require_text=True)
    if not rows:
        raise InputError(f"{manifest}: the manifest has no rows")
    source_rows = _read_rows(Path(sources), require_text=False) if sources is not None else None
    root = manifest.parent

    engine = str(getattr(icfg, "engine", "local"))
    ray_run = None
    if engine == "ray":
        from cim.index.ray_engine import RayRun

        ray_run = RayRun(cfg, icfg)               # starts (or joins) Ray; the encoders live in its actors
        encoders = (None, ray_run.image_encoder_proxy())
        described = ray_run.described
    else:
        if encoders is None:
            from cim.encoders import build_image_encoder, build_text_encoder

            encoders = (build_text_encoder(cfg.encoders.text), build_image_encoder(cfg.encoders.image))
        described = {"text": encoders[0].describe(), "image": encoders[1].describe()}
    text_encoder, image_encoder = encoders
    try:
        return _build(cfg, icfg, policy, shard_size, manifest, out, rows, source_rows, root, text_encoder,
                      image_encoder, described, ray_run, progress, on_shard, stats, sources)
    finally:
        if ray_run is not None:
            ray_run.close()


def _write_shard(shard_dir: Path, i: int, start: int, end: int, inputs: str, t: np.ndarray, m: np.ndarray,
                 bad: list[dict], root: Path) -> list[dict]:
    """A shard's arrays, then its marker (the same bytes from either engine); returns its portable skipped."""
    text_name, img_name, done_name = _shard_names(i)
    bad = _portable_skipped(bad, root)
    files = {text_name: _save_npy(shard_dir / text_name, t), img_name: _save_npy(shard_dir / img_name, m)}
    _save_json(shard_dir / done_name, {"shard": i, "rows": [start, end], "inputs_sha256": inputs,
                                       "kept": int(t.shape[0]), "skipped": bad, "files": files})
    return bad


def _build(cfg, icfg, policy, shard_size, manifest, out, rows, source_rows, root, text_encoder, image_encoder,
           described, ray_run, progress, on_shard, stats, sources) -> Path:

    out.mkdir(parents=True, exist_ok=True)
    shard_dir = out / "shards"
    shard_dir.mkdir(exist_ok=True)
    try:
        (out / "meta.json").unlink()              # from here on the folder is "not finished"
    except FileNotFoundError:
        pass
    for leftover in list(shard_dir.glob(".*.tmp")) + list(out.glob(".*.tmp")):
        leftover.unlink(missing_ok=True)
    n = len(rows)
    n_shards = (n + shard_size - 1) // shard_size
    for stale in shard_dir.iterdir():             # shards of an earlier, longer manifest
        parts = stale.name.split("_")
        if len(parts) >= 2 and parts[-1].split(".")[0].isdigit() and int(parts[-1].split(".")[0]) >= n_shards:
            stale.unlink()

    from tqdm.auto import tqdm

    bar = tqdm(total=n, desc="embedding corpus", unit="row", disable=not progress)
    texts, images, skipped = [], [], []
    reused = 0
    plan = []
    for i in range(n_shards):
        start, end = i * shard_size, min(n, (i + 1) * shard_size)
        plan.append((i, start, end, _inputs_sha(described, policy, start, rows[start:end], root)))
    fresh: set[int] = set()
    try:
        if ray_run is not None:                   # every unfinished shard, embedded in parallel, written here
            todo = [p for p in plan if _valid_marker(shard_dir, *p) is None]
            for i, *_ in todo:
                (shard_dir / _shard_names(i)[2]).unlink(missing_ok=True)

            def write(job, t, m, bad):
                _write_shard(shard_dir, *job, t, m, bad, root)
                fresh.add(job[0])
                bar.update(job[2] - job[1])
                if on_shard is not None:
                    on_shard(job[0], n_shards)

            ray_run.embed_shards([(p, rows[p[1]:p[2]]) for p in todo], policy, write)
        for i, start, end, inputs in plan:
            chunk = rows[start:end]
            text_name, img_name, done_name = _shard_names(i)
            marker = _valid_marker(shard_dir, i, start, end, inputs)
            if marker is not None:
                t = np.load(shard_dir / text_name, allow_pickle=False)
                m = np.load(shard_dir / img_name, allow_pickle=False)
                skipped.extend(marker.get("skipped", []))
                if i in fresh:
                    texts.append(t)
                    images.append(m)
                    continue
                reused += 1
                bar.update(end - start)
            else:
                if ray_run is not None:
                    raise AssertionError(f"shard {i} was not written by the Ray engine")
                (shard_dir / done_name).unlink(missing_ok=True)
                t, m, bad = _embed_shard(text_encoder, image_encoder, chunk, policy, bar.update)
                skipped.extend(_write_shard(shard_dir, i, start, end, inputs, t, m, bad, root))
            texts.append(t)
            images.append(m)
            if on_shard is not None:
                on_shard(i, n_shards)
    finally:
        bar.close()
    if reused:
        log.info("reused %d of %d finished shards", reused, n_shards)
    if stats is not None:
        stats.update({"shards": n_shards, "reused": reused})

    bad_ids = {s["id"] for s in skipped}
    ids = [r["id"] for r in rows if r["id"] not in bad_ids]
    if not ids:
        raise InputError(f"{manifest}: no row has a readable image")
    text_emb = np.ascontiguousarray(np.concatenate(texts, axis=0), dtype=np.float32)
    raw = np.concatenate(images, axis=0).astype(np.float32, copy=False)
    center = bool(icfg.center_images)
    mean = raw.astype(np.float64).mean(axis=0).astype(np.float32) if center else None
    table = transform_images(raw, mean).astype(np.float16)

    files: dict[str, str] = {}
    files["ids.json"] = _save_json(out / "ids.json", ids)
    files["image_table.npy"] = _save_npy(out / "image_table.npy", table)
    if center:
        files["image_mean.npy"] = _save_npy(out / "image_mean.npy", mean)
    else:
        (out / "image_mean.npy").unlink(missing_ok=True)

    index, params = build_faiss_index(
        text_emb, icfg.kind, nlist=icfg.nlist, nprobe=icfg.nprobe, hnsw_m=icfg.hnsw_m, ef_search=icfg.ef_search,
        ef_construction=int(getattr(icfg, "ef_construction", 40)))
    files["text.faiss"] = _save_faiss(out / "text.faiss", index)

    sources_meta = None
    if source_rows is not None:
        sources_meta, source_files = _build_sources(source_rows, rows, ids, raw, mean, image_encoder, policy, out,
                                                    Path(sources), progress)
        files.update(source_files)
    else:
        for name in ("sources_ids.json", "sources_emb.npy"):
            (out / name).unlink(missing_ok=True)

    meta = {
        "format": FORMAT,
        "rows": len(ids),
        "kind": icfg.kind,
        "faiss": params,
        "encoders": described,
        "dims": {"text": int(text_emb.shape[1]), "image": int(table.shape[1])},
        "centering": {"enabled": center, "file": "image_mean.npy" if center else None},
        "manifest": {"path": _relative(manifest, out), "rows": n, "skipped": skipped, "on_bad_image": policy},
        "sources": sources_meta,
        "shards": {"size": shard_size, "count": n_shards},
        "checksums": {"files": files, "arrays": {"text_emb": sha256_array(text_emb)}},
    }
    # image identity (cim.index.identity): rows and sources keyed by image content, for reward.exclude_source
    from cim.index.identity import record_identity

    meta["identity"], identity_files = record_identity(out, ids, rows, source_rows, progress=progress)
    files.update(identity_files)
    _save_json(out / "meta.json", meta)
    return out


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
        enc, skipped = _encode_images(image_encoder, sub, policy, batch, bar.update)
    finally:
        bar.close()
    bad = {s["id"] for s in skipped}
    kept_todo = [j for j in todo if source_rows[j]["id"] not in bad]
    emb[kept_todo] = enc
    keep = [j for j in range(len(source_rows)) if source_rows[j]["id"] not in bad]
    sids = [source_rows[j]["id"] for j in keep]
    final = transform_images(emb[keep], mean)
    files = {"sources_ids.json": _save_json(out / "sources_ids.json", sids),
             "sources_emb.npy": _save_npy(out / "sources_emb.npy", final)}
    meta = {"path": _relative(path, out), "rows": len(sids), "reused_from_corpus": reused,
            "skipped": _portable_skipped(skipped, path.parent),
            "splits": _count(source_rows[j].get("split") for j in keep)}
    return meta, files


def _portable_skipped(skipped: list[dict], root: Path) -> list[dict]:
    """Skipped rows with their image path (also inside the error message) relative to ``root``."""
    out = []
    for s in skipped:
        rel = _relative(s["image"], root)
        out.append({**s, "image": rel, "error": str(s.get("error", "")).replace(str(s["image"]), rel)})
    return out


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out
