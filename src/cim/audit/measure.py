"""Pairs scored: how often the original beats its degraded copy, with 95% intervals from a bootstrap over
captions.

For one component (Υ, GRC or QIR; with guard terms also the composed reward, Υ alone and each guard:
:func:`components`) and one set of pairs (an axis, or one kind), each pair's difference is
``Δ = value(original) − value(degraded)``; ``|Δ| <= tie_within`` is a tie. Then, pooled over the pairs:

- ``rate``: the share of pairs the original wins, a tie counting half (the probability that the component
  puts the original above its copy, ties split; 0.5 is chance however many ties there are);
- ``wins``: the share it wins outright, ``ties``: the share that tie, ``margin``: the mean Δ;
- ``ci95``: the 2.5 and 97.5 percentiles of ``rate`` over ``bootstrap`` resamples of the *captions* (a
  caption's pairs stay together, so pairs of one caption are not counted as independent evidence);
- ``pairs`` and ``captions``: how many went in.

``state``: ``orders`` when the whole interval lies above 0.5, ``reverses`` when below, else ``chance``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from cim.audit.settings import AXES, KINDS

__all__ = ["COMPONENTS", "components", "value", "summarise", "state", "bootstrap_weights"]

COMPONENTS = ("score", "grc", "qir")     # without guards: the reward (score, which is Υ) and its two terms
_CHUNK_CELLS = 20_000_000         # resample weights held at once (replicates x captions)


def components(guards: Sequence[str] = ()) -> tuple[str, ...]:
    """The components audited for a reward with these guard terms (``reward.guards``, in order): without
    guards :data:`COMPONENTS`; with them the composed reward ``score``, the paper's Υ ``upsilon``, ``grc``,
    ``qir`` and each guard's unweighted value ``guard_<name>`` (:data:`cim.reward.guards.TERM_PREFIX`)."""
    if not guards:
        return COMPONENTS
    from cim.reward.guards import TERM_PREFIX

    return ("score", "upsilon", "grc", "qir", *(TERM_PREFIX + str(g) for g in guards))


def value(result: dict, comp: str) -> float:
    """A scored result's value of one component (a guard's from the result's ``guards``)."""
    if comp in result:
        return result[comp]
    from cim.reward.guards import TERM_PREFIX

    return result["guards"][comp[len(TERM_PREFIX):]]


def state(cell: dict) -> str:
    lo, hi = cell["ci95"]
    if lo is None:
        return "none"
    return "orders" if lo > 0.5 else "reverses" if hi < 0.5 else "chance"


def bootstrap_weights(n: int, replicates: int, seed: int):
    """Yield chunks of resample weights: (r, n) arrays counting how often each caption was drawn (each row
    one resample of ``n`` captions with replacement). Chunked so a million captions do not need r x n."""
    rng = np.random.default_rng([int(seed), 0xB007])
    per = max(1, min(replicates, _CHUNK_CELLS // max(n, 1)))
    done = 0
    while done < replicates:
        r = min(per, replicates - done)
        draws = rng.integers(0, n, size=(r, n)) + (np.arange(r, dtype=np.int64) * n)[:, None]
        done += r
        yield np.bincount(draws.reshape(-1), minlength=r * n).reshape(r, n).astype(np.float64)


def _round(x, digits: int):
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def summarise(pair_caption: np.ndarray, pair_kind: Sequence[str], deltas: dict[str, np.ndarray], n_captions: int,
              *, kinds: Sequence[str], tie_within: float, bootstrap: int, seed: int) -> dict:
    """``{component: {"detail": cell + {"kinds": {kind: cell}}, "precision": ..., "hacks": {kind: cell}}}``.

    ``pair_caption``: each pair's caption number (0..n_captions-1); ``pair_kind``: its kind; ``deltas``:
    per component (in the report's order, :func:`components`), each pair's Δ (original − degraded). Axes
    or kinds with no pair are left out. Every component is measured on the same bootstrap resamples.
    """
    pair_caption = np.asarray(pair_caption, dtype=np.int64)
    pair_kind = np.asarray(pair_kind, dtype=object)
    groups: list[tuple[str, str | None, np.ndarray]] = []      # (axis, kind or None for the axis, mask)
    for axis, axis_kinds in AXES.items():
        present = [k for k in axis_kinds if k in kinds]
        if axis != "hacks" and present:
            groups.append((axis, None, np.isin(pair_kind, present)))
        groups += [(axis, k, pair_kind == k) for k in present]
    # per caption sums for every (component, group): score (win 1, tie 1/2), ties, wins, Δ, count
    cells = []
    for comp in deltas:
        d = np.asarray(deltas[comp], dtype=np.float64)
        tie = np.abs(d) <= tie_within
        win = (d > tie_within)
        for axis, kind, mask in groups:
            c = pair_caption[mask]
            sums = {name: np.bincount(c, weights=values[mask], minlength=n_captions)
                    for name, values in (("s", win + 0.5 * tie), ("t", tie.astype(float)), ("w", win.astype(float)),
                                         ("d", d), ("n", np.ones_like(d)))}
            cells.append((comp, axis, kind, sums))
    if not cells:
        return {}
    s_mat = np.stack([c[3]["s"] for c in cells], axis=1)        # (captions, cells)
    n_mat = np.stack([c[3]["n"] for c in cells], axis=1)
    reps = []
    if n_captions:
        for w in bootstrap_weights(n_captions, bootstrap, seed):
            with np.errstate(invalid="ignore", divide="ignore"):
                reps.append((w @ s_mat) / (w @ n_mat))
    reps = np.concatenate(reps, axis=0) if reps else np.zeros((0, len(cells)))
    out: dict = {comp: {} for comp in deltas}
    for j, (comp, axis, kind, sums) in enumerate(cells):
        n = sums["n"].sum()
        if n == 0:
            continue
        finite = reps[:, j][np.isfinite(reps[:, j])]
        lo, hi = (np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan))
        cell = {"rate": _round(sums["s"].sum() / n, 4), "ci95": [_round(lo, 4), _round(hi, 4)],
                "margin": _round(sums["d"].sum() / n, 5), "ties": _round(sums["t"].sum() / n, 4),
                "wins": _round(sums["w"].sum() / n, 4), "pairs": int(n),
                "captions": int((sums["n"] > 0).sum())}
        target = out[comp]
        if axis == "hacks":
            target.setdefault("hacks", {})[kind] = cell
        elif kind is None:
            target[axis] = {**cell, "kinds": {}}
        else:
            target[axis]["kinds"][kind] = cell
    return out


assert set(KINDS.values()) == set(AXES)
