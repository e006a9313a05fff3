"""What an evaluation run reports: paper-style results tables, the headline numbers DVC tracks, MLflow.

- :func:`markdown_table`: rows = model and method; columns = every registered metric's columns
  (:func:`cim.eval.metrics.table_columns`: CAPTURE, Objects P/R/F1, Attributes P/R/F1, Relations QA, BLEU-4,
  METEOR, CIM, and any metric a plugin adds), with deltas against a named baseline row, like Table 2.
- :func:`headline`: ``metrics.json`` (``{benchmark: {method: {metric: value}}}`` plus each benchmark
  experiment's headline numbers); :func:`mlflow_metrics`: the same numbers and their deltas as MLflow
  metric names (the evaluate stage logs them, :mod:`cim.stages.evaluate`).
- Files: :func:`method_dir` (``<bench_dir>/<method slug>``).

A result is the dict :meth:`cim.eval.evaluate.MethodResult.to_dict` writes to ``results.json``: it has
``benchmark``, ``method`` and ``metrics`` (a flat name -> value map, fractions in 0..1, CIM raw).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

from cim.eval.metrics import finite, label, metric, table_columns

METRICS_FILE = "metrics.json"    # <eval.out_dir>/metrics.json: the headline numbers (DVC metrics)
TABLE_FILE = "table.md"          # <eval.out_dir>/<benchmark>/table.md


# ------------------------------------------------------------------------------------------------- files
def slug(name: str) -> str:
    """A method name as a folder name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("_") or "method"


def method_dir(bench_dir: Path, method: str) -> Path:
    return Path(bench_dir) / slug(method)


# ------------------------------------------------------------------------------------------------ tables


def _fmt(value: Optional[float], scale: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * 100:.2f}" if scale else f"{value:.3f}"


def _delta(value: Optional[float], base: Optional[float], scale: bool) -> str:
    if value is None or base is None or any(isinstance(x, float) and math.isnan(x) for x in (value, base)):
        return ""
    d = (value - base) * (100 if scale else 1)
    arrow = "↑" if d > 0 else ("↓" if d < 0 else "=")
    return f" ({arrow}{abs(d):.1f})" if scale else f" ({arrow}{abs(d):.3f})"


def find_baseline(results: Sequence[dict], baseline: str) -> Optional[dict]:
    """A row by method name, or a results.json path (a run from elsewhere)."""
    if not baseline:
        return None
    for r in results:
        if r.get("method") == baseline:
            return r
    path = Path(baseline)
    if path.is_file():
        return json.loads(path.read_text())
    return None


def reference_rows(spec, keys: Sequence[str]) -> list[dict]:
    """Rows of a benchmark's published numbers (its YAML ``paper:`` block, x100) for ``keys``, as results
    with fractions (what the table shows beside the runs; never in metrics.json or MLflow)."""
    out = []
    for key in keys:
        numbers = (spec.paper or {}).get(key)
        if isinstance(numbers, dict):
            out.append({"benchmark": spec.name, "method": f"paper: {key}", "reference": True,
                        "metrics": {k: float(v) / 100 for k, v in numbers.items() if finite(v)}})
    return out


