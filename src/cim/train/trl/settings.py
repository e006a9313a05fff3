"""``train.grpo`` (shared) + ``train.trl`` (this backend's) + ``reward.guards``/``aggregate`` (the reward
functions' weights, :func:`reward_terms`) -> TRL's ``GRPOConfig``; peft's ``LoraConfig``."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _bf16(dtype: str) -> bool:
    if dtype != "auto":
        return dtype == "bfloat16"
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def grpo_kwargs(cfg) -> dict[str, Any]:
    """The ``GRPOConfig`` keyword arguments for ``cfg`` (the shared GRPO settings first)."""
    g, t = cfg.train.grpo, cfg.train.trl
    bf16 = _bf16(t.dtype)
    out: dict[str, Any] = {
        # train.grpo
        "num_generations": g.group_size, "beta": g.kl_coef, "temperature": g.temperature,
        # train.trl
        "output_dir": str(Path(t.out_dir).resolve() / "trainer"),
        "learning_rate": t.lr, "per_device_train_batch_size": t.prompts_per_step * g.group_size,
        "gradient_accumulation_steps": t.gradient_accumulation_steps,
        "num_train_epochs": t.num_train_epochs, "max_steps": t.max_steps,
        "max_completion_length": t.max_completion_length, "loss_type": t.loss_type, "epsilon": t.epsilon,
        "bf16": bf16, "model_init_kwargs": {"dtype": "bfloat16" if bf16 else "float32"},
        "gradient_checkpointing": t.gradient_checkpointing,
        "use_vllm": t.use_vllm, "vllm_mode": t.vllm_mode,
        "vllm_gpu_memory_utilization": t.vllm_gpu_memory_utilization,
        "save_strategy": "steps", "save_steps": t.save_steps, "save_total_limit": t.save_total_limit,
        "logging_steps": t.logging_steps, "report_to": "none", "seed": int(cfg.seed),
        "optim": "adamw_torch", "weight_decay": 0.0, "lr_scheduler_type": "constant",
        "scale_rewards": "group", "log_completions": False, "disable_tqdm": True,
    }
    terms = reward_terms(cfg)
    if len(terms) > 1:                       # several reward functions (guards, GDPO): their weights
        out["reward_weights"] = [float(w) for _, w in terms]
    if cfg.reward.aggregate == "gdpo":
        out["multi_objective_aggregation"] = "normalize_then_sum"
    return out


def reward_terms(cfg) -> list[tuple[str, float]]:
    """TRL's reward functions as ``(key of a scored row, weight)``, in order (:mod:`cim.train.trl.reward`):

    - ``aggregate=sum`` without guards: ``[("score", 1)]``, one function (the reward as it always was);
    - ``aggregate=sum`` with guards: Υ (``upsilon``) then each ``guard_<name>`` with its weight: TRL sums them
      (``sum_then_normalize``) into the composed score and logs each as its own ``rewards/<name>``;
    - ``aggregate=gdpo``: the reward's terms (:func:`cim.reward.guards.reward_terms`: GRC, QIR with weight β,
      each guard), each normalised in its group by TRL (``normalize_then_sum``, the GDPO paper's)."""
    from cim.reward.guards import TERM_PREFIX
    from cim.reward.guards import reward_terms as terms

    r = cfg.reward
    if r.aggregate == "gdpo":
        return terms(r)
    guards = [t for t in terms(r) if t[0].startswith(TERM_PREFIX)]
    return [("upsilon", 1.0), *guards] if guards else [("score", 1.0)]


def grpo_config(cfg):
    from trl import GRPOConfig

    return GRPOConfig(**grpo_kwargs(cfg))


def lora_config(cfg):
    """peft's ``LoraConfig`` with ``train.trl.lora``, else None (full fine-tuning)."""
    t = cfg.train.trl
    if not t.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=t.lora_r, lora_alpha=t.lora_alpha, lora_dropout=t.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
