"""An ablation's report: ``<axis>.json`` (the rows), ``<axis>.md`` (a table), ``<axis>.png`` (the paper's
shape: bars per variant for components and encoders, a line over corpus size for scale, a line over β) and
``<axis>.metrics.json`` (variant -> measurement -> number: the shape DVC shows; not declared as metrics, so
``dvc metrics show`` stays the captioners' headline: ``dvc metrics show reports/ablations/<axis>.metrics.json``).
Nothing in them depends on where or when the ablation ran."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cim.ablate.figures import save_figure
from cim.io import atomic_write_json, atomic_write_text

__all__ = ["write_report", "markdown", "plot", "dvc_metrics"]

TERMS = {"score": "Υ", "grc": "GRC", "qir": "QIR"}
MEASUREMENTS = {
    "quality_order": "how the reward orders demo-world captions of known quality (the verify stage): Spearman ρ "
                     "with quality over all captions (ρ) and within each image (ρ/img), for the reward Υ and its "
                     "terms GRC and QIR, and Υ's mean per quality level",
    "training": "captioners trained with each variant's reward (the pipeline's way: one SFT start, GRPO from it "
                "per variant), captioning held-out images, scored against the world's ground-truth scene graphs "
                "(train.gt_*; train.delta_*: the change against the SFT start)",
    "pipeline": "the captioners the pipeline trained with each variant's reward (its table and reward curves)",
}


def _levels(row: dict) -> list[str]:
    return [k.split(".", 2)[2] for k in row if k.startswith("score.mean.")]


def _training_keys(rows: list[dict]) -> list[str]:
    return [k for k in rows[0] if k.startswith("train.")]


def markdown(report: dict, variants: Sequence) -> str:
    rows = report["rows"]
    overrides = {v.name: " ".join(v.overrides) for v in variants}
    cols = [("variant", "variant")]
    if "beta" in rows[0]:
        cols.append(("beta", "β"))
    cols += [("corpus_rows", "corpus rows")] + [(f"{m}.{s}", f"{t} {h}") for m, t in TERMS.items()
                                                for s, h in (("rho", "ρ"), ("rho_per_image", "ρ/img"))]
    cols += [(f"score.mean.{lvl}", f"Υ {lvl}") for lvl in _levels(rows[0])]
    cols += [(k, k[len("train."):]) for k in _training_keys(rows)]
    fmt = lambda v: "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [f"# Ablation: {report['axis']}", "",
             "Measurement: " + "; ".join(MEASUREMENTS.get(m, m) for m in report["measurement"]) + ".", "",
             "| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    lines += ["", "Each variant's settings (over the base configuration):", ""]
    lines += [f"- `{name}`: `{o}`" for name, o in overrides.items()]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    axis, rows = report["axis"], report["rows"]
    train_keys = [k for k in _training_keys(rows) if k.startswith("train.delta_")] or _training_keys(rows)
    panels = 2 if train_keys else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 4.0), squeeze=False)
    ax = axes[0, 0]
    names = [r["variant"] for r in rows]
    if axis in ("scale", "beta"):
        x = np.array([r["corpus_rows"] if axis == "scale" else r["beta"] for r in rows], dtype=float)
        for m, t in TERMS.items():
            ax.plot(x, [r[f"{m}.rho"] for r in rows], marker="o", label=f"{t} ρ (all captions)")
        ax.plot(x, [r["score.rho_per_image"] for r in rows], marker="s", ls="--", label="Υ ρ (within an image)")
        ax.set_xscale("log", base=2 if axis == "beta" else 10)
        ax.set_xticks(x, [f"{v:g}" for v in x], rotation=30 if axis == "scale" else 0)
        ax.minorticks_off()
        ax.set_xlabel("corpus rows (training images' rows + a share of the rest)" if axis == "scale" else "β")
    else:
        series = [("score.rho", "Υ ρ"), ("score.rho_per_image", "Υ ρ/img")]
        if axis == "encoders":
            series += [("grc.rho", "GRC ρ"), ("qir.rho", "QIR ρ")]
        width = 0.8 / len(series)
        pos = np.arange(len(rows))
        for j, (key, label) in enumerate(series):
            bars = ax.bar(pos + (j - (len(series) - 1) / 2) * width, [r[key] for r in rows], width, label=label)
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(pos, names, rotation=20 if len(rows) > 3 else 0)
        ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("Spearman ρ with known caption quality")
    ax.set_title(f"reward ordering of known caption quality: {axis}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if train_keys:
        ax = axes[0, 1]
        width = 0.8 / len(train_keys)
        pos = np.arange(len(rows))
        for j, key in enumerate(train_keys):
            bars = ax.bar(pos + (j - (len(train_keys) - 1) / 2) * width, [r[key] or 0.0 for r in rows], width,
                          label=key[len("train."):])
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.set_xticks(pos, names)
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title("trained captioner, held-out images (change against the SFT start)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def dvc_metrics(report: dict) -> dict[str, dict[str, float]]:
    """The rows as DVC reads metrics: variant -> measurement -> number (DVC drops lists and strings)."""
    return {row["variant"]: {k: v for k, v in row.items()
                             if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for row in report["rows"]}


def write_report(report: dict, variants: Sequence, out_dir: Path) -> list[Path]:
    """``<axis>.json``, ``<axis>.md``, ``<axis>.png`` and ``<axis>.metrics.json`` in ``out_dir``; their paths. A
    report of the pipeline's rows (measurement ``pipeline``) has its own table and figure
    (:mod:`cim.ablate.from_pipeline`: the reward curves)."""
    from cim.ablate import from_pipeline

    own = from_pipeline if report["measurement"] == ["pipeline"] else None
    axis = report["axis"]
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / f"{axis}.json", report, indent=2)
    atomic_write_json(out_dir / f"{axis}.metrics.json", dvc_metrics(report), indent=1)
    atomic_write_text(out_dir / f"{axis}.md", (own.markdown if own else markdown)(report, variants))
    return [out_dir / f"{axis}.json", out_dir / f"{axis}.metrics.json", out_dir / f"{axis}.md",
            (own.plot if own else plot)(report, out_dir / f"{axis}.png")]