def markdown_table(results: Sequence[dict], baseline: str = "", columns=None,
                   references: Sequence[dict] = ()) -> str:
    """One table per benchmark; rows sorted with the baseline first; absent metrics shown as ``–``.
    ``columns``: :class:`~cim.eval.metrics.Column` s; default every registered metric's columns. ``references``
    (:func:`reference_rows`): published numbers, shown after the runs as ``◇`` rows without deltas."""
    if columns is None:
        columns = table_columns()
    out: list[str] = []
    by_bench: dict[str, list[dict]] = {}
    for r in results:
        by_bench.setdefault(r["benchmark"], []).append(r)
    refs_by_bench: dict[str, list[dict]] = {}
    for r in references:
        refs_by_bench.setdefault(r["benchmark"], []).append(r)
    for bench, rows in sorted(by_bench.items()):
        base = find_baseline(rows, baseline)
        present = [c for c in columns if any(c.key in r["metrics"] for r in [*rows, *refs_by_bench.get(bench, [])])]
        base_method = base.get("method") if base else None
        rows = sorted(rows, key=lambda r: (r.get("method") != base_method, r.get("method", "")))
        rows += refs_by_bench.get(bench, [])
        out.append(f"### {bench}" + (f" (deltas vs {base['method']})" if base else ""))
        out.append("")
        out.append("| Method | " + " | ".join(label(c) for c in present) + " |")
        out.append("|---|" + "---|" * len(present))
        for r in rows:
            is_base = base is not None and r.get("method") == base_method
            cells = []
            for c in present:
                v = r["metrics"].get(c.key)
                cell = _fmt(v, c.percent)
                if base is not None and not is_base and not r.get("reference"):
                    cell += _delta(v, base["metrics"].get(c.key), c.percent)
                cells.append(cell)
            mark = "◇ " if r.get("reference") else ("○ " if is_base else ("● " if base is not None else ""))
            name = mark + r.get("method", "?")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        notes = sorted({f"{k}: {v}" for r in rows for k, v in r.get("labels", {}).items()})
        notes += [n for r in rows for n in coverage_notes(r.get("method", "?"), r.get("counts") or {})]
        if refs_by_bench.get(bench):
            notes.append("◇ rows: the paper's published numbers (the benchmark's `paper:` block), not runs")
        if notes:
            out.append("")
            out.extend(f"- {n}" for n in notes)
        out.append("")
    return "\n".join(out)


def coverage_notes(method: str, counts: dict) -> list[str]:
    """What a row did not count: images without a caption (scored on a subset) and each metric's own skips."""
    out = []
    cov = counts.get("coverage") or {}
    if cov.get("without_caption"):
        out.append(f"coverage: {method}: {cov['captioned']} of {cov['samples']} images captioned (every metric "
                   "on those; eval.allow_partial)")
    for name, c in sorted(counts.items()):
        if isinstance(c, dict) and c.get("skipped_no_attributes"):
            out.append(f"coverage: {method}: {name} skipped {c['skipped_no_attributes']} of "
                       f"{c.get('samples', cov.get('captioned', '?'))} images (no attribute in the reference or "
                       "the caption: the metric's own rule)")
    return out


# ----------------------------------------------------------------------------------- headline and MLflow
def benchmark_numbers(info: dict):
    """``(metric, its headline numbers)`` for each benchmark experiment that ran (verification, ...)."""
    for name in info.get("metrics", []):
        m = metric(name)
        if m.scope == "benchmark" and m.headline and info.get(name):
            yield m, m.headline(info[name])


def headline(summary: dict) -> dict:
    """The numbers DVC tracks: ``{benchmark: {method: {metric: value}}}`` plus, per benchmark experiment,
    ``{benchmark: {experiment: {number: value}}}`` (verification r's, parser recall)."""
    out: dict = {}
    for r in summary["results"]:
        out.setdefault(r["benchmark"], {})[r["method"]] = {k: v for k, v in r["metrics"].items() if finite(v)}
    for bench, info in summary["benchmarks"].items():
        for m, numbers in benchmark_numbers(info):
            out.setdefault(bench, {})[m.name] = numbers
    return out


def mlflow_metrics(results: Sequence[dict], baseline: str = "") -> dict[str, float]:
    """``{"<benchmark>/<method>/<metric>": value}`` plus ``.../delta_<metric>`` against the baseline."""
    out: dict[str, float] = {}
    by_bench: dict[str, list[dict]] = {}
    for r in results:
        by_bench.setdefault(r["benchmark"], []).append(r)
    for bench, rows in by_bench.items():
        base = find_baseline(rows, baseline)
        for r in rows:
            for key, value in r["metrics"].items():
                if finite(value):
                    name = f"{bench}/{_safe(r['method'])}/{key}"
                    out[name] = float(value)
                    b = (base or {}).get("metrics", {}).get(key)
                    if base is not None and r is not base and finite(b):
                        out[f"{bench}/{_safe(r['method'])}/delta_{key}"] = float(value) - float(b)
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_. " else "_" for ch in name)


