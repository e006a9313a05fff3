"""Files written whole or not at all, jsonl read with line numbers, and CIM's cache folder: the one place.

- :func:`atomic_write` streams into a temporary file beside the target, fsyncs it and renames it into place
  (``os.replace``); on an exception the temporary file is removed. A reader never sees half a file. It
  returns the sha256 of what it wrote (index shards record it). :func:`atomic_open`, the bytes / text / json
  helpers and :func:`write_jsonl` are built on the same primitive; :func:`atomic_dir` does the same for a
  whole folder (checkpoints).
- :func:`read_jsonl` yields ``(line number, object)`` and names file and line for bad JSON.
- :func:`cache_dir` is where CIM unpacks weights and data (``$CIM_CACHE_DIR``, else ``~/.cache/cim``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from cim.errors import InputError, describe_decode_error

__all__ = ["atomic_write", "atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_dir", "read_jsonl", "write_jsonl", "cache_dir", "json_safe", "write_json", "yaml_names",
           "named_yaml"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()   # what open() would give; mkstemp alone makes files private (0600)


class _Hashing:
    """A binary file wrapper that hashes what passes through it."""

    def __init__(self, handle: IO[bytes]):
        self.handle, self.sha256 = handle, hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.handle.write(data)

    def __getattr__(self, name: str):
        return getattr(self.handle, name)


@contextlib.contextmanager
def _temp_beside(path: Path) -> Iterator[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | Path, write: Callable[[Any], Any], fsync: bool = True) -> str:
    """``write(binary file)`` into a temporary file beside ``path``, then rename it into place.

    Returns the sha256 (hex) of the bytes written. ``fsync=False`` skips the flush to disk (for many small
    files whose completeness a marker vouches for).
    """
    path = Path(path)
    with _temp_beside(path) as tmp:
        with open(tmp, "wb") as handle:
            hashing = _Hashing(handle)
            write(hashing)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    return hashing.sha256.hexdigest()


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", fsync: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``, on an exception it is
    removed. ``mode`` is ``"w"`` (text, UTF-8) or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    with _temp_beside(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True) -> str:
    return atomic_write(path, lambda f: f.write(data), fsync=fsync)


def atomic_write_text(path: str | Path, text: str, fsync: bool = True) -> str:
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 1, sort_keys: bool = False,
                      default: Callable | None = None) -> str:
    """JSON (UTF-8, not ASCII-escaped, a trailing newline) written atomically; returns its sha256."""
    text = json.dumps(obj, ensure_ascii=False, indent=indent, sort_keys=sort_keys, default=default)
    return atomic_write_text(path, text + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on a clean exit it replaces ``path`` (an older folder of that
    name is removed first), on an exception it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def json_safe(value: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python numbers, tuples -> lists, recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        return json_safe(value.item())
    return value


def write_json(path: str | Path, data: Any) -> str:
    """:func:`atomic_write_json` of :func:`json_safe` ``data`` (anything else as ``str``); returns its sha256."""
    return atomic_write_json(path, json_safe(data), default=str)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` for each non-blank line; a line that is not UTF-8, not JSON or not an
    object raises :class:`~cim.errors.InputError` (a ValueError) naming the file and line."""
    path = Path(path)
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}:{lineno}: {describe_decode_error(exc)}") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def write_jsonl(rows: Iterable[dict], path: str | Path, default: Callable | None = None) -> int:
    """One JSON object per line, streamed, atomically. Returns the number of rows."""
    n = 0
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=default) + "\n")
            n += 1
    return n


def cache_dir(*parts: str) -> Path:
    """``$CIM_CACHE_DIR/<parts>`` (default ``~/.cache/cim``): unpacked weights, NLTK data."""
    root = os.environ.get("CIM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "cim")
    return Path(root, *parts)


def yaml_names(folder: Path | str) -> list[str]:
    """The names of the ``*.yaml`` files in ``folder`` (protocols, presets, benchmarks), sorted."""
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def named_yaml(name: str | Path, folder: Path | str, what: str, error: type[Exception] = InputError) -> Path:
    """``name`` as a ``.yaml``/``.yml`` path, or ``<folder>/<name>.yaml``; else ``error`` listing the known names."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    candidate = Path(folder) / f"{name}.yaml"
    if not candidate.is_file():
        raise error(f"no {what} {str(name)!r} (known: {', '.join(yaml_names(folder)) or 'none'}; "
                    f"or a .yaml path)")
    return candidate
