"""The ``evaluate`` stage: every benchmark of ``eval.benchmarks`` x the configured captioner -> metrics,
results files and tables (:class:`cim.eval.evaluate.Evaluator`), ``metrics.json`` for DVC, one MLflow run."""
from __future__ import annotations

import time
from pathlib import Path

from cim.eval.results import METRICS_FILE

__all__ = ["evaluate", "log_evaluation"]


def evaluate(cfg, root: str | Path = ".", *, log=print, track: bool = True) -> dict:
    """Every benchmark's results and table under ``eval.out_dir``, ``<eval.out_dir>/metrics.json`` (the
    headline numbers) and, with ``track``, one MLflow run ``evaluate[<benchmarks>]`` with every table number,
    its delta against ``eval.baseline``, each experiment's headline and the report folders. Returns the
    summary (:meth:`~cim.eval.evaluate.Evaluator.run`) with ``"metrics"``: the headline numbers."""
    from cim.config import check_names
    from cim.determinism import deterministic
    from cim.eval.evaluate import EVAL_NAMES, Evaluator
    from cim.eval.results import headline
    from cim.io import write_json

    check_names(cfg, *EVAL_NAMES)
    started = time.time()
    with deterministic(int(cfg.seed)):
        summary = Evaluator(cfg, root, log).run()
    out_dir = Path(root) / cfg.eval.out_dir
    summary["metrics"] = headline(summary)
    write_json(out_dir / METRICS_FILE, summary["metrics"])
    if track:
        log_evaluation(cfg, summary, out_dir, started)
    return summary


def log_evaluation(cfg, summary: dict, out_dir: Path, started: float | None = None) -> None:
    """One MLflow run ``evaluate[<benchmarks>]``: every table number and its delta against ``eval.baseline``,
    each experiment's headline as ``<benchmark>/<experiment>/<number>``, and the report folders."""
    import mlflow

    from cim.eval.results import benchmark_numbers, mlflow_metrics
    from cim.protocols import tags
    from cim.tracking import start_run

    with start_run(cfg, "evaluate", tags={"benchmarks": ",".join(summary["benchmarks"]),
                                          "baseline": cfg.eval.baseline or "none", **tags(cfg)},
                   run_name=f"evaluate[{','.join(summary['benchmarks'])}]", start_time=started):
        mlflow.log_metrics(mlflow_metrics(summary["results"], cfg.eval.baseline))
        for bench, info in summary["benchmarks"].items():
            for m, numbers in benchmark_numbers(info):
                for k, v in numbers.items():
                    mlflow.log_metric(f"{bench}/{m.tracking}/{k}", v)
            bench_dir = out_dir / bench
            if bench_dir.is_dir():
                mlflow.log_artifacts(str(bench_dir), artifact_path=f"eval/{bench}")
