"""MLflow conventions in one place.

- Store: a sqlite database under ``mlruns/`` (MLflow 3 refuses the plain file store for new features),
  artifacts in ``mlruns/artifacts``; ``MLFLOW_TRACKING_URI`` overrides ``tracking.uri`` when set.
- One run per stage (run name = stage), params = the flattened config, tags = git commit, dirty flag,
  dvc.lock hash and whatever data hash the stage passes (e.g. the index checksum).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator

from cim.config import flatten

log = logging.getLogger(__name__)


def tracking_uri(cfg) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        db = Path(uri[len("sqlite:///"):]).resolve()
        db.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{db}"
    return uri


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def provenance_tags() -> dict[str, str]:
    tags = {}
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["git.commit"] = commit
        tags["git.dirty"] = str(bool(_git("status", "--porcelain", "--untracked-files=no")))
    lock = Path("dvc.lock")
    if lock.exists():
        tags["dvc.lock_sha256"] = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    return tags


def _artifact_dir(cfg, uri: str) -> Path:
    """``tracking.artifact_dir`` when set, else ``artifacts/`` beside the sqlite database."""
    if cfg.tracking.artifact_dir:
        return Path(cfg.tracking.artifact_dir).resolve()
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts"
    return Path("mlruns/artifacts").resolve()


def configure(cfg) -> str:
    """Point MLflow at the configured store and experiment; returns the experiment id."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(cfg))
    name = cfg.tracking.experiment
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        mlflow.set_experiment(name)
        return exp.experiment_id
    artifacts = _artifact_dir(cfg, mlflow.get_tracking_uri())
    artifacts.mkdir(parents=True, exist_ok=True)
    exp_id = mlflow.create_experiment(name, artifact_location=artifacts.as_uri())
    mlflow.set_experiment(name)
    return exp_id


@contextlib.contextmanager
def start_run(cfg, stage: str, tags: dict[str, Any] | None = None, log_params: bool = True,
              nested: bool = False) -> Iterator[Any]:
    """``with start_run(cfg, "verify") as run:`` -- one MLflow run for one stage."""
    import mlflow

    configure(cfg)
    all_tags = {"stage": stage, **provenance_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
    run_id = os.environ.get("MLFLOW_RUN_ID") if not nested else None
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else stage, nested=nested,
                          tags=all_tags) as run:
        if log_params:
            params = {k: ("" if v is None else v) for k, v in flatten(cfg).items()}
            items = list(params.items())
            for i in range(0, len(items), 100):
                mlflow.log_params(dict(items[i:i + 100]))
        yield run


def log_stage(cfg, stage: str, metrics: dict[str, float], tags: dict[str, Any] | None = None,
              artifacts: list[str | Path] = (), artifact_path: str | None = None) -> str:
    """One finished stage as one run: params, metrics, tags and artifact files. Returns the run id."""
    import mlflow

    with start_run(cfg, stage, tags=tags) as run:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for path in artifacts:
            if Path(path).is_dir():
                mlflow.log_artifacts(str(path), artifact_path=artifact_path or stage)
            elif Path(path).exists():
                mlflow.log_artifact(str(path), artifact_path=artifact_path or stage)
        return run.info.run_id