# ------------------------------------------------------------------------------------ captioner comparison
COMPARISON_JSON, COMPARISON_TABLE, COMPARISON_PLOT = "captioners.json", "captioners.md", "captioners.png"
COMPARISON_METRICS = "metrics.json"   # <pipeline.out_dir>/metrics.json: captioner -> headline metric (DVC metrics)
COMPARISON_DETAILS = "details.json"   # every column, n_seeds, deltas, intervals (not a DVC metric: too wide a table)
HEADLINE = ("capture", "cim")   # the columns `dvc metrics show` / `dvc exp show` list per captioner (the paper's two)
COMPARISON_PLOT_DATA = "plot.json"    # rows {captioner, metric, value, low, high} (dvc plots, template bar_ci)


def _pct(column) -> float:
    return 100.0 if column.percent else 1.0


def comparison_markdown(table: dict, summary_only: bool = True) -> str:
    """The comparison (:func:`cim.pipeline.table.comparison`) as two markdown tables: each row's mean over its
    seeds ± half its 95% interval, then each delta against the baseline with its paired-bootstrap interval,
    marked ``*`` when that interval excludes 0."""
    from cim.eval.intervals import significant

    cols = [c for c in table_columns() if c.key in table["columns"] and (c.summary or not summary_only)]
    base = table["baseline"]

    def mean(r: dict, c) -> str:
        ci = r.get(f"{c.key}_ci95")
        return f"{r[c.key] * _pct(c):.2f}" + (f" ± {(ci[1] - ci[0]) / 2 * _pct(c):.2f}" if ci else "")

    def delta(r: dict, c) -> str:
        ci, s = r.get(f"delta_{c.key}_ci95"), _pct(c)
        span = f" [{ci[0] * s:+.2f}, {ci[1] * s:+.2f}]" if ci else ""
        return f"{r[f'delta_{c.key}'] * s:+.2f}{span}{'*' if significant(r, c.key) else ''}"

    def rows(cell, skip_base: bool) -> list[str]:
        return [f"| {'○' if r['captioner'] == base else '●'} {r['captioner']} | {r['n_seeds']} | "
                + " | ".join(cell(r, c) for c in cols) + " |"
                for r in table["rows"] if not (skip_base and r["captioner"] == base)]

    head = ["| Captioner | seeds | " + " | ".join(label(c) for c in cols) + " |", "|---|---|" + "---|" * len(cols)]
    out = [f"### {table['benchmark']}: mean over seeds ± half the 95% interval ({table['samples']} images)", "",
           *head, *rows(mean, False), "",
           f"### Δ vs {base} (paired bootstrap over images and seeds, 95% interval; * = excludes 0)", "",
           *head, *rows(delta, True)]
    skips = sorted({f"{m} skipped {'/'.join(map(str, v))} of {r['samples']} images for {r['captioner']}"
                    for r in table["rows"] for m, v in (r.get("coverage") or {}).get("skipped", {}).items()})
    out += [""] + [f"- coverage: {line} (the metric's own rule; per seed)" for line in skips]
    seeds = f"seeds: {table['seeds']}; " if table.get("seeds") else ""
    out += [f"- ○ baseline row; {seeds}intervals: {table['n_boot']} bootstrap "
            "draws of the images (paired across rows) and of each row's seeds",
            "- percentages except CIM Υ and words; GT columns: recall against the benchmark's ground-truth scene "
            "graphs (no parser), the others the parser/judge-based metrics of `cim evaluate`"]
    lower = [c for c in cols if c.lower_better]
    if lower:                         # deltas keep their sign: say which way is better where it is down
        out += [f"- ↓: lower is better ({', '.join(c.header for c in lower)}; a negative Δ is less of it)"]
    out += [""]
    return "\n".join(out)


