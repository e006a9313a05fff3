"""The paper's equations (arXiv 2603.01696, §3.2-3.3), as pure tensor functions.

Shapes: ``retrieved`` is ``(..., K, D)`` image embeddings of the top-K corpus hits in rank order;
``source`` is ``(..., D)``. Inputs are L2-normalised here again, so callers may pass raw embeddings.
Nothing of ours is imported: this file is the single place the maths lives. torch is imported when a
function first runs. No reward setting has a default here: callers pass ``reward.decay``, ``reward.beta`` and
``reward.mode`` (their defaults are the schema's, :class:`cim.config.schema.RewardConfig`). ``reward.mode``'s
choices are the schema's (``cim.config.choices("reward.mode")``; a test
checks each is computed here).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

def grc(retrieved: torch.Tensor) -> torch.Tensor:
    """Eq. (1): Gallery Representation Consistency, GRC(c) = || (1/K) sum_r v~(x_{i_r}) ||_2.

    The mean resultant length of the K retrieved image embeddings: 1 when they coincide, ~0 when they
    point in unrelated directions.
    """
    import torch.nn.functional as F

    unit = F.normalize(retrieved.float(), dim=-1)
    return unit.mean(dim=-2).norm(dim=-1)


def rank_weights(k: int, decay: float, device=None) -> torch.Tensor:
    """lambda(r) = decay ** (r - 1) for r = 1..k; the paper uses 1 / 2^(r-1)."""
    import torch

    return decay ** torch.arange(k, dtype=torch.float32, device=device)


def qir(source: torch.Tensor, retrieved: torch.Tensor, decay: float) -> torch.Tensor:
    """Eq. (2): Query-gallery Image Relevance, QIR(v, c) = sum_r lambda(r) cos(v~(v), v~(x_{i_r}))."""
    import torch.nn.functional as F

    src = F.normalize(source.float(), dim=-1).unsqueeze(-2)          # (..., 1, D)
    ret = F.normalize(retrieved.float(), dim=-1)                       # (..., K, D)
    cos = (src * ret).sum(dim=-1)                                      # (..., K)
    return (cos * rank_weights(cos.shape[-1], decay, cos.device)).sum(dim=-1)


def cim_reward(grc_value: torch.Tensor, qir_value: torch.Tensor, beta: float, mode: str) -> torch.Tensor:
    """Eq. (3): Upsilon(v, c) = GRC(c) + beta * QIR(v, c).

    ``mode`` is the Fig. 4 ablation: "grc" uses GRC alone, "qir" QIR alone.
    """
    if mode == "both":
        return grc_value + beta * qir_value
    if mode == "grc":
        return grc_value.clone()
    if mode == "qir":
        return qir_value.clone()
    raise ValueError(f"unknown reward mode {mode!r} (reward.mode: both, grc or qir)")


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """Eq. (4): A_z = (Upsilon_z - mean(group)) / std(group), for consecutive groups of ``group_size``.

    As in verl's GRPO estimator: unbiased std, ``eps`` added to it, and a group of one gets A = Upsilon.
    """
    flat = rewards.float().reshape(-1)
    if group_size < 1 or flat.numel() % group_size:
        raise ValueError(f"{flat.numel()} rewards do not split into groups of {group_size}")
    groups = flat.view(-1, group_size)
    if group_size == 1:
        return flat.clone()
    mean = groups.mean(dim=1, keepdim=True)
    std = groups.std(dim=1, keepdim=True)
    return ((groups - mean) / (std + eps)).reshape(rewards.shape)
