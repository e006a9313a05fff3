"""The training curves PNG: per-step training reward/GRC/QIR and KL, held-out reward, held-out ground truth."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

# what GRPO optimised, per reward.mode (cim.reward.scorer): the curves' titles say it
OPTIMISED = {"both": "Υ = GRC + β·QIR", "grc": "GRC only (Eq. 1)", "qir": "QIR only (Eq. 2)"}


def optimised_reward(mode: str, beta: float) -> str:
    """``reward = ...`` as optimised in ``mode`` (``both`` names β's value)."""
    if mode == "both":
        return f"reward Υ = GRC + {beta:g}·QIR"
    return f"reward = {OPTIMISED.get(mode, mode)}"


def plot_curves(history: Sequence[dict], path: Path, title: str = "", reward_label: str = "reward") -> Optional[Path]:
    """``history``: one dict per step (``RunHistory.by_step()``). Written atomically; None when empty."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cim.io import atomic_write

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    train = [h for h in history if "train/reward_mean" in h]
    steps = [h["step"] for h in train]
    for key, label in (("train/reward_mean", reward_label), ("train/grc", "GRC"), ("train/qir", "QIR")):
        axes[0].plot(steps, [h.get(key, float("nan")) for h in train], label=label, lw=1)
    axes[0].set_title("training captions (per step)")
    axes[0].legend(fontsize=7)
    ax = axes[0].twinx()
    ax.plot(steps, [h.get("train/kl", float("nan")) for h in train], color="grey", lw=0.8, ls=":")
    ax.set_ylabel("KL to SFT (dotted)")
    ev = [h for h in history if "eval/reward" in h]
    for key, label in (("eval/reward", reward_label), ("eval/grc", "GRC"), ("eval/qir", "QIR")):
        axes[1].plot([h["step"] for h in ev], [h[key] for h in ev], marker="o", label=label)
    axes[1].set_title("held-out captions (greedy)")
    axes[1].legend(fontsize=7)
    for key in ("eval/object_recall", "eval/attribute_recall", "eval/relation_recall", "eval/attribute_precision"):
        axes[2].plot([h["step"] for h in ev], [h.get(key, float("nan")) for h in ev], marker="o",
                     label=key.split("/")[1])
    axes[2].set_title("held-out ground-truth recall")
    axes[2].legend(fontsize=7)
    for a in axes:
        a.set_xlabel("GRPO step")
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90, metadata={"Software": None}))
    plt.close(fig)
    return path
