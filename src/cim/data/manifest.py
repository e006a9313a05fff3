"""Corpus manifests and sources files (jsonl), read with checks and written atomically.

Corpus manifest: one ``{"id": str, "image": str, "text": str}`` object per line, extra keys kept.
Sources file: one ``{"id": str, "image": str, "split": str}`` per line (no text).
Relative ``image`` paths are relative to the file's folder; readers return them as absolute strings.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from cim.errors import InputError
from cim.io import read_jsonl, write_jsonl

__all__ = ["read_manifest", "write_manifest", "read_sources", "write_sources", "write_image_rows",
           "concat_manifests"]


def _resolve(image: str, folder: Path) -> str:
    if os.path.isabs(image):
        return os.path.normpath(image)
    return os.path.normpath(os.path.join(folder, image))


def _relative(image: str, folder: Path) -> str:
    """An absolute path inside ``folder`` becomes relative (posix); anything else is kept as given."""
    if not os.path.isabs(image):
        return Path(image).as_posix()
    try:
        return Path(os.path.normpath(image)).relative_to(folder).as_posix()
    except ValueError:
        return image


def _check(obj: dict, required: tuple[str, ...], where: str) -> None:
    missing = [key for key in required if key not in obj]
    if missing:
        raise InputError(f"{where}: missing key(s) {', '.join(missing)}")
    for key in required:
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise InputError(f"{where}: {key!r} must be a non-empty string, got {obj[key]!r}")


def _read_rows(path: str | Path, required: tuple[str, ...]) -> list[dict]:
    path = Path(path)
    folder = Path(os.path.abspath(path)).parent
    rows: list[dict] = []
    first_line: dict[str, int] = {}
    for lineno, obj in read_jsonl(path):
        _check(obj, required, f"{path}:{lineno}")
        row_id = obj["id"]
        if row_id in first_line:
            raise InputError(f"{path}:{lineno}: duplicate id {row_id!r} (first on line {first_line[row_id]})")
        first_line[row_id] = lineno
        obj["image"] = _resolve(obj["image"], folder)
        rows.append(obj)
    return rows


def write_image_rows(rows: Iterable[dict], path: str | Path,
                     required: tuple[str, ...] = ("id", "image")) -> int:
    """Write jsonl rows that carry ``required`` keys (``id`` unique), streamed and atomic; returns the count.

    Path rules as in :func:`write_manifest`. A bad row raises ValueError and leaves ``path`` untouched.
    """
    folder = Path(os.path.abspath(path)).parent

    def checked() -> Iterator[dict]:
        seen: set[str] = set()
        for index, row in enumerate(rows):
            _check(row, required, f"row {index} for {path}")
            if row["id"] in seen:
                raise ValueError(f"row {index} for {path}: duplicate id {row['id']!r}")
            seen.add(row["id"])
            yield {**row, "image": _relative(str(row["image"]), folder)}

    return write_jsonl(checked(), path)


def read_manifest(path: str | Path, require_text: bool = True) -> list[dict]:
    """Read a corpus manifest (or, with ``require_text=False``, any id/image jsonl such as a sources file).

    Returns the rows in file order with ``image`` resolved to an absolute path string. Raises ValueError
    naming the file and line for malformed JSON, a missing or non-string ``id``/``image``/``text``, and a
    duplicate id.
    """
    return _read_rows(path, ("id", "image", "text") if require_text else ("id", "image"))


def write_manifest(rows: Iterable[dict], path: str | Path) -> int:
    """Write a corpus manifest atomically.

    Absolute image paths inside the manifest's folder are written relative to it (so the folder can move);
    relative paths are taken as already relative to that folder and written as given; other absolute paths
    stay absolute. Extra keys are kept. Returns the number of rows written.
    """
    return write_image_rows(rows, path, ("id", "image", "text"))


def read_sources(path: str | Path) -> list[dict]:
    """Read a sources file: ``{"id", "image", "split"}`` rows, image paths resolved to absolute."""
    return _read_rows(path, ("id", "image", "split"))


def write_sources(rows: Iterable[dict], path: str | Path) -> int:
    """Write a sources file atomically (same path rules as :func:`write_manifest`)."""
    return write_image_rows(rows, path, ("id", "image", "split"))


def concat_manifests(parts: Iterable[str | Path], out: str | Path) -> dict[str, int]:
    """One corpus manifest from several, in the order given (the released gallery: RefinedCaps' training
    pairs first, then DenseFusion-1M), streamed. A row's position in ``out`` is its gallery row. Ids must be
    unique across the parts (InputError naming both places). Returns rows per part."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}

    def rows() -> Iterator[dict]:
        for part in map(Path, parts):
            folder = Path(os.path.abspath(part)).parent
            counts[str(part)] = 0
            for lineno, obj in read_jsonl(part):
                where = f"{part}:{lineno}"
                _check(obj, ("id", "image", "text"), where)
                if obj["id"] in first:
                    raise InputError(f"{where}: id {obj['id']!r} is already in the gallery ({first[obj['id']]})")
                first[obj["id"]] = where
                counts[str(part)] += 1
                yield {**obj, "image": _resolve(obj["image"], folder)}

    write_manifest(rows(), out)
    return counts
