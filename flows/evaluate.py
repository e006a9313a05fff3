"""Prefect flow: evaluate captions on the declared benchmarks (the `evaluate` stage as tasks).

One task, the same stage function as `cim evaluate` (and so the DVC stage): every benchmark (a metric that
cannot run is recorded in its results, not retried), one MLflow run with the table and deltas. A flow run
writes under runs/<flow-run>/ unless `--workspace` (the DVC workspace). Same keys as `cim evaluate` and `dvc exp run -S`:

    python flows/evaluate.py                                   # params.yaml's eval section
    python flows/evaluate.py eval.benchmarks=[world] eval.baseline=coarse-correct
    python flows/evaluate.py --captions preds.jsonl --method ours eval.benchmarks=[cocoln500]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from prefect import flow, task

from cim.config import load_config
from cim.flows.common import numbers_markdown, publish, run_dir, run_overrides


@task(retries=1, retry_delay_seconds=5)
def evaluate_benchmarks(params: str, overrides: list[str], log_mlflow: bool) -> dict:
    """The ``evaluate`` stage: every benchmark's results and tables, metrics.json, one MLflow run."""
    from cim.stages.evaluate import evaluate as run

    return run(load_config(params, overrides), track=log_mlflow)


@flow(name="cim-evaluate", log_prints=True, persist_result=True)
def evaluate(params: str = "params.yaml", overrides: list[str] | None = None, log_mlflow: bool = True,
             protocol: str | None = None, workspace: bool = False, mlflow_ui: str = "http://127.0.0.1:5000") -> dict:
    from cim.protocols import with_protocol

    overrides = with_protocol(protocol, overrides)
    folder = run_dir(workspace)
    overrides += run_overrides(load_config(params, overrides), folder, ["eval"])   # fails fast on a bad key
    cfg = load_config(params, overrides)
    summary = evaluate_benchmarks(params, overrides, log_mlflow)
    from cim.tracking import pipeline_parent

    tables = [Path(info["table"]).read_text() for info in summary["benchmarks"].values()
              if info.get("table") and Path(info["table"]).exists()]
    publish("cim-evaluate", "CIM evaluation", "\n\n".join(tables) or numbers_markdown(summary["metrics"]), cfg,
            pipeline_parent(cfg) if log_mlflow else None, mlflow_ui, folder)
    return summary["metrics"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--captions")
    ap.add_argument("--method")
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--protocol", help="a named protocol (configs/protocols/NAME.yaml)")
    ap.add_argument("--workspace", action="store_true", help="write into the DVC workspace, not runs/<run>/")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_intermixed_args()
    overrides = list(a.overrides)
    if a.captions:
        overrides += ["eval.captioner.name=file", f"eval.captioner.model={a.captions}"]
    if a.method:
        overrides.append(f"eval.method={a.method}")
    print(json.dumps(evaluate(a.params, overrides, not a.no_mlflow, a.protocol, a.workspace), indent=1, default=str))


if __name__ == "__main__":
    main()