def comparison_plot(table: dict, path: Path) -> Path:
    """Bars of the main percentage columns per captioner, with the 95% intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from cim.io import atomic_write

    cols = [c for c in table_columns() if c.key in table["columns"] and c.summary and c.percent]
    rows = table["rows"]
    fig, ax = plt.subplots(figsize=(12, 4.2))
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(cols))
    for i, r in enumerate(rows):
        values = np.array([r[c.key] * 100 for c in cols])
        cis = [r.get(f"{c.key}_ci95") or [r[c.key]] * 2 for c in cols]
        err = np.array([[v - ci[0] * 100 for v, ci in zip(values, cis)], [ci[1] * 100 - v for v, ci in zip(values, cis)]])
        ax.bar(x + i * width - 0.4 + width / 2, values, width, yerr=np.clip(err, 0, None), capsize=2,
               label=f"{r['captioner']} ({r['n_seeds']} seed{'s' if r['n_seeds'] > 1 else ''})")
    ax.set_xticks(x, [label(c) for c in cols])
    ax.set_ylabel("score (x100), mean over seeds; bars: 95% interval")
    ax.set_title(f"captioners on {table['benchmark']} (baseline {table['baseline']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90, metadata={"Software": None}))
    plt.close(fig)
    return path


def comparison_details(table: dict) -> dict:
    """The whole comparison as nested mappings: ``{captioner: {metric: mean, "n_seeds": n, "delta": {metric: d},
    "ci95": {metric: {"low", "high"}}}}`` (DVC would flatten it to ``cim.delta.capture``, ``cim.ci95.capture.low``:
    ``dvc metrics show reports/results/details.json`` lists it on request)."""
    out = {}
    for r in table["rows"]:
        entry: dict = {k: r[k] for k in table["columns"]}
        entry["n_seeds"] = r["n_seeds"]
        entry["delta"] = {k: r[f"delta_{k}"] for k in table["columns"]}
        entry["ci95"] = {k: {"low": r[f"{k}_ci95"][0], "high": r[f"{k}_ci95"][1]}
                         for k in table["columns"] if r.get(f"{k}_ci95")}
        out[r["captioner"]] = entry
    return out


def comparison_metrics(table: dict) -> dict:
    """The headline for DVC (``metrics:``): ``{captioner: {metric: mean over seeds}}`` for the :data:`HEADLINE`
    columns the table has, so ``dvc metrics show`` / ``dvc exp show`` stay a readable width (``cim.capture``);
    the rest is in :func:`comparison_details`."""
    return {r["captioner"]: {k: r[k] for k in HEADLINE if k in table["columns"]} for r in table["rows"]}


def comparison_plot_data(table: dict) -> list[dict]:
    """The main columns per captioner as rows ``{captioner, metric, value, low, high}`` (x100 where the table
    shows x100): what ``dvc plots`` draws as bars with interval whiskers (template ``.dvc/plots/bar_ci.json``)."""
    cols = [c for c in table_columns() if c.key in table["columns"] and c.summary]
    out = []
    for c in cols:
        for r in table["rows"]:
            ci = r.get(f"{c.key}_ci95") or [r[c.key]] * 2
            out.append({"captioner": r["captioner"], "metric": label(c), "value": r[c.key] * _pct(c),
                        "low": ci[0] * _pct(c), "high": ci[1] * _pct(c)})
    return out


def write_comparison(table: dict, out_dir: Path) -> list[Path]:
    """``captioners.json`` (the table), ``captioners.md``, ``captioners.png``, ``metrics.json`` (the headline: DVC
    metrics), ``details.json`` (everything else, nested) and ``plot.json`` (DVC plots) in ``out_dir``; nothing in
    them differs between two runs of the same inputs."""
    from cim.io import atomic_write_text, write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / COMPARISON_JSON, table)
    write_json(out_dir / COMPARISON_METRICS, comparison_metrics(table))
    write_json(out_dir / COMPARISON_DETAILS, comparison_details(table))
    write_json(out_dir / COMPARISON_PLOT_DATA, comparison_plot_data(table))
    atomic_write_text(out_dir / COMPARISON_TABLE, comparison_markdown(table))
    return [out_dir / COMPARISON_JSON, out_dir / COMPARISON_METRICS, out_dir / COMPARISON_DETAILS,
            out_dir / COMPARISON_TABLE, out_dir / COMPARISON_PLOT_DATA,
            comparison_plot(table, out_dir / COMPARISON_PLOT)]
