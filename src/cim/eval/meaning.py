"""What a reward number means, in words a newcomer can use (``cim score`` prints it; docs/reward.md).

The range follows from the equations (:mod:`cim.reward.equations`): GRC is the length of a mean of unit
vectors, so ``0 <= GRC <= 1``; QIR is a λ-weighted sum of K cosines, so ``|QIR| <= Σ_r λ(r)`` (1.9375 at K=5,
λ(r) = 0.5^(r-1)); Υ = GRC + β·QIR therefore lies below ``1 + β·Σλ`` (2.94 at K=5, β=1), and in practice above
0 (image embeddings of one corpus do not point away from each other). With guard terms (``reward.guards``)
the score is Υ plus each guard's weighted value in [-1, 0], so it reaches down to minus the sum of the weights.
Reference points on the index at hand come from the verify stage (captions of known quality scored on the
same index, encoders and reward settings): its ``settings.json`` must equal this scorer's, else none are
shown.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

__all__ = ["upper_bound", "reference_points", "describe"]

# verify's levels (cim.data.world_captions) in the words a newcomer would use
_LEVEL_WORDS = {"detailed-correct": "detailed", "coarse-correct": "vague", "partly-wrong": "partly wrong",
                "wrong": "another image's"}


def upper_bound(top_k: int, decay: float, beta: float, mode: str) -> float:
    """The largest value the reward can take: GRC <= 1, QIR <= Σ_{r=1..K} decay^(r-1)."""
    qir_max = sum(decay ** r for r in range(int(top_k)))
    return {"grc": 1.0, "qir": qir_max}.get(mode, 1.0 + beta * qir_max)


def reference_points(cfg, scorer) -> Optional[dict[str, float]]:
    """``{level: mean score}`` from the verify report of this very index and reward (``verify.out_dir``), or
    ``None`` when there is none or it was made with other settings."""
    from cim.eval.quality_order import settings

    out = Path(cfg.verify.out_dir)
    try:
        stored = json.loads((out / "settings.json").read_text(encoding="utf-8"))
        means = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["score"]["mean_by_level"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    mine = json.loads(json.dumps(settings(cfg, scorer), default=str))
    return {str(k): float(v) for k, v in means.items()} if stored == mine else None


def describe(cfg, scorer=None) -> str:
    """One line: the range, what to compare, and the reference points of this index when verify has them."""
    r = cfg.reward
    top = upper_bound(r.top_k, r.decay, r.beta, r.mode)
    guards = list(r.guards or [])
    if guards:                      # score = Υ + Σ weight·guard, each guard in [-1, 0]
        from cim.reward.guards import guard_settings

        weights = {g: guard_settings(r, g)["weight"] for g in guards}
        terms = " + ".join(f"{w:g}·{g}" for g, w in weights.items())
        line = (f"score = Υ + guards = Υ + {terms} (reward.guards; each guard in -1..0, 0: nothing wrong); "
                f"Υ = GRC + β·QIR (reward.mode={r.mode}, in `upsilon`) lies in about 0..{top:.2f} here (GRC <= 1, "
                f"QIR <= Σλ(r) at K={r.top_k}, β={r.beta:g}), so score lies in about {-sum(weights.values()):.2f}.."
                f"{top:.2f}; higher = the caption retrieves images like its own and has none of what the guards "
                "catch (each guard's value in `guards`); compare captions of the same image on the same index only")
    else:
        line = (f"score = GRC + β·QIR (reward.mode={r.mode}) lies in about 0..{top:.2f} here (GRC <= 1, QIR <= "
                f"Σλ(r) at K={r.top_k}, β={r.beta:g}); higher = the caption retrieves images like its own; compare "
                "captions of the same image on the same index only")
    points = reference_points(cfg, scorer) if scorer is not None else None
    if points:
        shown = ", ".join(f"{_LEVEL_WORDS.get(k, k)} {v:.2f}" for k, v in points.items())
        line += f". On this index, mean scores of captions by quality ({cfg.verify.out_dir}): {shown}"
    else:
        line += ". For reference points on this index (detailed / vague / another image's caption) run `cim verify`"
    return line
