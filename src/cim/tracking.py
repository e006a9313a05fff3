"""MLflow conventions in one place.

- Store: a sqlite database under ``mlruns/`` (MLflow 3 refuses the plain file store for new features),
  artifacts in ``mlruns/artifacts``; ``MLFLOW_TRACKING_URI`` overrides ``tracking.uri`` when set.
- One run per stage (run name = stage), params = the flattened config, tags = git commit, dirty flag,
  dvc.lock hash and whatever data hash the stage passes (e.g. the index checksum).
- A resumable stage continues its killed run (``start_run(run_id=...)``, found by :func:`unfinished_runs`)
  or ends it as KILLED (:func:`mark_killed`); MLflow, not the stage's outputs, records when a run happened.
- One parent run per pipeline execution, a child run per stage and variant (:func:`pipeline_parent`): the
  execution is named by ``CIM_PARENT_RUN_ID`` (an existing run, e.g. the one a Prefect flow opened), else
  ``CIM_PIPELINE_ID`` (``make run`` sets it), else ``DVC_EXP_NAME`` (``dvc exp run``), else the Prefect flow
  run id (``prefect.runtime.flow_run.id``); a stage run outside any of them is a top-level run. The parent
  is created by the first stage that needs it and its end time follows its last child, so its duration
  covers the whole execution.
- A run that groups variants (an ablation) is opened with :func:`parent_run`: every stage run inside it,
  however deep in the library, becomes its child the same way (``CIM_PARENT_RUN_ID`` for the duration).
- The experiment is tagged as a model-training experiment (``mlflow.experimentKind =
  custom_model_development``, set on creation and on every existing experiment :func:`configure` meets). The UI
  of MLflow 3.17 does not read that tag to pick an experiment's first page: it reads its own "workflow type"
  (the sidebar's GenAI / Model training switch, kept in the browser's local storage, GenAI in a fresh browser)
  unless the URL carries ``?workflowType=machine_learning``. :func:`ui_url` is the link that opens the runs.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
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
        if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        mlflow.set_experiment(name)
        return exp.experiment_id
    artifacts = _artifact_dir(cfg, mlflow.get_tracking_uri())
    artifacts.mkdir(parents=True, exist_ok=True)
    exp_id = mlflow.create_experiment(name, artifact_location=artifacts.as_uri(),
                                      tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    mlflow.set_experiment(name)
    return exp_id


EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
UI_WORKFLOW = "machine_learning"        # MLflow UI's workflowType whose experiment page is the runs table


def ui_url(server: str, experiment_id: str) -> str:
    """The MLflow UI's page of an experiment's runs (``server``: ``http://127.0.0.1:5000``), whatever the
    browser's GenAI / Model training switch says (see the module doc)."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType={UI_WORKFLOW}"
PIPELINE_TAG = "cim.pipeline_id"


def _prefect_flow_run_id() -> str | None:
    """The Prefect flow run this code runs in: its context (a flow started from Python has no
    ``PREFECT__FLOW_RUN_ID``; a worker sets it), read only when Prefect is already imported."""
    if "prefect" in sys.modules:
        from prefect.runtime import flow_run

        return flow_run.id or None
    return os.environ.get("PREFECT__FLOW_RUN_ID") or None


def pipeline_id() -> tuple[str | None, dict[str, str]]:
    """``(key, tags)`` naming the pipeline execution this process belongs to (see the module doc)."""
    env = {**os.environ, "PREFECT__FLOW_RUN_ID": _prefect_flow_run_id() or ""}
    tags = {k: env[e] for k, e in (("dvc.exp_name", "DVC_EXP_NAME"), ("dvc.baseline_rev",
            "DVC_EXP_BASELINE_REV"), ("dvc.stage", "DVC_STAGE"), ("prefect.flow_run_id", "PREFECT__FLOW_RUN_ID"))
            if env.get(e)}
    for var, prefix in (("CIM_PIPELINE_ID", ""), ("DVC_EXP_NAME", "dvc-exp-"), ("PREFECT__FLOW_RUN_ID", "prefect-")):
        if env.get(var):
            return prefix + env[var], tags
    return None, tags


def pipeline_parent(cfg) -> str | None:
    """The run id of this execution's parent run (created on first use), or None outside a pipeline."""
    if os.environ.get("CIM_PARENT_RUN_ID"):
        return os.environ["CIM_PARENT_RUN_ID"]
    key, tags = pipeline_id()
    if key is None:
        return None
    exp_id = configure(cfg)
    c = client(cfg)
    if "'" in key:
        raise ValueError(f"pipeline id {key!r} cannot be searched for")
    found = c.search_runs([exp_id], filter_string=f"tags.`{PIPELINE_TAG}` = '{key}'",
                          order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        return found[0].info.run_id
    tags = {k: v for k, v in tags.items() if k != "dvc.stage"}
    run = c.create_run(exp_id, run_name=f"pipeline[{key}]",
                       tags={PIPELINE_TAG: key, "stage": "pipeline", **provenance_tags(), **tags})
    return run.info.run_id


def _touch_parent(cfg, parent_id: str) -> None:
    """Stretch the parent's end time to now (it covers its children) and mark it finished."""
    import time

    c = client(cfg)
    if c.get_run(parent_id).info.status != "RUNNING" or not os.environ.get("CIM_PARENT_RUN_ID"):
        c.set_terminated(parent_id, "FINISHED", end_time=int(time.time() * 1000))


@contextlib.contextmanager
def start_run(cfg, stage: str, tags: dict[str, Any] | None = None, log_params: bool = True,
              nested: bool = False, run_id: str | None = None, run_name: str | None = None,
              start_time: float | None = None) -> Iterator[Any]:
    """``with start_run(cfg, "verify") as run:`` -- one MLflow run for one stage, opened before the work so
    its duration covers it. ``run_name`` says what differs (``train[mode=grc]``; default: the stage).
    ``run_id`` continues an existing run (a resumed stage, see :func:`unfinished_runs`); else
    ``MLFLOW_RUN_ID`` when set. Inside a pipeline execution the run is a child of its parent run.
    ``start_time`` (``time.time()`` when the work began): a run opened after its work still covers it."""
    import mlflow

    configure(cfg)
    _, pipeline_tags = pipeline_id()
    all_tags = {"stage": stage, **provenance_tags(), **pipeline_tags,
                **{k: str(v) for k, v in (tags or {}).items()}}
    if run_id is None and not nested:
        run_id = os.environ.get("MLFLOW_RUN_ID")
    parent = None if (nested or run_id) else pipeline_parent(cfg)
    if parent is not None:
        all_tags["mlflow.parentRunId"] = parent
    if start_time is not None and run_id is None and not nested:
        created = client(cfg).create_run(configure(cfg), start_time=int(start_time * 1000), tags=all_tags,
                                         run_name=run_name or stage)
        run_id = created.info.run_id
    try:
        with mlflow.start_run(run_id=run_id, run_name=None if run_id else (run_name or stage), nested=nested,
                              tags=all_tags) as run:
            if log_params:
                params = {k: ("" if v is None else v) for k, v in flatten(cfg).items()}
                items = list(params.items())
                for i in range(0, len(items), 100):
                    mlflow.log_params(dict(items[i:i + 100]))
            yield run
    finally:
        if parent is not None:
            _touch_parent(cfg, parent)


@contextlib.contextmanager
def parent_run(cfg, stage: str, run_name: str, tags: dict[str, str] | None = None) -> Iterator[str]:
    """``with parent_run(cfg, "ablate", "ablate[beta]") as run_id:`` -- a run whose children are every run
    started inside the block (:func:`start_run` reads ``CIM_PARENT_RUN_ID``, set here for the duration and
    restored after). Inside a pipeline execution it is itself a child of the pipeline's parent. Ends FINISHED,
    FAILED on an error, KILLED on an interrupt."""
    exp_id = configure(cfg)
    c = client(cfg)
    outer = pipeline_parent(cfg)
    all_tags = {"stage": stage, **provenance_tags(), **{k: str(v) for k, v in (tags or {}).items()}}
    if outer is not None:
        all_tags["mlflow.parentRunId"] = outer
    run_id = c.create_run(exp_id, run_name=run_name, tags=all_tags).info.run_id
    saved = os.environ.get("CIM_PARENT_RUN_ID")
    os.environ["CIM_PARENT_RUN_ID"] = run_id
    status = "FAILED"
    try:
        yield run_id
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if saved is None:
            os.environ.pop("CIM_PARENT_RUN_ID", None)
        else:
            os.environ["CIM_PARENT_RUN_ID"] = saved
        c.set_terminated(run_id, status)
        if outer is not None:
            _touch_parent(cfg, outer)


def client(cfg):
    """An ``MlflowClient`` on the configured store."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri(cfg))


def unfinished_runs(cfg, tags: dict[str, str]) -> list:
    """Runs of the configured experiment still marked RUNNING that carry all of ``tags``, newest first.

    A process killed with SIGKILL (or a lost machine) leaves its run RUNNING: a stage that can resume looks
    its earlier run up this way, continues it or marks it with :func:`mark_killed`. Tag values must be plain
    tokens (e.g. a hash): they are matched literally in MLflow's filter syntax.
    """
    exp_id = configure(cfg)
    for value in tags.values():
        if "'" in str(value) or "`" in str(value):
            raise ValueError(f"tag value {value!r} cannot be searched for")
    where = " and ".join([f"tags.`{k}` = '{v}'" for k, v in tags.items()] + ["attributes.status = 'RUNNING'"])
    return list(client(cfg).search_runs([exp_id], filter_string=where, order_by=["attributes.start_time DESC"]))


def mark_killed(cfg, run_ids, reason: str) -> None:
    """End runs whose process died as KILLED, with the tag ``cim.ended`` saying why."""
    c = client(cfg)
    for run_id in run_ids:
        c.set_tag(run_id, "cim.ended", reason)
        c.set_terminated(run_id, "KILLED")


def log_stage(cfg, stage: str, metrics: dict[str, float], tags: dict[str, Any] | None = None,
              artifacts: list[str | Path] = (), artifact_path: str | None = None, started: float | None = None,
              run_name: str | None = None) -> str:
    """One finished stage as one run: params, metrics, tags and artifact files. Returns the run id.
    ``started`` (``time.time()`` when the work began) makes the run's duration cover the work."""
    import mlflow

    with start_run(cfg, stage, tags=tags, start_time=started, run_name=run_name) as run:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for path in artifacts:
            if Path(path).is_dir():
                mlflow.log_artifacts(str(path), artifact_path=artifact_path or stage)
            elif Path(path).exists():
                mlflow.log_artifact(str(path), artifact_path=artifact_path or stage)
        return run.info.run_id
