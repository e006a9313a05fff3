"""The ``audit`` stage: does the reward carry signal on this corpus? Detail and precision, per component,
without labels (:mod:`cim.audit`; docs/audit.md)."""
from __future__ import annotations

import time
from pathlib import Path

__all__ = ["audit"]


def audit(cfg, *, index_dir: str | Path | None = None, manifest: str | Path | None = None, captions=None,
          out_dir: str | Path | None = None, progress: bool = True, track: bool = True, **options) -> dict:
    """Pair every audited caption (a seeded sample of ``manifest``'s texts, each with its own image as the
    source, or ``captions``) with less detailed, false and hacked copies, score both sides with the configured
    reward over ``index_dir`` and write ``audit.json``/``.md``/``.png`` to ``out_dir`` (default
    ``audit.out_dir``) under :func:`~cim.determinism.deterministic`, in one MLflow run ``audit`` (``track``).
    ``options``: ``audit.*`` fields for this call (``sample``, ``seed``, ``kinds``, ``write_pairs``, ...).
    Returns the report (with ``verdicts`` and ``warnings``)."""
    from cim.audit import run_audit
    from cim.config import check_names
    from cim.determinism import deterministic

    check_names(cfg, "encoders.text.name", "encoders.image.name")
    started = time.time()
    with deterministic(int(cfg.seed)):
        report = run_audit(cfg, index_dir=index_dir, manifest=manifest, captions=captions, out_dir=out_dir,
                           progress=progress, **options)
    if track:
        from cim.audit import log_audit
        from cim.protocols import tags
        from cim.tracking import start_run

        with start_run(cfg, "audit", tags=tags(cfg), start_time=started):
            log_audit(report, out_dir or cfg.audit.out_dir)
    return report
