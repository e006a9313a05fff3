"""The reward's settings as every record of a scoring run writes them (the audit's and the verify stage's
settings.json, the service's ``/health``, the training plans, the evaluation table's CIM protocol): one dict,
the same keys everywhere. Light (nothing heavy imported): the training plans call it without a scorer."""
from __future__ import annotations

__all__ = ["SETTINGS", "reward_settings"]

# the keys of reward.* that decide a score (reward.batch_size, on_failure and neutral_score do not)
SETTINGS = ("top_k", "decay", "beta", "mode", "exclude_source", "tie_tolerance")


def reward_settings(source) -> dict:
    """``{top_k, decay, beta, mode, exclude_source, tie_tolerance}`` of ``source``: a
    :class:`cim.reward.scorer.Scorer` (what it scores with) or ``cfg.reward`` (what a run will score with).
    With guard terms (``reward.guards``) also ``guards`` (name -> settings) and ``aggregate``; without them,
    and with ``aggregate = sum``, the paper's six keys alone (every earlier record stays as it was)."""
    out = {"top_k": int(source.top_k), "decay": float(source.decay), "beta": float(source.beta),
           "mode": str(source.mode), "exclude_source": bool(source.exclude_source),
           "tie_tolerance": float(source.tie_tolerance)}
    guards = getattr(source, "guards", None) or []
    if guards:
        if hasattr(guards[0], "describe"):                   # a scorer's built guards
            out["guards"] = {g.name: dict(g.settings) for g in guards}
        else:                                                # cfg.reward: the configured names
            from cim.reward.guards import guard_settings

            out["guards"] = {name: guard_settings(source, name) for name in guards}
    aggregate = str(getattr(source, "aggregate", "sum") or "sum")
    if aggregate != "sum":
        out["aggregate"] = aggregate
    return out
