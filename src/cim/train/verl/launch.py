"""`cim train --backend verl`: the ``python -m verl.trainer.main_ppo`` command from params and a preset.

Layers, last wins: the paper's GRPO settings from ``train.verl`` (n=5, batch 256, mini-batch 64, Adam
lr 1e-6 without weight decay, 2 epochs, a KL choice) -> the model preset (``configs/train/<preset>.yaml``:
model, parallelism, micro-batches, ``min_prompt_length``; its ``settings.<base|sft>`` block) -> the
protocol's raw ``verl`` keys (:mod:`cim.protocols`) -> ``train.verl.extra``. ``reward.aggregate=gdpo`` sets
verl's GDPO estimator on the reward's terms (:func:`gdpo_overrides`).
The reward is scored by the shared reward service (``train.service.url``, default ``http://host:port``)
unless ``train.service.in_process`` asks every reward worker to load its own scorer.
The reward goes through the ``reward.``-prefixed keys of verl 0.9.1 (the legacy top-level
``custom_reward_function.*`` keys are silently ignored by ``main_ppo``).
"""
from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path
from typing import Any, Optional

from cim.presets import PresetError, load_preset
from cim.service.process import service_url as configured_service_url

REWARD_FN = "pkg://cim.train.verl.reward"


_SIMPLE = re.compile(r"^[A-Za-z0-9_.\-/~+:@]*$")


