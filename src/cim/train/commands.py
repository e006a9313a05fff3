"""`cim train`: GRPO with the CIM reward -- ``--backend verl`` (GPU cluster) or ``--backend local`` (CPU).

verl: builds ``python -m verl.trainer.main_ppo <overrides>`` (:mod:`cim.train.verl_launch`), counts the
training rows verl's overlong-prompt filter will drop, starts the shared reward service (or finds it
running) and waits until it answers, opens an MLflow parent run and runs verl inside it (``MLFLOW_RUN_ID``:
verl's mlflow logger attaches to that run), then logs the checkpoint list to the run. The in-process scorer
(one per reward worker) is the explicit opt-in ``train.service.in_process=true``. ``--dry-run`` prints the
command and changes nothing.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("verl", "local"), default=None,
                        help="trainer backend (default train.backend)")
    parser.add_argument("--preset", default=None, help="verl: model preset, configs/train/<name>.yaml")
    parser.add_argument("--setting", choices=("base", "sft"), default=None,
                        help="verl: start from the base model or an SFT checkpoint (train.verl.sft_checkpoint)")
    parser.add_argument("--dry-run", action="store_true", help="print the command (verl) or plan (local) and exit")
    parser.add_argument("--list-presets", action="store_true", help="list the verl presets and exit")
    parser.add_argument("--variant", metavar="NAME",
                        help="local: train a row of the captioner comparison into <pipeline.checkpoint_dir>/NAME: "
                             "the SFT start (pipeline.sft) or a GRPO variant (pipeline.variants) from it")
    from cim.protocols import add_argument

    add_argument(parser)


def snapshot_params(cfg, path: Path) -> Path:
    """The resolved config with absolute paths, for reward workers that run in other folders or nodes."""
    from omegaconf import OmegaConf

    from cim.io import atomic_write_text

    snap = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for key in ("index.out_dir", "index.manifest", "index.sources", "tracking.artifact_dir", "train.data_dir",
                "train.manifest"):
        value = OmegaConf.select(snap, key)
        if value:
            OmegaConf.update(snap, key, str(Path(value).resolve()))
    uri = snap.tracking.uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        snap.tracking.uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    for key in ("encoders.text.model", "encoders.image.pretrained"):
        value = OmegaConf.select(snap, key)
        if value and Path(value).exists():
            OmegaConf.update(snap, key, str(Path(value).resolve()))
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
    from cim.train.verl_launch import (build_overrides, load_preset, main_ppo_command, prompt_length,
                                       ray_submit_command, reward_service_url)

    v = cfg.train.verl
    data = Path(cfg.train.data_dir).resolve()
    url = reward_service_url(cfg)
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
    r = cfg.reward
    return {"command": cmd, "overrides": overrides, "data_dir": str(data),
            "checkpoint_dir": str(Path(v.checkpoint_dir).resolve()), "service_url": url,
            "reward": {"top_k": r.top_k, "exclude_source": r.exclude_source, "beta": r.beta, "decay": r.decay,
                       "mode": r.mode},
            "model": _model_of(overrides), "max_prompt_length": prompt_length(cfg, preset),
            "trust_remote_code": bool((preset.get("overrides") or {}).get("actor_rollout_ref.model.trust_remote_code")),
            "protocol": describe(cfg)}


def _is_loopback(url: str) -> bool:
    from cim.service.process import is_loopback_url

    return is_loopback_url(url)


def _model_of(overrides: list[str]) -> str:
    key = "actor_rollout_ref.model.path="
    return next((o[len(key):] for o in reversed(overrides) if o.startswith(key)), "")


def overlong_report(plan: dict) -> dict:
    """:func:`cim.train.prompt_lengths.count_overlong` on the training parquet of ``plan``, logged."""
    from cim.train.prompt_lengths import count_overlong

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


def ensure_reward_service(cfg, params: str, overrides: list[str], log_path: str | None = None):
    """The shared reward service verl will score through, up and answering ``/health`` (started on loopback
    with ``params`` and ``overrides`` when down, see :func:`cim.service.process.ensure`); ``None`` with
    ``train.service.in_process``."""
    from omegaconf import OmegaConf

    from cim.service import process
    from cim.train.verl_launch import reward_service_url

    url = reward_service_url(cfg)
    if not url:
        return None
    return process.ensure(OmegaConf.merge(cfg, {"train": {"service": {"url": url}}}), params, overrides,
                          log_path=log_path)


def _reward_line(plan: dict, snapshot: Path) -> str:
    r = plan["reward"]
    where = f"service {plan['service_url']}" if plan["service_url"] else "in-process scorer in every reward worker"
    settings = ", ".join(f"{k}={v}" for k, v in r.items())
    return f"# protocol: {plan['protocol']['name']}; reward: {where} ({settings}); params snapshot -> {snapshot}"


def launch_verl(cfg, dry_run: bool = False) -> dict:
    """Run verl for ``cfg`` inside an MLflow parent run; returns ``{"returncode", "run_id", "checkpoints"}``.

    The library form of ``cim train --backend verl`` (the Prefect flow calls this). A reward service started
    here reads the params snapshot (``cfg`` resolved), so it scores with the same config as the trainer.
    """
    from cim.config import flatten
    from cim.protocols import tags as protocol_tags
    from cim.tracking import start_run, tracking_uri
    from cim.train.verl_launch import format_command

    v = cfg.train.verl
    ckpt = Path(v.checkpoint_dir).resolve()
    snapshot = ckpt / "cim_params.yaml"
    plan = verl_plan(cfg, str(snapshot))
    if dry_run:
        print(_reward_line(plan, snapshot))
        print(format_command(plan["command"], {"MLFLOW_RUN_ID": "<parent run>",
                                               "MLFLOW_TRACKING_URI": tracking_uri(cfg)}))
        return {"returncode": 0, "run_id": None, "checkpoints": [], "plan": plan}
    data = Path(plan["data_dir"])
    for name in sorted({"train.parquet", Path(val_files(cfg, data)).name}):
        if not (data / name).exists():
            raise FileNotFoundError(f"{data / name} is missing; run `cim prepare-train` first")
    print(_reward_line(plan, snapshot), file=sys.stderr, flush=True)
    overlong = overlong_report(plan)
    snapshot_params(cfg, snapshot)
    service = ensure_reward_service(cfg, str(snapshot), [], log_path=str(ckpt / "reward_service.log"))
    try:
        with start_run(cfg, "train", tags={"backend": "verl", "preset": v.preset, "setting": v.setting,
                                           **protocol_tags(cfg)}, log_params=False) as run:
            import mlflow

            # cim's params under "cim." (verl logs its own config into the same run)
            params_ = {f"cim.{k}": ("" if val is None else val) for k, val in flatten(cfg).items()}
            items = list(params_.items())
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i:i + 100]))
            mlflow.log_text("\n".join(plan["command"]), "verl_command.txt")
            mlflow.log_dict({"protocol": plan["protocol"], "overlong_prompts": overlong}, "launch.json")
            mlflow.set_tag("data.overlong_counted", str(overlong["counted"]))
            if overlong["counted"]:
                mlflow.log_metrics({"data/overlong_dropped": overlong["dropped"], "data/train_rows": overlong["rows"],
                                    "data/train_rows_kept": overlong["kept"]})
            mlflow.set_tag("reward.backend", "service" if service is not None else "in-process")
            if service is not None and service.health:
                mlflow.set_tags({"reward.index_checksum": str(service.health.get("index_checksum")),
                                 "reward.corpus_size": str(service.health.get("corpus_size")),
                                 "reward.service_url": service.url})
            env = {**os.environ, "MLFLOW_RUN_ID": run.info.run_id, "MLFLOW_TRACKING_URI": tracking_uri(cfg),
                   "CIM_REWARD_PARAMS": str(snapshot)}
            print(f"cim train: verl in MLflow run {run.info.run_id}", file=sys.stderr, flush=True)
            rc = subprocess.call(plan["command"], env=env)
            found = checkpoints(ckpt)
            mlflow.log_dict({"checkpoint_dir": str(ckpt), "checkpoints": found, "returncode": rc},
                            "checkpoints.json")
            if found:
                mlflow.set_tag("checkpoint.latest", found[-1]["path"])
            mlflow.set_tag("verl.returncode", str(rc))
            run_id = run.info.run_id
        return {"returncode": rc, "run_id": run_id, "checkpoints": found, "overlong_prompts": overlong}
    finally:
        if service is not None:
            service.stop()


def run(args: argparse.Namespace) -> int:
    from cim.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.list_presets:
        from cim.train.verl_launch import list_presets, load_preset

        for name in list_presets():
            print(f"{name:16s} {load_preset(name)['model']}")
        return 0
    from cim.protocols import with_protocol

    overrides = with_protocol(args)
    if args.preset:
        overrides.append(f"train.verl.preset={args.preset}")
    if args.setting:
        overrides.append(f"train.verl.setting={args.setting}")
    cfg = load_config(args.params, overrides)
    backend = args.backend or cfg.train.backend
    if backend == "verl":
        return int(launch_verl(cfg, dry_run=args.dry_run)["returncode"])
    if args.variant and not args.dry_run:
        from cim.pipeline import checkpoint_dir, train_sft, train_variant, variant_config

        variant_config(cfg, args.variant)          # a name that is no row: one line, before any work
        if args.variant == cfg.pipeline.sft:
            train_sft(cfg, checkpoint_dir(cfg, args.variant))
        else:
            train_variant(cfg, args.variant, checkpoint_dir(cfg, cfg.pipeline.sft), checkpoint_dir(cfg, args.variant))
        return 0
    from cim.train.local import run_local

    return run_local(cfg, dry_run=args.dry_run)
