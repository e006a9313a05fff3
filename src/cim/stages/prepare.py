"""The ``prepare`` stage: the generated demo world described by the ``world`` section."""
from __future__ import annotations

import time
from pathlib import Path

__all__ = ["prepare"]


def prepare(cfg, *, out_dir: str | Path | None = None, force: bool = False, progress: bool = True,
            track: bool = True) -> dict:
    """Write the demo world to ``out_dir`` (default ``world.out_dir``), seeded by ``world.seed`` under
    :func:`~cim.determinism.deterministic`; skipped when ``world.json`` shows the same world is there (unless
    ``force``). One MLflow run ``prepare`` when it was written (``track``). Returns the world's meta
    (``counts``, ``skipped``, ``out_dir``)."""
    from cim.data.world import generate_world
    from cim.determinism import deterministic

    out = Path(out_dir or cfg.world.out_dir)
    started, wall = time.perf_counter(), time.time()
    with deterministic(int(cfg.seed)):
        meta = generate_world(cfg.world, out_dir=out, progress=progress, force=force)
    if track and not meta["skipped"]:
        from cim.tracking import log_stage

        counts = {k: v for k, v in meta["counts"].items() if isinstance(v, (int, float))}
        log_stage(cfg, "prepare", {**counts, "seconds": time.perf_counter() - started},
                  artifacts=[out / "world.json"], started=wall)
    return {**meta, "out_dir": str(out)}
