"""What an evaluation run reports: paper-style results tables, the headline numbers DVC tracks, MLflow.

- :func:`markdown_table`: rows = model and method; columns = every registered metric's columns
  (:func:`cim.eval.metrics.table_columns`: CAPTURE, Objects P/R/F1, Attributes P/R/F1, Relations QA, BLEU-4,
  METEOR, CIM, and any metric a plugin adds), with deltas against a named baseline row, like Table 2.
  ``COLUMNS`` is that list, read when accessed.
- :func:`headline`: ``metrics.json`` (``{benchmark: {method: {metric: value}}}`` plus each benchmark
  experiment's headline numbers); :func:`log_mlflow`: one MLflow run with the same numbers, deltas and the
  report folders.
- Files: :func:`method_dir` (``<bench_dir>/<method slug>``), :func:`write_json` (atomic, NaN -> null).

A result is the dict :meth:`cim.eval.evaluate.MethodResult.to_dict` writes to ``results.json``: it has
``benchmark``, ``method`` and ``metrics`` (a flat name -> value map, fractions in 0..1, CIM raw).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from cim.io import atomic_write_json

METRICS_FILE = "metrics.json"    # <eval.out_dir>/metrics.json: the headline numbers (DVC metrics)
TABLE_FILE = "table.md"          # <eval.out_dir>/<benchmark>/table.md


def __getattr__(name: str):
    if name == "COLUMNS":          # derived from the metric registry each time (plugins add columns)
        from cim.eval.metrics import table_columns

        return table_columns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------------------------- files
def slug(name: str) -> str:
    """A method name as a folder name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("_") or "method"


def method_dir(bench_dir: Path, method: str) -> Path:
    return Path(bench_dir) / slug(method)


def clean(value: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python numbers, recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, clean(data), default=str)


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


def load_results(paths: Iterable[Path]) -> list[dict]:
    return [json.loads(Path(p).read_text()) for p in paths]


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
    ``columns``: ``(key, header, x100)`` triples; default every registered metric's columns. ``references``
    (:func:`reference_rows`): published numbers, shown after the runs as ``◇`` rows without deltas."""
    if columns is None:
        from cim.eval.metrics import table_columns

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
        present = [c for c in columns if any(c[0] in r["metrics"] for r in [*rows, *refs_by_bench.get(bench, [])])]
        base_method = base.get("method") if base else None
        rows = sorted(rows, key=lambda r: (r.get("method") != base_method, r.get("method", "")))
        rows += refs_by_bench.get(bench, [])
        out.append(f"### {bench}" + (f" (deltas vs {base['method']})" if base else ""))
        out.append("")
        out.append("| Method | " + " | ".join(h for _, h, _ in present) + " |")
        out.append("|---|" + "---|" * len(present))
        for r in rows:
            is_base = base is not None and r.get("method") == base_method
            cells = []
            for key, _, scale in present:
                v = r["metrics"].get(key)
                cell = _fmt(v, scale)
                if base is not None and not is_base and not r.get("reference"):
                    cell += _delta(v, base["metrics"].get(key), scale)
                cells.append(cell)
            mark = "◇ " if r.get("reference") else ("○ " if is_base else ("● " if base is not None else ""))
            name = mark + r.get("method", "?")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        notes = sorted({f"{k}: {v}" for r in rows for k, v in r.get("labels", {}).items()})
        if refs_by_bench.get(bench):
            notes.append("◇ rows: the paper's published numbers (the benchmark's `paper:` block), not runs")
        if notes:
            out.append("")
            out.extend(f"- {n}" for n in notes)
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------------- headline and MLflow
def finite(value) -> bool:
    """A number that is not NaN (what metrics.json and MLflow keep)."""
    return isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))


def _benchmark_numbers(info: dict):
    """``(metric, its headline numbers)`` for each benchmark experiment that ran (verification, ...)."""
    from cim.eval.metrics import METRICS

    for name in info.get("metrics", []):
        m = METRICS.get(name)
        if m.scope == "benchmark" and m.headline and info.get(name):
            yield m, m.headline(info[name])


def headline(summary: dict) -> dict:
    """The numbers DVC tracks: ``{benchmark: {method: {metric: value}}}`` plus, per benchmark experiment,
    ``{benchmark: {experiment: {number: value}}}`` (verification r's, parser recall)."""
    out: dict = {}
    for r in summary["results"]:
        out.setdefault(r["benchmark"], {})[r["method"]] = {k: v for k, v in r["metrics"].items() if finite(v)}
    for bench, info in summary["benchmarks"].items():
        for m, numbers in _benchmark_numbers(info):
            out.setdefault(bench, {})[m.name] = numbers
    return out


def log_mlflow(cfg, summary: dict, out_dir: Path, started: float | None = None) -> None:
    """One MLflow run (stage ``evaluate``): every table number and its delta against ``eval.baseline``,
    each experiment's headline as ``<benchmark>/<experiment>/<number>``, and the report folders."""
    import mlflow

    from cim.protocols import tags
    from cim.tracking import start_run

    with start_run(cfg, "evaluate", tags={"benchmarks": ",".join(summary["benchmarks"]),
                                          "baseline": cfg.eval.baseline or "none", **tags(cfg)},
                   run_name=f"evaluate[{','.join(summary['benchmarks'])}]", start_time=started):
        mlflow.log_metrics(mlflow_metrics(summary["results"], cfg.eval.baseline))
        for bench, info in summary["benchmarks"].items():
            for m, numbers in _benchmark_numbers(info):
                for k, v in numbers.items():
                    mlflow.log_metric(f"{bench}/{m.tracking}/{k}", v)
            bench_dir = Path(out_dir) / bench
            if bench_dir.is_dir():
                mlflow.log_artifacts(str(bench_dir), artifact_path=f"eval/{bench}")


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