def hydra_value(value: Any) -> str:
    """A Python value as a Hydra override value (strings quoted when they hold grammar characters)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    text = str(value)
    if text and _SIMPLE.match(text) and text.lower() not in ("true", "false", "null", "none"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _kv(key: str, value: Any) -> str:
    return f"{key}={hydra_value(value)}"


def prompt_length(cfg, preset: dict) -> int:
    """``data.max_prompt_length``: ``train.verl.max_prompt_length``, raised to the preset's
    ``min_prompt_length`` (what the model's image tokens alone can take, e.g. InternVL's tiling)."""
    return max(int(cfg.train.verl.max_prompt_length), int(preset.get("min_prompt_length") or 0))


def build_overrides(cfg, *, train_files: str, val_files: str, params_snapshot: str = "",
                    service_url: Optional[str] = None, preset: Optional[dict] = None,
                    experiment_name: Optional[str] = None) -> list[str]:
    """The verl overrides for one run (a list of ``key=value`` strings, in order; later ones win)."""
    v, s, g = cfg.train.verl, cfg.train.service, cfg.train.grpo
    preset = preset if preset is not None else load_preset(v.preset)
    setting = (preset.get("settings") or {}).get(v.setting) or {}
    if v.setting == "sft":
        model = v.model_path or v.sft_checkpoint or setting.get("model")
        if not model:
            raise PresetError("train.verl.setting=sft needs train.verl.sft_checkpoint (the SFT model to start from)")
    else:
        model = v.model_path or setting.get("model") or preset["model"]
    url = configured_service_url(cfg) if service_url is None else service_url
    ov: dict[str, Any] = {
        "algorithm.adv_estimator": "grpo",
        "data.train_files": train_files,
        "data.val_files": val_files,
        "data.train_batch_size": v.train_batch_size,
        "data.max_prompt_length": prompt_length(cfg, preset),
        "data.max_response_length": v.max_response_length,
        "data.image_key": "images",
        "data.filter_overlong_prompts": True,
        "data.truncation": "error",
        "actor_rollout_ref.model.path": model,
        "actor_rollout_ref.actor.optim.optimizer": v.optimizer,
        "actor_rollout_ref.actor.optim.lr": v.lr,
        "actor_rollout_ref.actor.optim.weight_decay": v.weight_decay,
        "actor_rollout_ref.actor.ppo_mini_batch_size": v.ppo_mini_batch_size,
        "actor_rollout_ref.actor.entropy_coeff": v.entropy_coeff,
        "actor_rollout_ref.actor.use_kl_loss": v.kl == "loss",
        "algorithm.use_kl_in_reward": v.kl == "reward",
        "actor_rollout_ref.rollout.name": v.rollout_engine,
        "actor_rollout_ref.rollout.n": g.group_size,
        "actor_rollout_ref.rollout.temperature": g.temperature,
        "reward.reward_manager.name": "naive",
        "reward.num_workers": v.reward_workers,
        "reward.custom_reward_function.path": REWARD_FN,
        "reward.custom_reward_function.name": "compute_score",
        "+reward.custom_reward_function.reward_kwargs.service_url": f"'{url}'" if "," in url else url,  # replicas
        "+reward.custom_reward_function.reward_kwargs.token_env": s.token_env,
        "+reward.custom_reward_function.reward_kwargs.params": params_snapshot,
        "+reward.custom_reward_function.reward_kwargs.fallback_score": float(s.fallback_score),
        "+reward.custom_reward_function.reward_kwargs.window_ms": float(s.client_window_ms),
        "+reward.custom_reward_function.reward_kwargs.timeout_s": float(s.timeout_s),
        "+reward.custom_reward_function.reward_kwargs.retries": int(s.retries),
        "trainer.logger": ["console", "mlflow"],
        "trainer.project_name": cfg.tracking.experiment,
        "trainer.experiment_name": experiment_name or cfg.train.run_name,
        "trainer.nnodes": v.nnodes,
        "trainer.n_gpus_per_node": v.n_gpus_per_node,
        "trainer.total_epochs": v.total_epochs,
        "trainer.save_freq": v.save_freq,
        "trainer.test_freq": v.test_freq,
        "trainer.val_before_train": v.val_before_train,
        "trainer.resume_mode": "auto",
        "trainer.default_local_dir": str(Path(v.checkpoint_dir).resolve()),
    }
    if v.kl == "loss":
        ov["actor_rollout_ref.actor.kl_loss_coef"] = g.kl_coef
        ov["actor_rollout_ref.actor.kl_loss_type"] = g.kl_type
    elif v.kl == "reward":
        ov["algorithm.kl_ctrl.kl_coef"] = g.kl_coef
        ov["algorithm.kl_penalty"] = g.kl_type
    if cfg.reward.aggregate == "gdpo":
        ov.update(gdpo_overrides(cfg.reward))
    for block in (preset.get("overrides") or {}, setting.get("overrides") or {}, _protocol_verl(cfg)):
        for key, value in block.items():
            ov[key] = value
    out = [_kv(k, val) for k, val in ov.items()]
    out.extend(v.extra)
    return out


def gdpo_overrides(reward_cfg) -> dict[str, Any]:
    """``reward.aggregate=gdpo``: verl's GDPO estimator over the reward's terms (:func:`cim.reward.guards.
    reward_terms`), which the reward function returns beside ``score``. verl 0.9.1 declares
    ``gdpo_reward_keys``/``_weights`` on its ``AlgoConfig`` but not in ``ppo_trainer.yaml``: added with ``+``."""
    from cim.reward.guards import reward_terms

    terms = reward_terms(reward_cfg)
    return {"algorithm.adv_estimator": "gdpo", "+algorithm.gdpo_reward_keys": [k for k, _ in terms],
            "+algorithm.gdpo_reward_weights": [float(w) for _, w in terms]}


def _protocol_verl(cfg) -> dict:
    if not cfg.protocol:
        return {}
    from cim.protocols import load_protocol

    return load_protocol(cfg.protocol).verl


def main_ppo_command(overrides: list[str], python: str = sys.executable) -> list[str]:
    return [python, "-m", "verl.trainer.main_ppo", *overrides]


def ray_submit_command(address: str, overrides: list[str], working_dir: Optional[str] = None,
                       env: Optional[dict] = None) -> list[str]:
    """``ray job submit --address ... -- python -m verl.trainer.main_ppo ...`` for a Ray cluster."""
    import json

    runtime_env: dict[str, Any] = {}
    if env:
        runtime_env["env_vars"] = env
    cmd = ["ray", "job", "submit", "--address", address]
    if working_dir:
        cmd += ["--working-dir", working_dir]
    if runtime_env:
        cmd += ["--runtime-env-json", json.dumps(runtime_env)]
    return cmd + ["--", "python", "-m", "verl.trainer.main_ppo", *overrides]


def format_command(cmd: list[str], env: Optional[dict] = None) -> str:
    """Shell form for reading and pasting: the launcher on one line, then one override per line."""
    prefix = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in (env or {}).items())
    split = cmd.index("verl.trainer.main_ppo") + 1 if "verl.trainer.main_ppo" in cmd else 1
    head = " ".join(shlex.quote(c) for c in cmd[:split])
    body = "".join(f" \\\n    {shlex.quote(c)}" for c in cmd[split:])
    return (prefix + " " if prefix else "") + head + body
