"""`cim evaluate`: captions on the declared benchmarks -> metrics, results table, verification experiment.

    cim evaluate                                     # params.yaml's eval section (demo world, offline)
    cim evaluate --benchmark cocoln500 --captions preds.jsonl --method "Qwen2.5-VL-7B base" \
        eval.data_dirs.cocoln500=../shared/benchmarks/sc-captioner
    cim evaluate --benchmark docci500 eval.captioner.name=hf eval.captioner.model=Qwen/Qwen2.5-VL-7B-Instruct \
        eval.judge.name=qwen3 eval.parser.name=factual eval.text_encoder=all-mpnet-base-v2

Writes ``<eval.out_dir>/<benchmark>/`` (results.json + items.jsonl per method, table.md, benchmark.json,
verification.json/.png, parser_recall.json) and ``<eval.out_dir>/metrics.json`` (for DVC), and logs the
table's numbers, deltas against ``eval.baseline`` and the files to MLflow.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from cim.config import load_config

METRICS_FILE = "metrics.json"


def add_arguments(parser) -> None:
    parser.add_argument("--benchmark", action="append", dest="benchmarks", metavar="NAME",
                        help="benchmark name (configs/benchmarks/NAME.yaml); repeatable (default: eval.benchmarks)")
    parser.add_argument("--captions", help="score captions from this file (jsonl id/caption or JSON {id: caption})")
    parser.add_argument("--method", help="table row name for these captions (default: from the captioner)")
    parser.add_argument("--baseline", help="row to take deltas against: a method name or a results.json path")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def _overrides(args) -> list[str]:
    extra = []
    if args.benchmarks:
        extra.append(f"eval.benchmarks=[{','.join(args.benchmarks)}]")
    if args.captions:
        extra += ["eval.captioner.name=file", f"eval.captioner.model={args.captions}"]
    if args.method:
        extra.append(f"eval.method={args.method}")
    if args.baseline:
        extra.append(f"eval.baseline={args.baseline}")
    return list(args.overrides) + extra


def headline(summary: dict) -> dict:
    """The numbers DVC tracks: ``{benchmark: {method: {metric: value}}}`` plus verification r's."""
    out: dict = {}
    for r in summary["results"]:
        out.setdefault(r["benchmark"], {})[r["method"]] = {
            k: v for k, v in r["metrics"].items() if isinstance(v, (int, float)) and not math.isnan(v)}
    for bench, info in summary["benchmarks"].items():
        ver = info.get("verification")
        if ver:
            out.setdefault(bench, {})["verification"] = {
                f"pearson_r_{m}": ver[m]["pearson_r"] for m in ("grc", "qir", "score")
                if ver[m]["pearson_r"] is not None and not math.isnan(ver[m]["pearson_r"])}
        rec = info.get("parser_recall")
        if rec:
            out.setdefault(bench, {})["parser_recall"] = {
                k: v for k, v in rec.items() if k.endswith(("_recall", "_precision")) and not math.isnan(v)}
    return out


def log_mlflow(cfg, summary: dict, out_dir: Path) -> None:
    import mlflow

    from cim.eval.results import mlflow_metrics
    from cim.tracking import start_run

    with start_run(cfg, "evaluate", tags={"benchmarks": ",".join(summary["benchmarks"]),
                                          "baseline": cfg.eval.baseline or "none"}):
        mlflow.log_metrics(mlflow_metrics(summary["results"], cfg.eval.baseline))
        for bench, info in summary["benchmarks"].items():
            ver = info.get("verification") or {}
            for m in ("grc", "qir", "score"):
                r = (ver.get(m) or {}).get("pearson_r")
                if r is not None and not math.isnan(r):
                    mlflow.log_metric(f"{bench}/verification/pearson_r_{m}", r)
            rec = info.get("parser_recall") or {}
            for k, v in rec.items():
                if k.endswith(("_recall", "_precision")) and not math.isnan(v):
                    mlflow.log_metric(f"{bench}/parser/{k}", v)
            bench_dir = out_dir / bench
            if bench_dir.is_dir():
                mlflow.log_artifacts(str(bench_dir), artifact_path=f"eval/{bench}")


def run(args) -> int:
    from cim.eval.evaluate import Evaluator, _write_json

    cfg = load_config(args.params, _overrides(args))
    summary = Evaluator(cfg).run()
    out_dir = Path(cfg.eval.out_dir)
    _write_json(out_dir / METRICS_FILE, headline(summary))
    for bench, info in summary["benchmarks"].items():
        print(Path(info["table"]).read_text())
        if info.get("verification"):
            v = info["verification"]
            print(f"{bench} verification ({v['classifier']}): Pearson r vs logit(fine acc): "
                  + ", ".join(f"{m} {v[m]['pearson_r']:.3f}" for m in ("grc", "qir", "score")
                              if v[m]["pearson_r"] is not None) + f" over {v['score']['n_bins']} bins")
        if info.get("parser_recall"):
            p = info["parser_recall"]
            print(f"{bench} parser recall ({p['parser']}): objects {p['object_recall']:.3f}, attributes "
                  f"{p['attribute_recall']:.3f}, relations {p['relation_recall']:.3f}")
    if not args.no_mlflow:
        log_mlflow(cfg, summary, out_dir)
    print(json.dumps({"metrics": str(out_dir / METRICS_FILE)}))
    return 0
