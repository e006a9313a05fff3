"""A corpus's shards: what both embedding engines share (the local one here, Ray's in :mod:`.ray_engine`).

Shard i covers manifest rows [i*S, (i+1)*S). Its two arrays (``text_emb_NNNNN.npy``, ``img_emb_NNNNN.npy``)
are written to temporary files and renamed into place, then a ``shard_NNNNN.done`` marker the same way,
holding the row range, the sha256 of the shard's inputs (encoders' describe(), bad-image policy, and per row
the id, the text, the image path relative to the manifest's folder and the sha256 of the image file's bytes)
and the sha256 of both arrays. A shard counts as done only when its marker parses, its inputs hash matches and
both arrays hash to what the marker says (:func:`valid_marker`); either engine finishes the other's build.

Unreadable images follow ``index.on_bad_image``: ``error`` names the row and stops (:func:`bad_image_error`),
``skip`` leaves the row out and records it (:func:`readable_rows`). An engine embeds a list of unfinished
shards and hands each one's arrays to ``write(job, text, image, skipped)`` (:func:`write_shard`):
:class:`LocalEngine` in this process, :class:`cim.index.ray_engine.RayRun` on a Ray cluster.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from cim.index.store import sha256_file
from cim.io import atomic_write, atomic_write_json

__all__ = ["Job", "shard_names", "inputs_sha", "valid_marker", "write_shard", "bad_image_error", "readable_rows",
           "encode_images", "LocalEngine", "relative", "save_npy"]

log = logging.getLogger(__name__)
Job = tuple[int, int, int, str]         # (shard, start row, end row, inputs sha256)


def save_npy(path: Path, arr: np.ndarray) -> str:
    return atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(arr), allow_pickle=False))


def _save_json(path: Path, obj) -> str:
    return atomic_write_json(path, obj)


def relative(path: str | Path, base: str | Path) -> str:
    """``path`` relative to the folder ``base`` (POSIX separators): what meta.json and markers record."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base))).as_posix()


def _content_sha(path: str) -> str:
    """sha256 of an image file's bytes ("unreadable" when it cannot be read: the bad-image policy decides)."""
    try:
        return sha256_file(path)
    except OSError:
        return "unreadable"


# -- shards ---------------------------------------------------------------------------------------------------
def shard_names(i: int) -> tuple[str, str, str]:
    return f"text_emb_{i:05d}.npy", f"img_emb_{i:05d}.npy", f"shard_{i:05d}.done"


def inputs_sha(encoders: dict, policy: str, start: int, rows: Sequence[dict], root: Path) -> str:
    """What a shard's embeddings are a function of: encoders, policy, and per row id, text, the image path
    relative to ``root`` (the manifest's folder) and the image file's content."""
    h = hashlib.sha256()
    h.update(json.dumps({"encoders": encoders, "on_bad_image": policy, "start": start}, sort_keys=True).encode())
    for r in rows:
        h.update(json.dumps([r["id"], r["text"], relative(r["image"], root), _content_sha(r["image"])],
                            ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def valid_marker(shard_dir: Path, i: int, start: int, end: int, inputs: str) -> dict | None:
    text_name, img_name, done_name = shard_names(i)
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


def encode_images(image_encoder, rows: Sequence[dict], policy: str, batch: int,
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
    img, skipped = encode_images(image_encoder, rows, policy, batch, tick)
    bad = {s["id"] for s in skipped}
    texts = [r["text"] for r in rows if r["id"] not in bad]
    text = text_encoder.encode(texts).astype(np.float32, copy=False)
    if text.shape[0] != img.shape[0]:
        raise AssertionError("text and image rows disagree within a shard")
    return text, img, skipped


def write_shard(shard_dir: Path, i: int, start: int, end: int, inputs: str, t: np.ndarray, m: np.ndarray,
                 bad: list[dict], root: Path) -> list[dict]:
    """A shard's arrays, then its marker (the same bytes from either engine); returns its portable skipped."""
    text_name, img_name, done_name = shard_names(i)
    bad = portable_skipped(bad, root)
    files = {text_name: save_npy(shard_dir / text_name, t), img_name: save_npy(shard_dir / img_name, m)}
    _save_json(shard_dir / done_name, {"shard": i, "rows": [start, end], "inputs_sha256": inputs,
                                       "kept": int(t.shape[0]), "skipped": bad, "files": files})
    return bad


def portable_skipped(skipped: list[dict], root: Path) -> list[dict]:
    """Skipped rows with their image path (also inside the error message) relative to ``root``."""
    out = []
    for s in skipped:
        rel = relative(s["image"], root)
        out.append({**s, "image": rel, "error": str(s.get("error", "")).replace(str(s["image"]), rel)})
    return out




class LocalEngine:
    """Embeds shards in this process with the two encoders (built from ``cfg.encoders`` unless given)."""

    def __init__(self, cfg, encoders: tuple | None = None):
        if encoders is None:
            from cim.encoders import build_image_encoder, build_text_encoder

            encoders = (build_text_encoder(cfg.encoders.text), build_image_encoder(cfg.encoders.image))
        self.text_encoder, self.image_encoder = encoders
        self.described = {"text": self.text_encoder.describe(), "image": self.image_encoder.describe()}

    def embed(self, jobs: Sequence[tuple[Job, list[dict]]], policy: str,
              write: Callable[[Job, np.ndarray, np.ndarray, list[dict]], None], tick: Callable[[int], None]) -> None:
        for job, rows in jobs:
            write(job, *_embed_shard(self.text_encoder, self.image_encoder, rows, policy, tick))

    def close(self) -> None:
        pass
