"""The reward's settings as every record of a scoring run writes them (the audit's and the verify stage's
settings.json, the service's ``/health``, the training plans, the evaluation table's CIM protocol): one dict,
the same keys everywhere. Light (nothing heavy imported): the training plans call it without a scorer."""
from __future__ import annotations

__all__ = ["SETTINGS", "reward_settings"]

# the keys of reward.* that decide a score (reward.batch_size, on_failure and neutral_score do not)
SETTINGS = ("top_k", "decay", "beta", "mode", "exclude_source", "tie_tolerance")


def reward_settings(source) -> dict:
    """``{top_k, decay, beta, mode, exclude_source, tie_tolerance}`` of ``source``: a
    :class:`cim.reward.scorer.Scorer` (what it scores with) or ``cfg.reward`` (what a run will score with)."""
    return {"top_k": int(source.top_k), "decay": float(source.decay), "beta": float(source.beta),
            "mode": str(source.mode), "exclude_source": bool(source.exclude_source),
            "tie_tolerance": float(source.tie_tolerance)}
