"""Paper-style results tables (rows: model and method; columns: CAPTURE, Objects P/R/F1, Attributes P/R/F1,
Relations QA, BLEU-4, METEOR, CIM) as markdown, with deltas against a named baseline row, like Table 2.

A result is the dict :meth:`cim.eval.evaluate.MethodResult.to_dict` writes to ``results.json``: it has
``benchmark``, ``method`` and ``metrics`` (a flat name -> value map, fractions in 0..1, CIM raw).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Optional, Sequence

# (metric key, column header, x100?)
COLUMNS: list[tuple[str, str, bool]] = [
    ("capture", "CAPTURE", True),
    ("object_precision", "Obj P", True), ("object_recall", "Obj R", True), ("object_f1", "Obj F1", True),
    ("attribute_precision", "Attr P", True), ("attribute_recall", "Attr R", True), ("attribute_f1", "Attr F1", True),
    ("relations_qa", "Rel QA", True),
    ("bleu4", "BLEU-4", True), ("meteor", "METEOR", True),
    ("cim", "CIM Υ", False),
]


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


def markdown_table(results: Sequence[dict], baseline: str = "", columns=COLUMNS) -> str:
    """One table per benchmark; rows sorted with the baseline first; absent metrics shown as ``–``."""
    out: list[str] = []
    by_bench: dict[str, list[dict]] = {}
    for r in results:
        by_bench.setdefault(r["benchmark"], []).append(r)
    for bench, rows in sorted(by_bench.items()):
        base = find_baseline(rows, baseline)
        present = [c for c in columns if any(c[0] in r["metrics"] for r in rows)]
        base_method = base.get("method") if base else None
        rows = sorted(rows, key=lambda r: (r.get("method") != base_method, r.get("method", "")))
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
                if base is not None and not is_base:
                    cell += _delta(v, base["metrics"].get(key), scale)
                cells.append(cell)
            name = ("○ " if is_base else ("● " if base is not None else "")) + r.get("method", "?")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        notes = sorted({f"{k}: {v}" for r in rows for k, v in r.get("labels", {}).items()})
        if notes:
            out.append("")
            out.extend(f"- {n}" for n in notes)
        out.append("")
    return "\n".join(out)


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
                if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
                    name = f"{bench}/{_safe(r['method'])}/{key}"
                    out[name] = float(value)
                    b = (base or {}).get("metrics", {}).get(key)
                    if base is not None and r is not base and isinstance(b, (int, float)) and not math.isnan(b):
                        out[f"{bench}/{_safe(r['method'])}/delta_{key}"] = float(value) - float(b)
    return out


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_. " else "_" for ch in name)
