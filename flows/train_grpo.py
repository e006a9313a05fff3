"""Prefect flow: training data -> reward service -> GRPO (verl on a GPU cluster, TRL on one GPU, or the local CPU backend) -> MLflow.

Thin orchestration over the same stage functions as ``cim prepare-train`` and ``cim train`` (cim.stages); the
MLflow parent run is opened by the training call (verl attaches to it through ``MLFLOW_RUN_ID``). Runs with no Prefect
server (a temporary local API is started), or as the ``cim-train-grpo`` deployment on a GPU work pool
(``prefect.yaml``; commands in docs/training.md):

    python flows/train_grpo.py                                          # train.backend from params.yaml
    python flows/train_grpo.py --backend verl --preset qwen2_5_vl_7b     # reward service started on loopback
    python flows/train_grpo.py --backend verl --protocol official --dry-run   # print the verl command only
    python flows/train_grpo.py --backend trl --preset qwen2_5_vl_7b train.trl.lora=true   # one GPU, TRL
"""
from __future__ import annotations

import argparse
import json

from prefect import flow, task

from cim.config import choices
from cim.flows.common import (cached, config, inputs_key, numbers_markdown, publish, retry_unless_sentinel, run_dir,
                              run_overrides)

_SERVICES: dict[str, object] = {}   # url -> ServiceHandle started by this flow run (stopped at its end)


@task(retries=1, cache_key_fn=inputs_key("train.manifest", "train.val_manifest", "train.val_size",
                                         "train.prompt", "seed"), cache_expiration=None, persist_result=True)
def prepare_training_data(params: str, overrides: list[str], manifest: str, val_manifest: str) -> dict:
    """Keyed by the manifests' contents (arguments) and the settings that shape the parquet files."""
    from cim.stages.prepare_train import prepare_train

    return prepare_train(config(params, overrides))


@task(retries=2, retry_delay_seconds=10)
def reward_service(params: str, overrides: list[str]) -> dict:
    """Up and healthy at ``train.service.url`` (default ``http://host:port``; started here when down and on
    loopback)."""
    from cim.service.process import ensure_for

    handle = ensure_for(config(params, overrides), params, overrides)
    if handle.process is not None:
        _SERVICES[handle.url] = handle
    return {"url": handle.url, "started_here": handle.process is not None, "health": handle.health}


@task
def train_verl(params: str, overrides: list[str], dry_run: bool) -> dict:
    """The ``train`` stage with ``train.backend=verl`` or ``trl`` (TRL resumes from its last checkpoint when
    the flow is run again)."""
    from cim.stages.train import train

    result = train(config(params, overrides), dry_run=dry_run)
    if result["returncode"] != 0:
        raise RuntimeError(f"{result['backend']} exited with code {result['returncode']} "
                           f"(MLflow run {result.get('run_id')})")
    return {k: v for k, v in result.items() if k not in ("plan", "log_history")}


@task(retries=1, retry_condition_fn=retry_unless_sentinel)
def train_local(params: str, overrides: list[str], dry_run: bool) -> dict:
    """The ``train`` stage with ``train.backend=local``; a retry resumes from the last checkpoint, in the same
    MLflow run."""
    from cim.stages.train import train

    rc = train(config(params, overrides), dry_run=dry_run)["returncode"]
    if rc != 0:
        raise RuntimeError(f"local GRPO exited with code {rc}")
    return {"returncode": rc}


@task
def summarise(params: str, overrides: list[str], run_id: str | None) -> dict:
    """The MLflow run's final metrics (what the flow run reports)."""
    if not run_id:
        return {}
    import mlflow

    from cim.tracking import tracking_uri

    mlflow.set_tracking_uri(tracking_uri(config(params, overrides)))
    run = mlflow.get_run(run_id)
    return {"run_id": run_id, "status": run.info.status, "metrics": dict(run.data.metrics)}


@flow(name="cim-train-grpo", log_prints=True, persist_result=True)
def train_grpo(params: str = "params.yaml", overrides: list[str] | None = None, backend: str | None = None,
               preset: str | None = None, setting: str | None = None, dry_run: bool = False,
               protocol: str | None = None, workspace: bool = False,
               mlflow_ui: str = "http://127.0.0.1:5000") -> dict:
    """``workspace``: write checkpoints and reports into the DVC workspace (default: runs/<flow-run>/)."""
    from cim.protocols import with_protocol

    overrides = with_protocol(protocol, overrides)
    if backend:
        overrides.append(f"train.backend={backend}")
    if preset:
        overrides.append(f"train.{'trl' if backend == 'trl' else 'verl'}.preset={preset}")
    if setting:
        overrides.append(f"train.verl.setting={setting}")
    folder = run_dir(workspace)
    overrides += run_overrides(config(params, overrides), folder, ["train"])   # fails fast on a bad key
    cfg = config(params, overrides)
    result: dict = {"backend": cfg.train.backend, "folder": str(folder)}
    try:
        if not dry_run:
            result["data"] = cached(prepare_training_data, params, overrides, cfg.train.manifest,
                                    cfg.train.val_manifest)
        if cfg.train.backend in ("verl", "trl"):
            if not cfg.train.service.in_process and not dry_run:
                result["service"] = reward_service(params, overrides)
            result["train"] = train_verl(params, overrides, dry_run)
        else:
            result["train"] = train_local(params, overrides, dry_run)
        result["mlflow"] = summarise(params, overrides, result["train"].get("run_id"))
    finally:
        for url in list(_SERVICES):
            _SERVICES.pop(url).stop()
    if not dry_run:
        from cim.tracking import pipeline_parent

        publish("cim-train-grpo", f"CIM GRPO ({cfg.train.backend})",
                numbers_markdown(result["mlflow"].get("metrics", {})), cfg, pipeline_parent(cfg), mlflow_ui, folder)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--backend", choices=choices("train.backend"), default=None)
    p.add_argument("--preset", default=None)
    p.add_argument("--setting", choices=choices("train.verl.setting"), default=None)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--protocol", default=None, help="a named protocol (configs/protocols/NAME.yaml)")
    p.add_argument("--workspace", action="store_true", help="write into the DVC workspace, not runs/<run>/")
    a = p.parse_intermixed_args(argv)
    out = train_grpo(a.params, a.overrides, a.backend, a.preset, a.setting, a.dry_run, a.protocol, a.workspace)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
