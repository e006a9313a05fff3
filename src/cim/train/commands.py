"""`cim train`: GRPO with the CIM reward -- ``--backend verl`` (GPU cluster) or ``--backend local`` (CPU).

verl: builds ``python -m verl.trainer.main_ppo <overrides>`` (:mod:`cim.train.verl_launch`), makes sure the
reward service is up (or configures the in-process scorer), opens an MLflow parent run and runs verl
inside it (``MLFLOW_RUN_ID``: verl's mlflow logger attaches to that run), then logs the checkpoint list to
the run. ``--dry-run`` prints the command and changes nothing.
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


def snapshot_params(cfg, path: Path) -> Path:
    """The resolved config with absolute paths, for reward workers that run in other folders or nodes."""
    from omegaconf import OmegaConf

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
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(snap, path)
    return path


def verl_plan(cfg, params_snapshot: str) -> dict:
    """Everything `cim train --backend verl` will run, without side effects."""
    from cim.train.verl_launch import build_overrides, main_ppo_command, ray_submit_command

    v = cfg.train.verl
    data = Path(cfg.train.data_dir).resolve()
    overrides = build_overrides(cfg, train_files=str(data / "train.parquet"), val_files=str(data / "val.parquet"),
                                params_snapshot=params_snapshot)
    if v.ray_address:
        env = {"CIM_REWARD_PARAMS": params_snapshot}
        cmd = ray_submit_command(v.ray_address, overrides, env=env)
    else:
        cmd = main_ppo_command(overrides)
    return {"command": cmd, "overrides": overrides, "data_dir": str(data),
            "checkpoint_dir": str(Path(v.checkpoint_dir).resolve()), "service_url": cfg.train.service.url}


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


def launch_verl(cfg, dry_run: bool = False) -> dict:
    """Run verl for ``cfg`` inside an MLflow parent run; returns ``{"returncode", "run_id", "checkpoints"}``.

    The library form of ``cim train --backend verl`` (the Prefect flow calls this). A reward service started
    here reads the params snapshot (``cfg`` resolved), so it scores with the same config as the trainer.
    """
    from cim.config import flatten
    from cim.service import process as service_process
    from cim.tracking import start_run, tracking_uri
    from cim.train.verl_launch import format_command

    v = cfg.train.verl
    ckpt = Path(v.checkpoint_dir).resolve()
    snapshot = ckpt / "cim_params.yaml"
    plan = verl_plan(cfg, str(snapshot))
    if dry_run:
        print(f"# reward: {'service ' + cfg.train.service.url if cfg.train.service.url else 'in-process scorer'}; "
              f"params snapshot -> {snapshot}")
        print(format_command(plan["command"], {"MLFLOW_RUN_ID": "<parent run>",
                                               "MLFLOW_TRACKING_URI": tracking_uri(cfg)}))
        return {"returncode": 0, "run_id": None, "checkpoints": [], "plan": plan}
    data = Path(plan["data_dir"])
    for name in ("train.parquet", "val.parquet"):
        if not (data / name).exists():
            raise FileNotFoundError(f"{data / name} is missing; run `cim prepare-train` first")
    snapshot_params(cfg, snapshot)
    service = None
    if cfg.train.service.url:
        service = service_process.ensure(cfg, str(snapshot), [], log_path=str(ckpt / "reward_service.log"))
    try:
        with start_run(cfg, "train", tags={"backend": "verl", "preset": v.preset, "setting": v.setting},
                       log_params=False) as run:
            import mlflow

            # cim's params under "cim." (verl logs its own config into the same run)
            params_ = {f"cim.{k}": ("" if val is None else val) for k, val in flatten(cfg).items()}
            items = list(params_.items())
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i:i + 100]))
            mlflow.log_text("\n".join(plan["command"]), "verl_command.txt")
            if service is not None and service.health:
                mlflow.set_tags({"reward.index_checksum": str(service.health.get("index_checksum")),
                                 "reward.corpus_size": str(service.health.get("corpus_size"))})
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
        return {"returncode": rc, "run_id": run_id, "checkpoints": found}
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
    overrides = list(args.overrides)
    if args.preset:
        overrides.append(f"train.verl.preset={args.preset}")
    if args.setting:
        overrides.append(f"train.verl.setting={args.setting}")
    cfg = load_config(args.params, overrides)
    backend = args.backend or cfg.train.backend
    if backend == "verl":
        return int(launch_verl(cfg, dry_run=args.dry_run)["returncode"])
    from cim.train.local import run_local

    return run_local(cfg, dry_run=args.dry_run)
