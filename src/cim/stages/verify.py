"""The ``verify`` stage: does the reward order captions of known quality? (:mod:`cim.eval.quality_order`)"""
from __future__ import annotations

import time
from pathlib import Path

__all__ = ["verify"]


def verify(cfg, *, captions: str | Path | None = None, index_dir: str | Path | None = None,
           out_dir: str | Path | None = None, track: bool = True, progress: bool = False, scorer=None) -> dict:
    """Score the captions of known quality (default ``<world.out_dir>/bench_captions.jsonl``) with ``scorer``
    (default: one from ``cfg`` over the index ``index_dir``, default ``index.out_dir``), write the report to
    ``out_dir`` (default ``verify.out_dir``), in one MLflow run ``verify`` (``track``); returns the summary
    (:func:`cim.eval.quality_order.summarise`) with the settings under ``"settings"``."""
    from cim.config import check_names
    from cim.eval.quality_order import log_summary, verify_report
    from cim.io import read_jsonl

    started = time.time()            # the MLflow run's duration covers the scoring, not only the logging
    captions_path = Path(captions or Path(cfg.world.out_dir) / "bench_captions.jsonl")
    out = Path(out_dir or cfg.verify.out_dir)
    items = [row for _, row in read_jsonl(captions_path)]     # an unreadable file fails here, before any model
    if scorer is None:
        from cim.reward.scorer import Scorer

        check_names(cfg, "encoders.text.name", "encoders.image.name")
        scorer = Scorer.from_config(cfg, index_dir=str(index_dir) if index_dir else None)
    summary = verify_report(cfg, scorer, items, out, progress=progress)
    if track:
        from cim.protocols import tags
        from cim.tracking import start_run

        with start_run(cfg, "verify", tags=tags(cfg), start_time=started):
            log_summary(summary, out)
    return summary
