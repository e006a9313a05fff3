"""The ``publish`` stage: the captioners' comparison in MLflow after any run, whatever DVC skipped.

DVC does not rerun ``compare`` when its outputs are already what the lock says (a fresh clone reproduces
them from the committed files), so the MLflow store a run leaves could lack the comparison. This stage runs
on every ``dvc repro`` (``always_changed``) and on every ``compare``: it reads the committed comparison
(``<pipeline.out_dir>/captioners.json``) and, unless the store already holds it for this execution, logs:

- one run ``compare[<benchmark>]`` (a child of the execution's parent run) tagged ``cim.results_sha256`` (the
  comparison file's content hash: the key that makes publishing idempotent), with the table's files;
- one child run per captioner, ``compare[<benchmark>/<row>]``: params saying what the row is (``captioner``,
  ``method``, ``seeds``, ``n_seeds``, ``protocol`` (the row's own), the ``reward.*`` (guards and aggregate where
  set) and encoders it trained with, ``benchmark``, ``baseline``); the headline metrics unprefixed (``capture``, ``cim``: :data:`cim.eval.results.HEADLINE`), the
  rest grouped by prefix, which MLflow's UI shows as sections: ``mean/<column>`` (the other columns' means over
  seeds), ``delta/<column>`` (against the baseline), ``ci95_low/`` / ``ci95_high/`` (the mean's 95% interval),
  ``delta_ci95_low/`` / ``delta_ci95_high/`` (the delta's). The same keys in every run (NaN where no draw
  defined an interval), so MLflow's compare view sets the captioners side by side;
- on each captioner's logged model (MLflow 3's model page; found by the checkpoint hash its captions record),
  that seed's metrics with the benchmark as the dataset (``log_metrics(..., model_id=, dataset=)``).

It writes no file, so DVC's outputs and ``make run``'s byte-identical reports are untouched.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Sequence

from cim.errors import InputError

__all__ = ["publish", "RESULTS_TAG"]

RESULTS_TAG = "cim.results_sha256"


def _already(cfg, key: str, parent: str | None) -> str | None:
    from cim.tracking import client, configure

    exp = configure(cfg)
    where = f"tags.`{RESULTS_TAG}` = '{key}'" + (f" and tags.`mlflow.parentRunId` = '{parent}'" if parent else "")
    found = client(cfg).search_runs([exp], filter_string=where, max_results=1)
    return found[0].info.run_id if found else None


def publish(cfg, out_dir: str | Path | None = None, *, files: Sequence[Path] | None = None) -> dict:
    """Log the comparison in ``out_dir`` (default ``pipeline.out_dir``) once per pipeline execution (see the
    module doc); returns ``{"published": bool, "run_id", "results_sha256", "models": n}``."""
    from cim.eval.results import (COMPARISON_DETAILS, COMPARISON_JSON, COMPARISON_METRICS, COMPARISON_PLOT,
                                  COMPARISON_TABLE)
    from cim.tracking import pipeline_parent

    out = Path(out_dir or cfg.pipeline.out_dir)
    path = out / COMPARISON_JSON
    if not path.is_file():
        raise InputError(f"{path} does not exist: run `cim compare` first")
    key = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    table = json.loads(path.read_text(encoding="utf-8"))
    parent = pipeline_parent(cfg)
    done = _already(cfg, key, parent)
    if done is not None:
        return {"published": False, "run_id": done, "results_sha256": key, "models": 0}
    files = list(files or [out / f for f in (COMPARISON_JSON, COMPARISON_METRICS, COMPARISON_DETAILS, COMPARISON_TABLE,
                                              COMPARISON_PLOT)])
    run_id, models = _log(cfg, table, key, [f for f in files if Path(f).is_file()])
    return {"published": True, "run_id": run_id, "results_sha256": key, "models": models}


def _row_metrics(row: dict, columns: Sequence[str]) -> dict[str, float]:
    """A row's numbers as MLflow metric keys (the module doc): the headline first, the rest by prefix."""
    from cim.eval.results import HEADLINE

    out: dict[str, float] = {k: row[k] for k in HEADLINE if k in columns}
    out.update({f"mean/{k}": row[k] for k in columns if k not in HEADLINE})
    out.update({f"delta/{k}": row[f"delta_{k}"] for k in columns})
    for k in columns:                   # NaN where no draw defined it: the same keys in every run
        for name, ci in (("ci95", row.get(f"{k}_ci95")), ("delta_ci95", row.get(f"delta_{k}_ci95"))):
            out[f"{name}_low/{k}"], out[f"{name}_high/{k}"] = ci or (float("nan"), float("nan"))
    return {k: float(v) for k, v in out.items()}


