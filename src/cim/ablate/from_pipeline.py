"""An ablation measured on the rows the pipeline already trained (the ``aggregate`` axis): no training, no
encoder, no index. Each variant is the ``pipeline.variants`` row that trains with the variant's reward (the
stage maps them: :func:`cim.stages.ablate.pipeline_row`, ``sum`` -> ``cim``, ``gdpo`` -> ``cim-gdpo``); its
numbers are that row's of the captioners' table (``<pipeline.out_dir>/captioners.json``: the mean over seeds, the
95% interval and the paired delta against the table's baseline) and its reward curve the mean over seeds of
the runs' ``curves.csv`` (``<pipeline.report_dir>/<row>-s<seed>/``).

The table's paired deltas are against its baseline (the SFT start) only; between two variants the report gives
the difference of their means (``<column>.minus_<first variant>``) and says that it carries no interval.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

from cim.errors import InputError

__all__ = ["KEYS", "rows", "markdown", "plot"]

KEYS = ("capture", "repetition")     # the table's headline and the repetition rate: each with its intervals
HOW = ("the pipeline's own trained rows, read from its table (captioners.json) and its runs' reward curves "
       "(curves.csv `reward`: the trainer's train/reward_mean per step): means over seeds ({seeds}) with 95% "
       "intervals; Δ {base}: the table's paired bootstrap delta against {base}; `minus_{first}`: the difference of "
       "two rows' means (the table pairs rows with {base} only: no interval)")


def _read_curve(path: Path) -> dict[int, float]:
    if not path.is_file():
        raise InputError(f"{path} does not exist: train the row first (`dvc repro train`, `cim train --variant`)")
    with path.open(newline="") as f:
        return {int(r["step"]): float(r["reward"]) for r in csv.DictReader(f)}


def _mean_curve(paths: Sequence[Path]) -> dict[str, list[float]]:
    """Reward per step, mean over the runs (the steps every run logged)."""
    curves = [_read_curve(p) for p in paths]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    return {"step": steps, "reward": [sum(c[s] for c in curves) / len(curves) for s in steps]}


def _interval(row: dict, key: str) -> tuple[float, float]:
    ci = row.get(key)
    return (float(ci[0]), float(ci[1])) if ci else (math.nan, math.nan)


def rows(variants, names: dict[str, str], curves: dict[str, list[Path]], table_path: Path,
         seeds: Sequence) -> tuple[list[dict], str]:
    """``(report rows, how)``: per variant (``names``: variant -> its pipeline row; ``curves``: row -> its runs'
    curves.csv) the row's :data:`KEYS` in the table at ``table_path`` (mean, interval, Δ vs the table's baseline
    and its interval), the difference of means against the first variant, and its mean reward curve.
    InputError when the table or a curve is missing or the table lacks a row."""
    if not table_path.is_file():
        raise InputError(f"{table_path} does not exist: run the comparison first (`dvc repro compare`, "
                         "`cim compare`)")
    table = json.loads(table_path.read_text(encoding="utf-8"))
    found = {r["captioner"]: r for r in table["rows"]}
    lacking = [r for r in names.values() if r not in found]
    if lacking:
        raise InputError(f"{table_path} has no row {', '.join(lacking)}: train, caption and compare it "
                         "(`dvc repro compare`)")
    keys = [k for k in KEYS if k in table["columns"]]
    if "capture" not in keys:
        raise InputError(f"{table_path} has no capture column: compare with the capture metric")
    base, first = table["baseline"], variants[0].name
    out = []
    for v in variants:
        r = found[names[v.name]]
        row: dict = {"variant": v.name, **v.fields, "row": names[v.name], "n_seeds": int(r["n_seeds"])}
        for k in keys:
            row[k] = r[k]
            row[f"{k}.ci95_low"], row[f"{k}.ci95_high"] = _interval(r, f"{k}_ci95")
            row[f"{k}.delta_{base}"] = r[f"delta_{k}"]
            row[f"{k}.delta_{base}.ci95_low"], row[f"{k}.delta_{base}.ci95_high"] = _interval(r, f"delta_{k}_ci95")
        if v.name != first:
            row.update({f"{k}.minus_{first}": r[k] - found[names[first]][k] for k in keys})
        curve = _mean_curve(curves[names[v.name]])
        row["reward.final"] = curve["reward"][-1] if curve["reward"] else math.nan
        row["curve"] = curve
        out.append(row)
    how = HOW.format(seeds=", ".join(map(str, seeds)), base=base, first=first)
    return out, how


def markdown(report: dict, variants: Sequence) -> str:
    rows_ = report["rows"]
    keys = [k for k in KEYS if k in rows_[0]]
    base = next(k.split(".delta_", 1)[1] for k in rows_[0] if k.startswith("capture.delta_") and "ci95" not in k)
    first = rows_[0]["variant"]
    def pct(v, sign: str = "") -> str:
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 100:{sign}.2f}"

    from cim.eval.metrics import label, table_columns

    name = {c.key: label(c) for c in table_columns()}
    head = ["variant", "row", "seeds"] + [f"{name[k]} (95% interval)" for k in keys] \
        + [f"Δ {name[k]} vs {base}" for k in keys] + [f"{name[k]} − {first}" for k in keys] + ["final reward"]
    lines = [f"# Ablation: {report['axis']}", "", f"Measurement: {report['how']}.", "",
             "Numbers x100 (percent), except the reward; ↓: lower is better.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows_:
        cells = [r["variant"], r["row"], str(r["n_seeds"])]
        cells += [f"{pct(r[k])} [{pct(r[f'{k}.ci95_low'])}, {pct(r[f'{k}.ci95_high'])}]" for k in keys]
        cells += [f"{pct(r[f'{k}.delta_{base}'], '+')} [{pct(r[f'{k}.delta_{base}.ci95_low'], '+')}, "
                  f"{pct(r[f'{k}.delta_{base}.ci95_high'], '+')}]" for k in keys]
        cells += [pct(r.get(f"{k}.minus_{first}"), "+") if r["variant"] != first else "" for k in keys]
        cells.append(f"{r['reward.final']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Each variant's settings (over the base configuration) and the row trained with them:", ""]
    lines += [f"- `{v.name}`: `{' '.join(v.overrides)}` -> `{r['row']}`" for v, r in zip(variants, rows_)]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    """The reward per GRPO step, mean over each row's seeds, one line per variant."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cim.ablate.figures import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in report["rows"]:
        ax.plot(r["curve"]["step"], r["curve"]["reward"], label=f"{r['variant']} ({r['row']}, {r['n_seeds']} seeds)")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward (mean over the captions and seeds)")
    ax.set_title(f"training reward per step: {report['axis']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
