"""95% intervals for a comparison table: a paired, two-level bootstrap over benchmark images and seeds.

A row of the table is a captioner with one or more seeds (GRPO runs from one SFT start); each seed's
evaluation left per-sample statistics for every column (:meth:`cim.eval.metrics.Metric.sample_stats`:
``(parts, finish)``, so a column over any weighting of the samples is ``finish(weights @ parts)``: a mean, a
ratio of sums or a corpus BLEU/METEOR alike).

One bootstrap draw (``n_boot`` of them, seeded; ``pipeline.n_boot``):

1. the benchmark images are drawn with replacement, **once for every row** (the same weights: the
   differences between rows are paired over images);
2. each row's seeds are drawn with replacement (a row of one seed keeps it);
3. a row's value is the mean over its drawn seeds of each seed's column on the drawn images, and a delta is
   that value minus the baseline row's in the same draw.

The interval is the percentile interval (2.5th, 97.5th) of the draws; the point estimate is the mean over
seeds on all images (what the table reports). A delta whose interval excludes 0 is marked *significant*.
Seeds only vary GRPO: the SFT start is shared, so the baseline row's interval is over images alone.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["Stats", "draws", "point", "interval", "significant", "LEVEL"]

LEVEL = 0.95

# one seed's statistics: {column: (parts (n_samples, d), finish)}
Stats = Mapping[str, tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]]


def point(seeds: Sequence[Stats], key: str) -> tuple[float, list[float]]:
    """(the mean over seeds of the column on all samples, each seed's value)."""
    per_seed = [float(finish(parts.sum(axis=0, keepdims=True))[0]) for parts, finish in (s[key] for s in seeds)]
    return float(np.nanmean(per_seed)) if per_seed else float("nan"), per_seed


def draws(rows: Mapping[str, Sequence[Stats]], keys: Sequence[str], n_boot: int,
          seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """``{row: {column: (n_boot,) values}}``: the bootstrap distribution of each row's value (see the module
    doc). Every row's seeds must hold statistics over the same samples, in the same order."""
    sizes = {parts.shape[0] for seeds in rows.values() for s in seeds for parts, _ in s.values()}
    if len(sizes) > 1:
        raise ValueError(f"rows hold statistics over different numbers of samples ({sorted(sizes)}): "
                         "a paired bootstrap needs the same samples in every row")
    n = sizes.pop() if sizes else 0
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float) if n else np.zeros((n_boot, 0))
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, seeds in rows.items():          # in table order: the draws depend only on the seed and the rows
        picks = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
        out[name] = {}
        for key in keys:
            if not all(key in s for s in seeds):
                continue
            per_seed = np.stack([finish(weights @ parts) for parts, finish in (s[key] for s in seeds)], axis=1)
            with np.errstate(invalid="ignore"), _quiet():
                out[name][key] = np.nanmean(np.take_along_axis(per_seed, picks, axis=1), axis=1)
    return out


def interval(values: np.ndarray, level: float = LEVEL) -> list[float] | None:
    """The percentile interval of bootstrap ``values`` (NaN draws left out); None when there are none."""
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]


def significant(row: dict, key: str) -> bool:
    """Whether a comparison row's delta interval for ``key`` excludes 0."""
    ci = row.get(f"delta_{key}_ci95")
    return bool(ci) and (ci[0] > 0 or ci[1] < 0)


class _quiet:
    """Silence numpy's 'Mean of empty slice' (a draw where no sample had a value: NaN, left out)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)