def _row_params(cfg, table: dict, row: dict) -> dict[str, str]:
    """What the row is: its captioner, seeds, protocol, and the reward and encoders it was trained with (from
    the pipeline's config; a row the config does not name gets the table's facts only)."""
    from cim.pipeline.variants import runs, variant_config, variants

    name = row["captioner"]
    out = {"captioner": name, "n_seeds": str(row["n_seeds"]), "benchmark": table["benchmark"],
           "baseline": table["baseline"], "n_boot": str(table.get("n_boot", "")),
           "protocol": str(cfg.get("protocol") or "none")}
    if name not in variants(cfg):
        return out
    sft = name == cfg.pipeline.sft
    vcfg = variant_config(cfg, name)
    out["protocol"] = str(vcfg.get("protocol") or "none")       # a variant may name its own (cim-guard: guarded)
    out.update({"method": "SFT" if sft else "SFT + GRPO", "runs": ",".join(runs(cfg)[name]),
                "seeds": "-" if sft else ",".join(str(s) for s in cfg.pipeline.seeds),
                "encoders.text": str(vcfg.encoders.text.model or vcfg.encoders.text.name),
                "encoders.image": str(vcfg.encoders.image.model or vcfg.encoders.image.name)})
    if not sft:                         # the SFT start trains without the retrieval reward
        out.update({f"reward.{k}": str(vcfg.reward[k]) for k in ("mode", "beta", "top_k", "decay")})
        if vcfg.reward.guards:          # the guard terms and how the terms are aggregated, where they differ
            out["reward.guards"] = ",".join(vcfg.reward.guards)
        if vcfg.reward.aggregate != "sum" or vcfg.reward.guards:
            out["reward.aggregate"] = str(vcfg.reward.aggregate)
    return out


def _log(cfg, table: dict, key: str, files: list) -> tuple[str, int]:
    import mlflow

    from cim.tracking import start_run

    bench = table["benchmark"]
    tags = {"benchmark": bench, "baseline": table["baseline"], RESULTS_TAG: key,
            "captioners": ",".join(r["captioner"] for r in table["rows"]),
            **({"lower_is_better": ",".join(table["lower_is_better"])} if table.get("lower_is_better") else {})}
    with start_run(cfg, "compare", run_name=f"compare[{bench}]", tags=tags, log_params=False) as run:
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="results")
        for row in table["rows"]:
            with mlflow.start_run(run_name=f"compare[{bench}/{row['captioner']}]", nested=True,
                                  tags={"stage": "compare", "captioner": row["captioner"], "benchmark": bench,
                                        "baseline": table["baseline"], RESULTS_TAG: key}):
                mlflow.log_params(_row_params(cfg, table, row))
                mlflow.log_metrics(_row_metrics(row, table["columns"]))
        models = _model_metrics(cfg, table)
        return run.info.run_id, models


def _model_metrics(cfg, table: dict) -> int:
    """Each seed's metrics on its logged model (and the training run that logged it), the benchmark as the
    dataset; returns how many models."""
    import mlflow

    from cim.tracking import configure

    exp = configure(cfg)
    dataset = None                      # the benchmark is loaded once, and only when a model is there to carry it
    n = 0
    for row in table["rows"]:
        for i, captions in enumerate(table["files"][row["captioner"]]):
            metrics = {k: float(v[i]) for k, v in row["per_seed"].items() if v[i] is not None}
            state = _state_of(captions)
            if state is None:
                continue
            found = mlflow.search_logged_models(experiment_ids=[exp], output_format="list", max_results=1,
                                                filter_string=f"tags.`cim.state_sha256` = '{state}'")
            if not found:
                continue
            if dataset is None:
                dataset = _dataset(cfg, table["benchmark"])
            # into the run that logged the model (a checkpoint's benchmark numbers beside its training curves),
            # never the active compare run: its metrics would be each seed's in turn, the last one left standing
            mlflow.log_metrics(metrics, model_id=found[0].model_id, dataset=dataset, run_id=found[0].source_run_id)
            n += 1
    return n


def _state_of(captions: str) -> str | None:
    meta = Path(captions).parent / "captions.meta.json"
    if not meta.is_file():
        return None
    model = (json.loads(meta.read_text(encoding="utf-8")).get("describe") or {}).get("model")
    return model.get("state_sha256") if isinstance(model, dict) else None


def _dataset(cfg, benchmark: str):
    """The benchmark as an MLflow dataset (its sample ids and references; source: its declaration)."""
    import mlflow.data
    import pandas as pd

    from cim.eval.evaluate import Evaluator

    bench = Evaluator(cfg).load(benchmark)
    frame = pd.DataFrame({"id": [s.id for s in bench.samples],
                          "reference": [s.references[0] if s.references else "" for s in bench.samples]})
    with warnings.catch_warnings():      # a local path is two equal source types to MLflow: it warns, then picks one
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        return mlflow.data.from_pandas(frame, name=benchmark, source=bench.spec.source or benchmark)
