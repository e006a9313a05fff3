"""The captioners' comparison as numbers: each row's mean over its seeds, a 95% interval, and its delta
against the baseline row with a paired bootstrap interval (:mod:`cim.eval.intervals`).

``comparison(results, benchmark, baseline, metrics)`` takes ``{row: [one evaluation per seed]}`` (the
:class:`cim.eval.evaluate.MethodResult` of each seed's captions, all over the same samples) and returns the
table ``{"benchmark", "baseline", "n_boot", "level", "columns", "rows"}``; a row is::

    {"captioner": "cim", "n_seeds": 3, "samples": 150,
     "capture": 0.67, "capture_ci95": [0.65, 0.69], "delta_capture": 0.15, "delta_capture_ci95": [0.12, 0.17],
     ..., "per_seed": {"capture": [0.66, 0.68, 0.67], ...}}

for every column of the registered method metrics the evaluation produced (:func:`cim.eval.metrics.
table_columns`) and defined on every run (a metric undefined on a run -- no object named, say -- is left out
of every row); every row has the same keys (0 deltas on the baseline itself). ``lower_is_better`` (only when
there are such columns): the columns whose metric declares a smaller value better (``Column.lower_better``). Files and figures:
:mod:`cim.eval.results` (``write_comparison``).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from cim.errors import ConfigError
from cim.eval.intervals import LEVEL, draws, interval, point
from cim.eval.metrics import Metric, finite, table_columns

__all__ = ["comparison"]


def _seed_stats(results: Sequence, metrics: Sequence[Metric], ids: Sequence[str]) -> list[dict]:
    out = []
    for res in results:
        items = [res.items.get(i, {}) for i in ids]
        stats = {}
        for m in metrics:
            if m.scope == "method" and m.name not in res.errors:      # columns the metric defined on this run
                stats.update({k: v for k, v in m.sample_stats(items).items() if finite(res.metrics.get(k))})
        out.append(stats)
    return out


def comparison(results: Mapping[str, Sequence], benchmark: str, baseline: str, metrics: Sequence[Metric],
               ids: Sequence[str], *, n_boot: int, seed: int = 0) -> dict:
    """The table (see the module doc) over the samples ``ids`` (each result's ``items`` hold them)."""
    if baseline not in results:
        raise ConfigError(f"baseline {baseline!r} is not one of the captioners: {', '.join(results)}")
    stats = {name: _seed_stats(res, metrics, ids) for name, res in results.items()}
    keys = [c.key for c in table_columns() if all(c.key in s for seeds in stats.values() for s in seeds)]
    boot = draws(stats, keys, n_boot=n_boot, seed=seed)
    rows = []
    for name, seeds in stats.items():
        row: dict = {"captioner": name, "n_seeds": len(seeds), "samples": len(ids)}
        per_seed = {}
        for key in keys:
            row[key], per_seed[key] = point(seeds, key)
            row[f"{key}_ci95"] = interval(boot[name][key])
        for key in keys:
            base = point(stats[baseline], key)[0]
            row[f"delta_{key}"] = row[key] - base
            row[f"delta_{key}_ci95"] = [0.0, 0.0] if name == baseline else \
                interval(boot[name][key] - boot[baseline][key])
        row["per_seed"] = per_seed
        rows.append(row)
    table = {"benchmark": benchmark, "baseline": baseline, "samples": len(ids), "n_boot": n_boot, "level": LEVEL,
             "columns": keys, "rows": rows}
    lower = [c.key for c in table_columns() if c.key in keys and c.lower_better]
    if lower:                 # the columns where less is better (repetition); deltas keep their sign
        table["lower_is_better"] = lower
    return table
