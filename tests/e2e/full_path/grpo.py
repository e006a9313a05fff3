"""One GRPO update of the policy on the agent loop's batch, and the checkpoint in verl's FSDP layout.

The forward pass is what verl's FSDP engine feeds the model without remove-padding
(``prepare_model_inputs``): ``input_ids``, ``attention_mask``, M-RoPE ``position_ids`` as ``(4, batch, len)``
and the concatenated ``multi_modal_inputs`` (:func:`verl.utils.model.extract_multi_modal_inputs`). Everything
else is verl's: ``compute_advantage`` (GRPO, ``core_algos.compute_grpo_outcome_advantage``), the policy loss
``core_algos.get_policy_loss_fn(loss_mode)``, ``kl_penalty`` and ``agg_loss`` combined as verl's ``ppo_loss``
does, the actor's optimizer (verl's ``build_optimizer``). This stands in for verl's actor worker
(``ActorRolloutRefWorker`` with ``FSDPEngineWithLMHead``): what FSDP adds -- sharding, a process group, GPUs,
remove-padding with flash-attention varlen -- is not run.

:func:`save_actor_checkpoint` writes ``global_step_N/actor`` as ``FSDPCheckpointManager.save_checkpoint``
does for world size 1 (``model_world_size_1_rank_0.pt``, ``fsdp_config.json``, ``huggingface/`` with the
config, generation config and processor); ``python -m verl.model_merger merge --backend fsdp`` turns it into
the Hugging Face folder a GPU run hands to captioning.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["load_policy", "response_log_probs", "grpo_step", "save_actor_checkpoint"]


def load_policy(path: str):
    import torch
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=torch.float32)


def response_log_probs(model, batch, grad: bool = False):
    """Per-token log-probs (and entropies) of ``responses`` under ``model``: (batch, response_len) each."""
    import contextlib

    import torch
    from verl.utils.model import extract_multi_modal_inputs
    from verl.utils.torch_functional import entropy_from_logits, logprobs_from_logits

    t = batch.batch
    input_ids, attention_mask, position_ids = t["input_ids"], t["attention_mask"], t["position_ids"]
    if position_ids.dim() == 3:                               # (batch, 4, len) -> (4, batch, len), as verl's engine
        position_ids = position_ids.transpose(0, 1)
    mm = extract_multi_modal_inputs(list(batch.non_tensor_batch["multi_modal_inputs"]))
    mm = {k: v for k, v in mm.items() if k in ("pixel_values", "image_grid_thw")}
    resp_len = t["responses"].shape[1]
    with (contextlib.nullcontext() if grad else torch.no_grad()):
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False, **mm).logits
        logits = logits[:, -resp_len - 1:-1, :].float()
        logp = logprobs_from_logits(logits, t["responses"])
        ent = entropy_from_logits(logits)
    return logp, ent


def grpo_step(cfg, model, batch) -> dict[str, Any]:
    """old/ref log-probs, GRPO advantages (verl's ``compute_advantage``), one optimizer step on verl's PPO
    loss; returns the metrics. ``batch`` is the trainer's batch after the rollout (``rm_scores``, ``uid``)."""
    import numpy as np
    import torch
    from verl.trainer.ppo.core_algos import agg_loss, get_policy_loss_fn, kl_penalty
    from verl.trainer.ppo.ray_trainer import compute_advantage, compute_response_mask
    from verl.trainer.ppo.reward import extract_reward
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config.optimizer import build_optimizer

    actor_cfg = cfg.actor_rollout_ref.actor
    actor = omega_conf_to_dataclass(actor_cfg)              # verl's ActorConfig (clip ratios, loss mode, KL)
    t = batch.batch
    if "response_mask" not in t.keys():
        t["response_mask"] = compute_response_mask(batch)
    mask = t["response_mask"]
    reward_tensor, extras = extract_reward(batch)
    t["token_level_scores"] = reward_tensor
    t["token_level_rewards"] = reward_tensor
    model.eval()
    old, _ = response_log_probs(model, batch)                 # the actor's recomputation (decoupled mode)
    t["old_log_probs"] = old
    t["ref_log_prob"] = old.clone()                           # the reference policy is the untrained policy
    batch = compute_advantage(batch, adv_estimator=cfg.algorithm.adv_estimator, gamma=cfg.algorithm.gamma,
                              lam=cfg.algorithm.lam, num_repeat=int(cfg.actor_rollout_ref.rollout.n),
                              norm_adv_by_std_in_grpo=cfg.algorithm.get("norm_adv_by_std_in_grpo", True),
                              config=cfg.algorithm)
    t = batch.batch
    opt = build_optimizer(model.parameters(), actor.optim)   # verl's builder: optim.optimizer=Adam -> torch.optim.Adam
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    logp, ent = response_log_probs(model, batch, grad=True)
    mode = actor.loss_agg_mode
    pg_loss, pg_metrics = get_policy_loss_fn(actor.policy_loss.get("loss_mode", "vanilla"))(
        old_log_prob=t["old_log_probs"], log_prob=logp, advantages=t["advantages"], response_mask=mask.bool(),
        loss_agg_mode=mode, config=actor)
    loss = pg_loss - actor.entropy_coeff * agg_loss(loss_mat=ent, loss_mask=mask, loss_agg_mode=mode)
    kl = torch.zeros(())
    if actor.use_kl_loss:
        kl = agg_loss(loss_mat=kl_penalty(logprob=logp, ref_logprob=t["ref_log_prob"], kl_penalty=actor.kl_loss_type),
                      loss_mask=mask, loss_agg_mode=mode)
        loss = loss + actor.kl_loss_coef * kl
    opt.zero_grad()
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float(actor.grad_clip)))
    opt.step()
    model.eval()
    changed = sum(int(not torch.equal(before[k], v)) for k, v in model.state_dict().items())
    rollout_lp = t["rollout_log_probs"] if "rollout_log_probs" in t.keys() else None
    lp_gap = float(((rollout_lp - t["old_log_probs"]).abs() * mask).max()) if rollout_lp is not None else None
    scores = reward_tensor.sum(-1)
    adv = t["advantages"][:, 0]
    return {"loss": float(loss), "pg_loss": float(pg_loss), "kl_loss": float(kl), "grad_norm": grad_norm,
            "pg_metrics": {k: float(v) for k, v in pg_metrics.items() if np.isscalar(v) or getattr(v, "ndim", 1) == 0},
            "reward_mean": float(scores.mean()), "reward_std": float(scores.std()),
            "advantages": [round(float(a), 4) for a in adv], "tensors_changed": changed, "tensors": len(before),
            "max_rollout_vs_actor_logprob_gap": lp_gap, "optimizer": type(opt).__name__,
            "lr": float(actor.optim.lr), "weight_decay": float(actor.optim.weight_decay),
            "reward_extra_keys": sorted(extras)}


def save_actor_checkpoint(model, processor, actor_dir: Path) -> Path:
    """``global_step_N/actor`` as verl's ``FSDPCheckpointManager`` writes it for world size 1 (see the module
    docstring); returns ``actor_dir``."""
    import torch

    actor_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), actor_dir / "model_world_size_1_rank_0.pt")
    hf = actor_dir / "huggingface"
    hf.mkdir(exist_ok=True)
    model.config.save_pretrained(hf)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(hf)
    processor.save_pretrained(hf)
    (actor_dir / "fsdp_config.json").write_text(json.dumps({"FSDP_version": 1, "world_size": 1}, indent=4))
    return actor_dir
