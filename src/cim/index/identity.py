"""Image identity: which corpus rows show the same image, so the reward can leave out *every* row of a source.

A corpus may caption one image several times (the dataset adapters name the repeats ``id_2``, ``id_3``), and
one picture may sit under two paths. Ids say nothing about that; the image's bytes do. At build time every
kept corpus row and every kept source is keyed by the sha256 of its image file, and three files record it:

- ``image_groups.npy`` (rows,) int32: the image number of each corpus row (numbered by first appearance);
- ``image_digests.npy`` (images, 32) uint8: the sha256 of each image number's bytes;
- ``sources_groups.npy`` (sources,) int32: the image number of each source (``sources_ids.json`` order), -1 when
  the source's image is not in the corpus.

An in-memory index (:meth:`cim.index.store.CorpusIndex.from_arrays`) knows no image bytes: every row is its
own image there (:meth:`ImageIdentity.distinct`).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from cim.io import atomic_write

__all__ = ["ImageIdentity", "file_digest", "compute_identity", "record_identity", "load_identity",
           "row_keys", "source_keys", "IDENTITY_FILES"]

log = logging.getLogger(__name__)
IDENTITY_FILES = ("image_groups.npy", "image_digests.npy", "sources_groups.npy")
_NO_IMAGE = -1


def file_digest(path: str | Path, chunk: int = 1 << 20) -> bytes:
    """sha256 of a file's bytes (32 bytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            h.update(block)
    return h.digest()


@dataclass
class ImageIdentity:
    """Image numbers of corpus rows and sources; see the module doc."""

    groups: np.ndarray                      # (rows,) int32
    digests: np.ndarray                     # (images, 32) uint8
    source_groups: np.ndarray               # (sources,) int32, -1: not a corpus image
    source_ids: Sequence[str] = ()          # the index's sources, in ``source_groups`` order
    _by_digest: Optional[dict] = field(default=None, repr=False)

    def __post_init__(self):
        self.source_position = {sid: j for j, sid in enumerate(self.source_ids)}

    @classmethod
    def distinct(cls, rows: int, source_ids: Sequence[str] = ()) -> "ImageIdentity":
        """Every row its own image, no source in the corpus (nothing is known of the images' bytes)."""
        return cls(np.arange(rows, dtype=np.int64), np.zeros((0, 32), np.uint8),
                   np.full(len(source_ids), _NO_IMAGE, dtype=np.int64), list(source_ids))

    @property
    def max_rows_per_image(self) -> int:
        return int(np.bincount(self.groups).max()) if len(self.groups) else 1

    def group_of_digest(self, digest: bytes) -> int:
        """The image number of these bytes, -1 when no corpus row shows them (built on first use)."""
        if self._by_digest is None:
            self._by_digest = {bytes(d): i for i, d in enumerate(self.digests)}
        return self._by_digest.get(digest, _NO_IMAGE)

    def summary(self) -> dict:
        counts = np.bincount(self.groups) if len(self.groups) else np.zeros(0, int)
        return {"key": "sha256 of the image file", "files": list(IDENTITY_FILES), "images": int(len(self.digests)),
                "rows": int(len(self.groups)), "rows_sharing_an_image": int(counts[counts > 1].sum()),
                "max_rows_per_image": self.max_rows_per_image,
                "sources_in_corpus": int((self.source_groups >= 0).sum()),
                "sources": int(len(self.source_groups))}


def compute_identity(corpus_images: Sequence[str], source_images: Sequence[str] = (),
                     progress: bool = False) -> ImageIdentity:
    """Hash every image once (paths repeated in the corpus are read once) and number the distinct images."""
    from tqdm.auto import tqdm

    digest_of: dict[str, bytes] = {}
    paths = list(dict.fromkeys(list(corpus_images) + list(source_images)))
    for path in tqdm(paths, desc="hashing images", unit="img", disable=not progress):
        digest_of[path] = file_digest(path)
    number: dict[bytes, int] = {}
    groups = np.empty(len(corpus_images), dtype=np.int32)
    for i, path in enumerate(corpus_images):
        groups[i] = number.setdefault(digest_of[path], len(number))
    digests = np.frombuffer(b"".join(number), dtype=np.uint8).reshape(len(number), 32)
    sources = np.array([number.get(digest_of[p], _NO_IMAGE) for p in source_images], dtype=np.int32)
    return ImageIdentity(groups, digests.copy(), sources)


def record_identity(out: Path, ids: Sequence[str], rows: Sequence[dict], source_rows: Optional[Sequence[dict]],
                    progress: bool = False) -> tuple[dict, dict]:
    """The build's hook: key the kept corpus rows (``ids``, in index order) and the kept sources (those in
    ``out/sources_ids.json``) by image content and write the three files. Returns ``(meta, {file: sha256})``."""
    image_of = {r["id"]: r["image"] for r in rows}
    source_images: list[str] = []
    if source_rows is not None:
        source_of = {s["id"]: s["image"] for s in source_rows}
        kept = json.loads((out / "sources_ids.json").read_text(encoding="utf-8"))
        source_images = [source_of[s] for s in kept]
    identity = compute_identity([image_of[i] for i in ids], source_images, progress=progress)
    files = {}
    for name, array in zip(IDENTITY_FILES, (identity.groups, identity.digests, identity.source_groups)):
        files[name] = atomic_write(out / name, lambda f, a=array: np.save(f, a, allow_pickle=False))
    return identity.summary(), files


def load_identity(root: Path, source_ids: Sequence[str]) -> ImageIdentity:
    """The identity an index folder recorded (the caller checks its shapes against the index)."""
    groups, digests, source_groups = (np.load(root / name, allow_pickle=False) for name in IDENTITY_FILES)
    return ImageIdentity(groups.astype(np.int64), digests, source_groups.astype(np.int64), list(source_ids))


# -- keys the scorer compares ---------------------------------------------------------------------------------
def row_keys(index) -> np.ndarray:
    """The image key of every corpus row: its image number."""
    return index.identity.groups


def source_keys(index, image_ids: Sequence[Optional[str]], digests: Sequence[Optional[bytes]]) -> np.ndarray:
    """The image key of each source: by ``image_id`` (a source id, or a corpus id) or by the ``digest`` of an
    image file; -1 when the image is not in the corpus. Comparable with :func:`row_keys`."""
    identity = index.identity
    out = np.full(len(image_ids), _NO_IMAGE, dtype=np.int64)
    for i, (sid, digest) in enumerate(zip(image_ids, digests)):
        if sid is not None:
            j = identity.source_position.get(sid)
            if j is not None:
                out[i] = identity.source_groups[j]
            elif sid in index.row_of:
                out[i] = identity.groups[index.row_of[sid]]
        elif digest is not None:
            out[i] = identity.group_of_digest(digest)
    return out
