"""`cim train --backend local` as one call: the trainer inside one MLflow run, reports, artifacts.

A sentinel's trip (:mod:`cim.train.sentinels`) tags the run; with ``train.sentinels.on_trip: stop`` the
trainer raises :class:`cim.errors.SentinelTripped` after its checkpoint, the run ends FAILED and no report is
written (``cim train`` exits 3).

Resuming: a rerun in the same ``out_dir`` continues from the newest checkpoint *and* continues the MLflow
run the killed process left RUNNING (found by the tag ``train.checkpoint_key``, a hash of the folder's
absolute path), tagged ``resumed=true``, ``resume.count`` and ``resume.from``. Unfinished runs that cannot be
continued (the process died before its first checkpoint) are ended as KILLED. Either way the run holds
every step once and the reports equal an uninterrupted run's.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

from cim.io import atomic_write_json
from cim.reward.settings import reward_settings
from cim.train.local.checkpoints import SFT_FINAL, grpo_name
from cim.train.local.curves import optimised_reward, plot_curves
from cim.train.local.history import LOGGED_TAG

RUN_KEY_TAG = "train.checkpoint_key"


def checkpoint_key(out: Path) -> str:
    return hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:16]


def plan(cfg) -> dict:
    lc, g = cfg.train.local, cfg.train.grpo
    return {"backend": "local", "lm": lc.lm, "sft": {"data": lc.sft_data, "steps": lc.sft_steps},
            "grpo": {"steps": lc.grpo_steps, "prompts_per_step": lc.prompts_per_step,
                     "group_size": g.group_size, "lr": lc.lr, "kl": [g.kl_type, g.kl_coef]},
            "reward": reward_settings(cfg.reward),
            "out_dir": lc.out_dir}


def _run_to_continue(cfg, state, key: str):
    """(the killed run to continue or None, the unfinished runs to end as KILLED)."""
    from cim.tracking import unfinished_runs

    died = unfinished_runs(cfg, {RUN_KEY_TAG: key})
    if state is None or not died:
        return None, died
    newest = died[0]
    if int(newest.data.tags.get(LOGGED_TAG, 0)) > len(state.get("history", [])):
        return None, died        # it logged more than the checkpoint holds (a newer checkpoint was deleted)
    return newest, died[1:]


def run_local(cfg, dry_run: bool = False, scorer=None, progress: bool = True, run_name: str | None = None,
              track: bool = True) -> int:
    """`cim train --backend local` (the Prefect flow and the DVC stage call this). ``run_name``: the MLflow
    run's name (``train[mode=grc]``; default ``train``). The final captioner is logged as an MLflow model.
    ``track=False`` (``--no-mlflow``): no MLflow at all; the checkpoints and reports are written the same and a
    killed run still resumes from its newest checkpoint."""
    from cim.determinism import deterministic
    from cim.tracking import client, mark_killed, start_run
    from cim.train.local.trainer import LocalTrainer

    lc = cfg.train.local
    if dry_run:
        print(json.dumps(plan(cfg), indent=2))
        return 0
    with deterministic(int(cfg.seed), int(lc.threads)):
        trainer = LocalTrainer(cfg, scorer=scorer, progress=progress)
    state = trainer.latest_state()
    if not track:
        summary = trainer.run(state)
        write_reports(cfg, trainer, summary)
        print(json.dumps(summary, indent=2, default=str))
        return 0
    key = checkpoint_key(trainer.out)
    resume, stale = _run_to_continue(cfg, state, key)
    if stale:
        mark_killed(cfg, [r.info.run_id for r in stale],
                    "its process died; the training was restarted in a new run")
    from cim.protocols import tags as protocol_tags

    tags = {"backend": "local", "reward.mode": cfg.reward.mode, RUN_KEY_TAG: key,
            "train.out_dir": str(trainer.out.resolve()), **protocol_tags(cfg)}   # a variant's protocol too
    with start_run(cfg, "train", tags=tags, run_id=resume.info.run_id if resume else None,
                   log_params=resume is None, run_name=run_name) as run:
        import mlflow
        from mlflow.entities import RunTag

        run_id = run.info.run_id
        if state is not None:
            count = int(resume.data.tags.get("resume.count", 0)) + 1 if resume else 1
            mlflow.set_tags({"resumed": "true", "resume.count": str(count),
                             "resume.from": f"{state['phase']} step {state['step']}",
                             "resume.same_run": str(resume is not None).lower()})
        print(f"cim train: MLflow run {run_id}" + (" (resumed)" if resume else ""), file=sys.stderr, flush=True)
        mlflow_client = client(cfg)
        trainer.on_checkpoint = lambda: trainer.history.flush(mlflow_client, run_id)
        if trainer.sentinels is not None:          # a trip tags the run (cim.sentinel, cim.sentinel.<name>)
            trainer.sentinels.tag = lambda tags: mlflow_client.log_batch(
                run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        summary = trainer.run(state)
        trainer.history.flush(mlflow_client, run_id)
        files = write_reports(cfg, trainer, summary)
        for path in files:
            mlflow.log_artifact(str(path))
        for name in (SFT_FINAL, grpo_name(lc.grpo_steps)):
            if (trainer.out / name).exists():
                mlflow.log_artifacts(str(trainer.out / name), artifact_path=f"checkpoints/{name}")
        if (trainer.out / "latest.json").exists():
            from cim.train.local.mlflow_model import log_captioner

            mlflow.set_tag("cim.model_uri", log_captioner(cfg, trainer.out))
    print(json.dumps(summary, indent=2, default=str))
    return 0


CURVE_COLUMNS = {"reward": "train/reward_mean", "grc": "train/grc", "qir": "train/qir", "kl": "train/kl",
                 "caption_len": "train/caption_len"}


def write_curves_csv(history: list[dict], path: Path) -> Path | None:
    """The GRPO training curves, one row per step (``dvc plots``); None when there was no GRPO step."""
    from cim.io import atomic_write_text

    steps = [h for h in history if "train/reward_mean" in h]
    if not steps:
        return None
    lines = ["step," + ",".join(CURVE_COLUMNS)]
    lines += [f"{h['step']}," + ",".join(f"{h.get(key, float('nan')):.6g}" for key in CURVE_COLUMNS.values())
              for h in steps]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_reports(cfg, trainer, summary: dict) -> list[Path]:
    """summary.json, curves.png and curves.csv in ``out_dir`` and (DVC's metrics and plots) in ``report_dir``.
    Nothing in them differs between two runs of the same configuration (the run id lives in MLflow)."""
    lc = cfg.train.local
    atomic_write_json(trainer.out / "summary.json", summary, indent=2)
    files = [trainer.out / "summary.json"]
    csv = write_curves_csv(trainer.history.by_step(), trainer.out / "curves.csv")
    if csv is not None:
        files.append(csv)
    reward = optimised_reward(cfg.reward.mode, float(cfg.reward.beta))
    png = plot_curves(trainer.history.by_step(), trainer.out / "curves.png",
                      f"local GRPO, optimised {reward} (reward.mode={cfg.reward.mode})",
                      reward_label=reward.split(" = ")[0] if cfg.reward.mode == "both" else reward)
    if png is not None:
        files.append(png)
    if lc.report_dir:   # DVC's metrics/plots live outside the checkpoint folder (no overlapping outs)
        report = Path(lc.report_dir)
        report.mkdir(parents=True, exist_ok=True)
        for path in files:
            shutil.copyfile(path, report / path.name)
    return files
