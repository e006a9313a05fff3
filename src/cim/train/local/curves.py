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
    """``history``: one dict per step (``RunHistory.by_step()``); one panel per kind of curve it holds (the SFT
    start has no training-reward curve: no empty panel; a run with no curve at all gets one panel that says so,
    as the DVC stages declare the file). Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cim.io import atomic_write

    train = [h for h in history if "train/reward_mean" in h]
    ev = [h for h in history if "eval/reward" in h]
    recall = ("eval/object_recall", "eval/attribute_recall", "eval/relation_recall", "eval/attribute_precision")
    truth = [h for h in history if any(k in h for k in recall)]
    panels = [name for name, rows in (("train", train), ("eval", ev), ("recall", truth)) if rows] or ["none"]
    fig, axes = plt.subplots(1, len(panels), figsize=(14 * max(len(panels), 1.5) / 3, 3.6), squeeze=False)
    axes = dict(zip(panels, axes[0]))
    if "none" in axes:
        axes["none"].text(0.5, 0.5, "no curve: no GRPO step and no held-out evaluation was logged",
                          ha="center", va="center", fontsize=9)
        axes["none"].set_axis_off()
    if "train" in axes:
        steps = [h["step"] for h in train]
        for key, label in (("train/reward_mean", reward_label), ("train/grc", "GRC"), ("train/qir", "QIR")):
            axes["train"].plot(steps, [h.get(key, float("nan")) for h in train], label=label, lw=1)
        axes["train"].set_title("training captions (per step)")
        axes["train"].legend(fontsize=7)
        ax = axes["train"].twinx()
        ax.plot(steps, [h.get("train/kl", float("nan")) for h in train], color="grey", lw=0.8, ls=":")
        ax.set_ylabel("KL to SFT (dotted)")
    if "eval" in axes:
        for key, label in (("eval/reward", reward_label), ("eval/grc", "GRC"), ("eval/qir", "QIR")):
            axes["eval"].plot([h["step"] for h in ev], [h[key] for h in ev], marker="o", label=label)
        axes["eval"].set_title("held-out captions (greedy)")
        axes["eval"].legend(fontsize=7)
    if "recall" in axes:
        for key in recall:
            axes["recall"].plot([h["step"] for h in truth], [h.get(key, float("nan")) for h in truth], marker="o",
                                label=key.split("/")[1])
        axes["recall"].set_title("held-out ground-truth recall")
        axes["recall"].legend(fontsize=7)
    for name, a in axes.items():
        if name != "none":
            a.set_xlabel("GRPO step")
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90, metadata={"Software": None}))
    plt.close(fig)
    return path
