"""The ``train`` stage: GRPO with the CIM reward, through verl on GPUs (:mod:`cim.train.verl`), TRL on one GPU
(:mod:`cim.train.trl`) or the local
CPU backend (:mod:`cim.train.local`), and the captioner comparison's rows: the SFT start (:func:`train_sft`)
and a GRPO variant from it (:func:`train_variant`)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["train", "train_sft", "train_variant"]


def train(cfg, *, dry_run: bool = False, progress: bool = True, track: bool = True) -> dict:
    """``train.backend``: ``verl`` launches ``main_ppo`` inside an MLflow parent run with the reward service up
    (``{"returncode", "run_id", "checkpoints", ...}``; ``dry_run`` prints the command); ``local`` trains the CPU
    captioner (:func:`cim.train.local.run.run_local`: its MLflow run, checkpoints, resume). ``track=False``: no
    MLflow (the local backend only: verl trains inside an MLflow parent run its logger attaches to)."""
    from cim.config import check_names

    check_names(cfg, "encoders.text.name", "encoders.image.name")
    if cfg.train.backend == "verl":
        if not track:
            from cim.errors import ConfigError

            raise ConfigError("--no-mlflow is for --backend local: verl trains inside an MLflow run (its logger "
                              "attaches to it); use trainer.logger overrides to change verl's own loggers")
        return {"backend": "verl", **_train_verl(cfg, dry_run=dry_run)}
    if cfg.train.backend == "trl":
        from cim.train.trl.run import run_trl

        if not track and not dry_run:
            from cim.errors import ConfigError

            raise ConfigError("--no-mlflow is for --backend local: the trl backend's curves and model live in its "
                              "MLflow run")

        return {"backend": "trl", **run_trl(cfg, dry_run=dry_run)}
    from cim.train.local.run import run_local

    return {"backend": "local", "returncode": run_local(cfg, dry_run=dry_run, progress=progress, track=track)}


def _train_verl(cfg, dry_run: bool = False) -> dict:
    """verl for ``cfg`` inside an MLflow parent run; returns ``{"returncode", "run_id", "checkpoints"}``. A reward
    service started here reads the params snapshot (``cfg`` resolved), so it scores with the same config."""
    from cim.config import flatten
    from cim.protocols import tags as protocol_tags
    from cim.service.process import ensure_for
    from cim.tracking import start_run, tracking_uri
    from cim.train.verl.launch import format_command
    from cim.train.verl.plan import checkpoints, overlong_report, reward_line, snapshot_params, val_files, verl_plan

    v = cfg.train.verl
    ckpt = Path(v.checkpoint_dir).resolve()
    snapshot = ckpt / "cim_params.yaml"
    plan = verl_plan(cfg, str(snapshot))
    if dry_run:
        print(reward_line(plan, snapshot))
        print(format_command(plan["command"], {"MLFLOW_RUN_ID": "<parent run>",
                                               "MLFLOW_TRACKING_URI": tracking_uri(cfg)}))
        return {"returncode": 0, "run_id": None, "checkpoints": [], "plan": plan}
    data = Path(plan["data_dir"])
    for name in sorted({"train.parquet", Path(val_files(cfg, data)).name}):
        if not (data / name).exists():
            raise FileNotFoundError(f"{data / name} is missing; run `cim prepare-train` first")
    print(reward_line(plan, snapshot), file=sys.stderr, flush=True)
    overlong = overlong_report(plan)
    snapshot_params(cfg, snapshot)
    service = ensure_for(cfg, str(snapshot), [], log_path=str(ckpt / "reward_service.log"))
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


def _report_dir(cfg, name: str, report_dir) -> str:
    return str(report_dir if report_dir is not None else Path(cfg.pipeline.report_dir) / name)


def train_sft(cfg, out_dir: str | Path, report_dir: str | Path | None = None, progress: bool = True,
              track: bool = True) -> Path:
    """The comparison's SFT start (no GRPO) in ``out_dir``: ``sft_final/``, ``tokenizer.json``, reports;
    returns ``out_dir``. A killed run resumes from its newest checkpoint."""
    from cim.config import with_overrides
    from cim.pipeline.variants import run_name
    from cim.train.local.run import run_local

    name = cfg.pipeline.sft
    run_cfg = with_overrides(cfg, {"train.local.out_dir": str(out_dir), "train.local.sft_dir": "",
                                   "train.local.grpo_steps": 0,
                                   "train.local.report_dir": _report_dir(cfg, name, report_dir)})
    run_local(run_cfg, progress=progress, run_name=run_name(cfg, "train", name), track=track)
    return Path(out_dir)


def train_variant(cfg, name: str, seed: int, sft_dir: str | Path, out_dir: str | Path,
                  report_dir: str | Path | None = None, progress: bool = True, track: bool = True) -> Path:
    """GRPO from the SFT start in ``sft_dir`` with the variant's overrides (``pipeline.variants``) and GRPO seed
    ``seed``, into ``out_dir``; returns it. The SFT start's own name returns ``sft_dir`` (nothing to train)."""
    from cim.config import with_overrides
    from cim.pipeline.variants import run_name, run_of, variant_config
    from cim.train.local.run import run_local

    if name == cfg.pipeline.sft:
        return Path(sft_dir)
    run_cfg = with_overrides(variant_config(cfg, name, seed), {
        "train.local.out_dir": str(out_dir), "train.local.sft_dir": str(sft_dir),
        "train.local.report_dir": _report_dir(cfg, run_of(cfg, name, seed), report_dir)})
    run_local(run_cfg, progress=progress, run_name=run_name(cfg, "train", name, seed), track=track)
    return Path(out_dir)
