"""The ``prepare-train`` stage: verl's multimodal parquet from a training manifest (:mod:`cim.train.verl.data`)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["prepare_train"]


def prepare_train(cfg, *, manifest: str | Path | None = None, val_manifest: str | Path | None = None,
                  out_dir: str | Path | None = None) -> dict:
    """``train.parquet`` and ``val.parquet`` in ``out_dir`` (default ``train.data_dir``) from ``manifest``
    (default ``train.manifest``; the validation rows from ``val_manifest`` or held out, seeded by ``seed``);
    returns what was written (rows, files, prompt)."""
    from cim.determinism import deterministic
    from cim.train.verl.data import prepare_train as write_parquet

    with deterministic(int(cfg.seed)):
        return write_parquet(cfg, manifest=manifest, val_manifest=val_manifest, out_dir=out_dir)
