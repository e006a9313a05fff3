"""The ``manifest`` step: a corpus manifest from a dataset's release format (:mod:`cim.data.adapters`), or
manifests joined into one gallery (row order = gallery order, as the released reward indexes it)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

__all__ = ["manifest", "concat"]


def manifest(fmt: str, annotations: str | Path, images: str | Path, out: str | Path, *, on_missing: str | None = None,
             split: str | None = None, train_out: str | Path | None = None):
    """Convert ``annotations`` (release format ``fmt``, a name of :data:`cim.plugins.DATASET_FORMATS`) with its
    ``images`` folder into the manifest ``out``; returns the :class:`~cim.data.adapters.AdapterReport`."""
    from cim.data.adapters import convert

    return convert(fmt, annotations, images, out, on_missing=on_missing, split=split, train_out=train_out)


def concat(manifests: Sequence[str | Path], out: str | Path) -> dict:
    """Join corpus manifests, in order, into ``out``; returns ``{manifest: rows}``."""
    from cim.data.manifest import concat_manifests

    return concat_manifests(manifests, out)
