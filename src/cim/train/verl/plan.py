"""What `cim train --backend verl` will run, resolved without side effects, and what it leaves behind.

- :func:`verl_plan`: the ``main_ppo`` (or ``ray job submit``) command and its overrides, the data and checkpoint
  folders, the reward service URL, the reward settings, the model, the protocol;
- :func:`snapshot_params`: the resolved config with absolute paths, for reward workers on other folders/nodes;
- :func:`overlong_report`: how many training rows verl's overlong-prompt filter will drop;
- :func:`checkpoints`: verl's ``global_step_N`` folders after a run.

The run itself (reward service, MLflow run, the subprocess) is the train stage: :mod:`cim.stages.train`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from cim.reward.settings import reward_settings

log = logging.getLogger(__name__)

__all__ = ["verl_plan", "snapshot_params", "val_files", "overlong_report", "checkpoints", "reward_line"]


def snapshot_params(cfg, path: Path) -> Path:
    """The resolved config with absolute paths, for reward workers that run in other folders or nodes."""
    from omegaconf import OmegaConf

    from cim.io import atomic_write_text

    from cim.config import path_keys

    snap = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    strict = set(path_keys(or_name=False))
    for key in path_keys():            # a hub name or a path: resolved only where such a path exists
        value = OmegaConf.select(snap, key)
        if OmegaConf.is_dict(value):
            OmegaConf.update(snap, key, {k: str(Path(v).resolve()) for k, v in value.items()}, merge=False)
        elif value and (key in strict or Path(value).exists()):
            OmegaConf.update(snap, key, str(Path(value).resolve()))
    uri = snap.tracking.uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        snap.tracking.uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    # the protocol is already applied above: cleared so that loading the snapshot does not apply it again
    # over values an override changed; the header keeps its name
    name, snap.protocol = snap.protocol, ""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# resolved config of protocol {name!r} (applied; every value below is final)\n" if name else ""
    atomic_write_text(path, header + OmegaConf.to_yaml(snap))
    return path


def val_files(cfg, data: Path) -> str:
    """verl's ``data.val_files``: ``val.parquet``, or the training parquet itself when there is no
    validation manifest and ``train.val_size`` is 0 (the release: train and val are the same file)."""
    if not cfg.train.val_manifest and cfg.train.val_size <= 0:
        return str(data / "train.parquet")
    return str(data / "val.parquet")


def verl_plan(cfg, params_snapshot: str) -> dict:
    """Everything `cim train --backend verl` will run, without side effects."""
    from cim.errors import ConfigError
    from cim.protocols import describe
    from cim.service.process import service_url
    from cim.train.verl.launch import (build_overrides, load_preset, main_ppo_command, prompt_length,
                                       ray_submit_command)

    v = cfg.train.verl
    if cfg.train.sentinels.enabled and cfg.train.sentinels.on_trip == "stop":
        raise ConfigError("train.sentinels.on_trip=stop is for --backend local: verl's sentinels run on the reward "
                          "side, which cannot checkpoint or stop verl's trainer; use train.sentinels.on_trip=warn "
                          "(a trip prints its line and tags the MLflow run)")
    data = Path(cfg.train.data_dir).resolve()
    url = service_url(cfg)
    if url and v.nnodes > 1 and _is_loopback(url):
        raise ConfigError(f"train.verl.nnodes={v.nnodes}: reward workers on the other nodes cannot reach {url}; "
                          "set train.service.url to an address every node reaches (cim serve --host 0.0.0.0)")
    preset = load_preset(v.preset)
    overrides = build_overrides(cfg, train_files=str(data / "train.parquet"), val_files=val_files(cfg, data),
                                params_snapshot=params_snapshot, service_url=url, preset=preset)
    if v.ray_address:
        env = {"CIM_REWARD_PARAMS": params_snapshot}
        cmd = ray_submit_command(v.ray_address, overrides, env=env)
    else:
        cmd = main_ppo_command(overrides)
    return {"command": cmd, "overrides": overrides, "data_dir": str(data),
            "checkpoint_dir": str(Path(v.checkpoint_dir).resolve()), "service_url": url,
            "reward": reward_settings(cfg.reward),
            "model": _model_of(overrides), "max_prompt_length": prompt_length(cfg, preset),
            "trust_remote_code": bool((preset.get("overrides") or {}).get("actor_rollout_ref.model.trust_remote_code")),
            "protocol": describe(cfg)}


def _is_loopback(url: str) -> bool:
    from cim.service.client import split_urls
    from cim.service.process import is_loopback_url

    return any(is_loopback_url(u) for u in split_urls(url))


def _model_of(overrides: list[str]) -> str:
    key = "actor_rollout_ref.model.path="
    return next((o[len(key):] for o in reversed(overrides) if o.startswith(key)), "")


def overlong_report(plan: dict) -> dict:
    """:func:`cim.train.verl.prompt_lengths.count_overlong` on the training parquet of ``plan``, logged."""
    from cim.train.verl.prompt_lengths import count_overlong

    info = count_overlong(Path(plan["data_dir"]) / "train.parquet", plan["model"], plan["max_prompt_length"],
                          trust_remote_code=plan["trust_remote_code"])
    if info["counted"]:
        log.info("data.filter_overlong_prompts will drop %d of %d training rows (max_prompt_length %d)%s",
                 info["dropped"], info["rows"], info["max_prompt_length"],
                 (": " + ", ".join(info["dropped_ids"])) if info["dropped"] else "")
    else:
        log.warning("overlong prompts not counted: %s", info["reason"])
    return info


def checkpoints(checkpoint_dir: str | Path) -> list[dict]:
    """verl's ``global_step_N`` folders (with whether an HF export is inside)."""
    root = Path(checkpoint_dir)
    out = []
    for d in sorted(root.glob("global_step_*"), key=lambda p: int(p.name.rsplit("_", 1)[-1])
                    if p.name.rsplit("_", 1)[-1].isdigit() else -1):
        out.append({"step": d.name.rsplit("_", 1)[-1], "path": str(d.resolve()),
                    "hf_model": str((d / "actor" / "huggingface").resolve()) if (d / "actor" / "huggingface").exists()
                    else None})
    return out


def reward_line(plan: dict, snapshot: Path) -> str:
    r = plan["reward"]
    where = f"service {plan['service_url']}" if plan["service_url"] else "in-process scorer in every reward worker"
    settings = ", ".join(f"{k}={v}" for k, v in r.items())
    return f"# protocol: {plan['protocol']['name']}; reward: {where} ({settings}); params snapshot -> {snapshot}"
