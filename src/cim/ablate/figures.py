"""Saving an ablation's figure (both the quality-order plot and the aggregate axis's reward curves)."""
from __future__ import annotations

from pathlib import Path

__all__ = ["save_figure"]


def save_figure(fig, path: Path) -> Path:
    """An ablation's figure as a PNG without a timestamp or software tag (the same bytes on every run)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
