"""Does the reward order captions of known quality? (the premise of the paper's Fig. 1 / Fig. 2; the
measurement of the ``verify`` stage, :mod:`cim.stages.verify`, and of every ablation variant)

Scores captions of known quality (the demo world's: detailed-correct 3, coarse-correct 2, partly-wrong 1,
wrong 0) and reports, for the reward and each of its terms: the mean per level, the Spearman correlation with
quality over all captions (pooled) and within each image (averaged), and the share of images whose
detailed-correct caption outscores each other level (:func:`summarise`). :func:`measure` scores in batches;
:func:`write_report` writes ``metrics.json`` (measurements only: DVC shows every number in it as a metric),
``settings.json`` (the reward and encoder settings that produced them), ``scores.csv`` and
``scores_by_level.png``; :func:`verify_report` does all of it for a captions file (the body the verify
stage and the ablations share); :func:`log_summary` puts the numbers into the active MLflow run.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from cim.io import atomic_open, atomic_write_text
from cim.reward.settings import reward_settings

METRICS = ("score", "grc", "qir")


def summarise(rows: list[dict]) -> dict:
    """rows: scored captions with image_id, level, quality, score, grc, qir (None where failed)."""
    import numpy as np
    from scipy.stats import spearmanr

    ok = [r for r in rows if r.get("error") is None]
    quality = np.array([r["quality"] for r in ok], dtype=float)
    out: dict = {"n_captions": len(rows), "n_failed": len(rows) - len(ok)}
    levels = sorted({(r["quality"], r["level"]) for r in ok}, reverse=True)
    by_image: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in ok:
        by_image[r["image_id"]][r["quality"]] = r
    top = max(q for q, _ in levels)
    for m in METRICS:
        values = np.array([r[m] for r in ok], dtype=float)
        rho = spearmanr(values, quality).statistic
        per_image = [spearmanr([r[m] for r in caps.values()], list(caps)).statistic
                     for caps in by_image.values() if len(caps) > 2]
        per_image = [x for x in per_image if np.isfinite(x)]
        without = {lvl: float(spearmanr(values[quality != q], quality[quality != q]).statistic)
                    for q, lvl in levels if len(levels) > 2}
        out[m] = {
            "spearman_pooled": float(rho),
            # which level breaks the ordering: rho recomputed with that level left out
            "spearman_pooled_without": without,
            "spearman_per_image_mean": float(np.mean(per_image)) if per_image else None,
            "mean_by_level": {lvl: float(values[quality == q].mean()) for q, lvl in levels},
            "std_by_level": {lvl: float(values[quality == q].std()) for q, lvl in levels},
            "top_beats_level": {lvl: float(np.mean([caps[top][m] > caps[q][m] for caps in by_image.values()
                                                    if top in caps and q in caps]))
                                for q, lvl in levels if q != top},
        }
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("error") is None]
    levels = sorted({(r["quality"], r["level"]) for r in ok}, reverse=True)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    titles = {"score": "reward Υ = GRC + β·QIR", "grc": "GRC (Eq. 1)", "qir": "QIR (Eq. 2)"}
    for ax, m in zip(axes, METRICS):
        data = [[r[m] for r in ok if r["quality"] == q] for q, _ in levels]
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(levels) + 1), [lvl for _, lvl in levels], rotation=20, fontsize=8)
        ax.set_title(titles[m])
        ax.grid(alpha=0.3)
    fig.suptitle("CIM scores of demo-world captions by known quality")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def settings(cfg, scorer=None) -> dict:
    """What produced a verify report (not a measurement: ``settings.json``, never ``metrics.json``)."""
    from cim.protocols import describe

    out = {"reward": reward_settings(cfg.reward),
           "protocol": describe(cfg),
           "encoders": {"text": cfg.encoders.text.model, "image": cfg.encoders.image.model,
                        "center_images": cfg.index.center_images}}
    if scorer is not None:
        out["corpus_rows"] = len(scorer.index.ids)
    return out


def measure(scorer, items: list[dict], batch_size: int, progress: bool = False) -> tuple[list[dict], dict]:
    """Score ``items`` (``image_id``, ``caption``, ``level``, ``quality``); returns (rows, :func:`summarise`)."""
    from cim.reward.scorer import score_in_batches

    results = score_in_batches(scorer, items, batch_size, progress=progress)
    rows = [{**{k: it[k] for k in ("image_id", "level", "quality")}, **res} for it, res in zip(items, results)]
    return rows, summarise(rows)


def write_report(out_dir: Path, rows: list[dict], summary: dict, settings_: dict) -> None:
    """``metrics.json`` (measurements), ``settings.json``, ``scores.csv`` (for `dvc plots`), the figure."""
    atomic_write_text(out_dir / "metrics.json", json.dumps(summary, indent=2))
    atomic_write_text(out_dir / "settings.json", json.dumps(settings_, indent=2))
    with atomic_open(out_dir / "scores.csv") as fh:
        fh.write("image_id,level,quality,score,grc,qir\n")
        for r in rows:
            if r["error"] is None:
                fh.write(f"{r['image_id']},{r['level']},{r['quality']},{r['score']:.6f},{r['grc']:.6f},{r['qir']:.6f}\n")
    plot(rows, out_dir / "scores_by_level.png")


def verify_report(cfg, scorer, captions: str | Path | list[dict], out_dir: str | Path, progress: bool = False) -> dict:
    """Score the captions of known quality in ``captions`` (a jsonl path, or its rows already read) with
    ``scorer`` under ``cfg.seed`` and write the report to ``out_dir``; returns the summary (:func:`summarise`)
    with the settings under ``"settings"``."""
    from cim.determinism import deterministic
    from cim.io import read_jsonl

    items = captions if isinstance(captions, list) else [row for _, row in read_jsonl(Path(captions))]
    with deterministic(int(cfg.seed)):
        rows, summary = measure(scorer, items, cfg.reward.batch_size, progress=progress)
    summary_settings = settings(cfg, scorer)
    write_report(Path(out_dir), rows, summary, summary_settings)
    summary["settings"] = summary_settings
    return summary


def log_summary(summary: dict, out_dir: Path | None = None) -> None:
    """The summary's metrics (and the report folder as artifacts) into the active MLflow run."""
    import mlflow

    metrics = {}
    for m in METRICS:
        metrics[f"{m}.spearman_pooled"] = summary[m]["spearman_pooled"]
        if summary[m]["spearman_per_image_mean"] is not None:
            metrics[f"{m}.spearman_per_image"] = summary[m]["spearman_per_image_mean"]
        for lvl, v in summary[m]["mean_by_level"].items():
            metrics[f"{m}.mean.{lvl}"] = v
    metrics["n_failed"] = summary["n_failed"]
    mlflow.log_metrics(metrics)
    if out_dir is not None:
        mlflow.log_artifacts(str(out_dir), artifact_path="verify")
