"""Corpus manifests and sources files (jsonl), read with checks and written atomically.

Corpus manifest: one ``{"id": str, "image": str, "text": str}`` object per line, extra keys kept.
Sources file: one ``{"id": str, "image": str, "split": str}`` per line (no text).
Relative ``image`` paths are relative to the file's folder; readers return them as absolute strings.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

__all__ = ["read_manifest", "write_manifest", "read_sources", "write_sources", "read_jsonl",
           "write_jsonl", "write_image_rows", "atomic_open", "atomic_write_bytes", "atomic_write_text"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()   # what open() would give; mkstemp alone makes files private (0600)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", fsync: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``
    (``os.replace``), on an exception it is removed. A reader never sees a half-written file.

    ``fsync=False`` skips the flush to disk (for many small files whose completeness a marker vouches for).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> None:
    with atomic_open(path, "wb", fsync=fsync) as handle:
        handle.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; ValueError names file and line."""
    path = Path(path)
    with path.open("r", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def write_jsonl(rows: Iterable[dict], path: str | Path) -> int:
    """Write one JSON object per line, streamed, atomically (tmp file + ``os.replace``). Returns the count."""
    n = 0
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


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
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
    for key in required:
        if not isinstance(obj[key], str) or not obj[key].strip():
            raise ValueError(f"{where}: {key!r} must be a non-empty string, got {obj[key]!r}")


def _read_rows(path: str | Path, required: tuple[str, ...]) -> list[dict]:
    path = Path(path)
    folder = Path(os.path.abspath(path)).parent
    rows: list[dict] = []
    first_line: dict[str, int] = {}
    for lineno, obj in read_jsonl(path):
        _check(obj, required, f"{path}:{lineno}")
        row_id = obj["id"]
        if row_id in first_line:
            raise ValueError(f"{path}:{lineno}: duplicate id {row_id!r} (first on line {first_line[row_id]})")
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
