"""``compare(cfg, captions, benchmark, baseline, out_dir)``: the paper's Table 2 over the pipeline's captioners.

Every captioner's captions (``{name: captions.jsonl}``) are scored with the benchmark's table metrics
(:meth:`cim.eval.evaluate.Evaluator.evaluate`: CAPTURE, Objects/Attributes P/R/F1, Relations QA, BLEU-4,
METEOR, the CIM reward of the captions under ``cfg.reward``) and, where the benchmark has ground-truth scene
graphs (the demo world), ground-truth recall beside the parser-based numbers (``gt_*``,
:func:`cim.train.world_recall.scene_recall`), plus the mean caption length in words. Each row also holds
``delta_<metric>`` against the baseline row (0 on the baseline itself), so every row has the same keys.

MLflow: one run ``compare[<benchmark>]`` (the table's files) with one child run per captioner,
``compare[<benchmark>/<captioner>]``, all with the same metric keys (the UI's compare view sets them side by
side).
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Mapping

import numpy as np

from cim.errors import ConfigError
from cim.io import read_jsonl

GROUND_TRUTH = ("object_recall", "attribute_recall", "attribute_precision", "relation_recall")


def read_captions(path: str | Path) -> dict[str, str]:
    return {str(r.get("id", r.get("image_id"))): r.get("caption") or "" for _, r in read_jsonl(path)}


def ground_truth(bench, captions: Mapping[str, str]) -> dict[str, float]:
    """``gt_<recall>``: the mean over samples with a scene graph of the caption's recall against it."""
    from cim.train.world_recall import scene_recall

    values: dict[str, list[float]] = {k: [] for k in GROUND_TRUTH}
    for s in bench.samples:
        if s.scene_graph and s.id in captions:
            for k, v in scene_recall(captions[s.id], s.scene_graph).items():
                if not math.isnan(v):
                    values[k].append(v)
    return {f"gt_{k}": float(np.mean(v)) for k, v in values.items() if v}


def _numbers(metrics: dict) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def score_rows(cfg, captions: Mapping[str, str | Path], benchmark: str, log=print) -> list[dict]:
    """One row per captioner: ``{"captioner": name, metric: value, ...}`` (no deltas yet)."""
    from cim.eval.evaluate import Evaluator
    from cim.eval.metrics import METRICS

    ev = Evaluator(cfg, log=log)
    bench = ev.load(benchmark)
    metrics = [m for m in (list(cfg.eval.metrics) or list(bench.spec.metrics)) if METRICS.get(m).scope == "method"]
    rows = []
    for name, path in captions.items():
        caps = read_captions(path)
        res = ev.evaluate(bench, name, caps, metrics)
        for metric, error in res.errors.items():
            log(f"compare {benchmark}/{name}: {metric} failed: {error}")
        words = [len(caps.get(s.id, "").split()) for s in bench.samples]
        rows.append({"captioner": name, **_numbers(res.metrics), **ground_truth(bench, caps),
                     "caption_words": float(np.mean(words)) if words else 0.0})
    keys = set.intersection(*(set(r) for r in rows)) if rows else set()
    return [{k: r[k] for k in r if k in keys} for r in rows]      # the same keys in every row


def with_deltas(rows: list[dict], baseline: str) -> list[dict]:
    base = next((r for r in rows if r["captioner"] == baseline), None)
    if base is None:
        raise ConfigError(f"baseline {baseline!r} is not one of the captioners: {', '.join(r['captioner'] for r in rows)}")
    metrics = [k for k in base if k != "captioner" and not k.startswith("delta_")]
    return [{**r, **{f"delta_{k}": r[k] - base[k] for k in metrics}} for r in rows]


def compare(cfg, captions: Mapping[str, str | Path], benchmark: str, baseline: str, out_dir: str | Path,
            track: bool = True, log=print) -> dict:
    """Score, write ``captioners.json`` / ``.md`` / ``.png`` in ``out_dir`` and log MLflow; returns the table
    ``{"benchmark", "baseline", "rows"}``."""
    from cim.pipeline.table import write_table

    if not captions:
        raise ConfigError("compare needs at least one captioner's captions")
    run = contextlib.nullcontext()
    if track:
        from cim.tracking import start_run

        run = start_run(cfg, "compare", run_name=f"compare[{benchmark}]",
                        tags={"benchmark": benchmark, "baseline": baseline, "captioners": ",".join(captions)})
    with run:
        rows = with_deltas(score_rows(cfg, captions, benchmark, log), baseline)
        table = {"benchmark": benchmark, "baseline": baseline, "rows": rows}
        files = write_table(table, Path(out_dir))
        if track:
            log_table(cfg, table, files)
    return table


def log_table(cfg, table: dict, files: list[Path]) -> None:
    """The table's files on the active run; one child run per captioner with the same metric keys."""
    import mlflow

    for path in files:
        mlflow.log_artifact(str(path), artifact_path="results")
    for row in table["rows"]:
        name = row["captioner"]
        with mlflow.start_run(run_name=f"compare[{table['benchmark']}/{name}]", nested=True,
                              tags={"stage": "compare", "captioner": name, "benchmark": table["benchmark"],
                                    "baseline": table["baseline"]}):
            mlflow.log_metrics({k: v for k, v in row.items() if k != "captioner"})
