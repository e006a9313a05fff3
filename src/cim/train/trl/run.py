"""One TRL run: checks (before any weights load), the reward service up (started on loopback when down, as
for verl), one MLflow run (a child of the pipeline's parent run when there is one; a resumed run continues
its own), ``GRPOTrainer.train()`` resumed from the newest ``trainer/checkpoint-N``, then ``final/``: the
policy (LoRA merged) and its processor as a Hugging Face folder ``cim caption --captioner hf`` loads, logged
as the run's MLflow model."""
from __future__ import annotations

import json
import sys
from pathlib import Path

RUN_FILE = "mlflow_run.json"
FINAL = "final"


def plan(cfg) -> dict:
    """Everything checked, nothing loaded: the model, TRL's version and the resolved ``GRPOConfig``."""
    from cim.train.trl.checks import check_settings, require_trl, resolve_model
    from cim.train.trl.settings import grpo_config

    version = require_trl()
    check_settings(cfg)
    model = resolve_model(cfg)
    args = grpo_config(cfg)
    return {"backend": "trl", "trl": version, "model": model, "lora": bool(cfg.train.trl.lora),
            "data": str(Path(cfg.train.data_dir) / "train.parquet"), "grpo_config": args}


def _last_checkpoint(trainer_dir: Path):
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(trainer_dir)) if trainer_dir.is_dir() else None


def _previous_run(out: Path, resuming: bool):
    f = out / RUN_FILE
    return json.loads(f.read_text())["run_id"] if resuming and f.is_file() else None


def run_trl(cfg, *, dry_run: bool = False) -> dict:
    p = plan(cfg)
    args = p["grpo_config"]
    if dry_run:
        print(f"cim train --backend trl: trl {p['trl']}, model {p['model']}, lora {p['lora']}, data {p['data']}")
        print(args.to_json_string())
        return {"returncode": 0, "plan": p}
    from cim.train.trl.data import load_dataset

    dataset = load_dataset(p["data"])
    out = Path(cfg.train.trl.out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    resume = _last_checkpoint(Path(args.output_dir))
    from cim.service.process import ensure_for
    from cim.train.verl.plan import snapshot_params

    snapshot = snapshot_params(cfg, out / "cim_params.yaml")
    service = ensure_for(cfg, str(snapshot), [], log_path=str(out / "reward_service.log"))
    if service is None:
        from cim.errors import ConfigError

        raise ConfigError("train.backend=trl scores through the reward service; set train.service.in_process=false")
    try:
        return _train(cfg, p, dataset, out, resume, service)
    finally:
        service.stop()


def _train(cfg, p: dict, dataset, out: Path, resume, service) -> dict:
    import mlflow
    from trl import GRPOTrainer

    from cim.protocols import tags as protocol_tags
    from cim.tracking import start_run
    from cim.train.trl.mlflow_log import MlflowMetrics, log_captioner
    from cim.train.trl.reward import CimReward
    from cim.train.trl.settings import lora_config

    t = cfg.train.trl
    tags = {"backend": "trl", "preset": t.preset, "model": p["model"], "trl": p["trl"], "lora": str(t.lora),
            **protocol_tags(cfg)}
    previous = _previous_run(out, resume is not None)   # a resumed run continues its MLflow run (params kept)
    with start_run(cfg, "train", tags=tags, run_id=previous, run_name=cfg.train.run_name,
                   log_params=previous is None) as run:
        (out / RUN_FILE).write_text(json.dumps({"run_id": run.info.run_id}))
        mlflow.set_tags({"reward.service_url": service.url,
                         "reward.index_checksum": str((service.health or {}).get("index_checksum"))})
        mlflow.log_text(p["grpo_config"].to_json_string(), "grpo_config.json")
        funcs = CimReward.functions(cfg, service.url, trace=out / "rewards.jsonl" if t.trace_rewards else None)
        reward = funcs[0]                       # the one that scores (the others read its batch)
        metrics = MlflowMetrics(run.info.run_id)
        trainer = GRPOTrainer(model=p["model"], reward_funcs=funcs, args=p["grpo_config"],
                              train_dataset=dataset, peft_config=lora_config(cfg), callbacks=[metrics])
        print(f"cim train: trl in MLflow run {run.info.run_id}"
              + (f", resuming from {resume}" if resume else ""), file=sys.stderr, flush=True)
        result = trainer.train(resume_from_checkpoint=resume)
        final = _save_final(trainer, out / FINAL)
        uri = log_captioner(final, Path(t.out_dir).name or "trl", cfg.train.prompt)
        mlflow.set_tags({"checkpoint.final": str(final), "train.resumed_from": str(resume or "")})
        return {"returncode": 0, "run_id": run.info.run_id, "final": str(final), "model_uri": uri,
                "global_step": trainer.state.global_step, "train_loss": result.training_loss,
                "log_history": metrics.history, "reward_calls": reward.calls}


def _save_final(trainer, folder: Path) -> Path:
    model = trainer.model
    if hasattr(model, "merge_and_unload"):   # LoRA: a plain model folder the captioners load
        model = model.merge_and_unload()
    model.save_pretrained(folder)
    trainer.processing_class.save_pretrained(folder)
    return folder
