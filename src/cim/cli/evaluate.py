"""`cim evaluate`: captions on the declared benchmarks -> metrics, results table, verification experiment.

    cim evaluate                                     # params.yaml's eval section (demo world, offline)
    cim evaluate --benchmark cocoln500 --captions preds.jsonl --method "Qwen2.5-VL-7B base" \
        eval.data_dirs.cocoln500=/data/sc-captioner
    cim evaluate --benchmark docci500 eval.captioner.name=hf eval.captioner.model=Qwen/Qwen2.5-VL-7B-Instruct \
        eval.judge.name=qwen3 eval.parser.name=factual
    cim evaluate --protocol official --captioner kkk5/CIM-Qwen2.5-VL-7B [--with-base] [--dry-run]
        # a released checkpoint on COCO-LN500 and DOCCI500 as the release evaluates it, beside the paper

Writes ``<eval.out_dir>/<benchmark>/`` (results.json + items.jsonl per method, table.md, benchmark.json,
verification.json/.png, parser_recall.json) and ``<eval.out_dir>/metrics.json`` (for DVC), and logs the
table's numbers, deltas against ``eval.baseline`` and the files to MLflow. The stage itself is
:func:`cim.stages.evaluate.evaluate`; this module maps arguments to config keys and prints the tables.
"""
from __future__ import annotations

import json
from pathlib import Path

from cim.cli import add_flag, add_out, add_shared, load


def add_arguments(parser) -> None:
    add_flag(parser, "benchmark", action="append", dest="benchmarks", metavar="NAME",
                        help="benchmark name (configs/benchmarks/NAME.yaml); repeatable (default: eval.benchmarks)")
    add_flag(parser, "captions", help="score captions from this file (docs/captions.md: jsonl image_id or image + "
                                      "caption, or JSON {image_id: caption})")
    parser.add_argument("--method", help="table row name for these captions (default: from the captioner)")
    parser.add_argument("--baseline", help="row to take deltas against: a method name or a results.json path")
    parser.add_argument("--captioner", help="eval.captioner.name: levels | file | hf | vllm | a released checkpoint "
                                            "(kkk5/CIM-Qwen2.5-VL-7B, ...)")
    parser.add_argument("--with-base", action="store_true",
                        help="a released checkpoint: also caption with its base model (the baseline row)")
    parser.add_argument("--subset", action="store_true",
                        help="score a captions file that leaves images out on the images it captions, every metric "
                             "on those (eval.allow_partial); without it that is an error")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the resolved plan (protocol, captioner and weights, benchmarks) and exit")
    add_out(parser, key="eval.out_dir", help="report folder, <out>/<benchmark>/ and metrics.json (eval.out_dir; "
                                             "default: runs/evaluate; the pipeline's: eval.out_dir)")
    add_shared(parser, "protocol", "no-mlflow")


def option_overrides(args) -> list[str]:
    """The command's options as ``key=value`` overrides (applied after the ones given on the command line)."""
    extra = []
    if args.benchmarks:
        extra.append(f"eval.benchmarks=[{','.join(args.benchmarks)}]")
    if getattr(args, "captioner", None):
        extra.append(f"eval.captioner.name={args.captioner}")
    if getattr(args, "with_base", False):
        extra.append("eval.captioner.with_base=true")
    if args.captions:
        extra += ["eval.captioner.name=file", f"eval.captioner.model={args.captions}"]
    if args.method:
        extra.append(f"eval.method={args.method}")
    if args.baseline:
        extra.append(f"eval.baseline={args.baseline}")
    if getattr(args, "subset", False):
        extra.append("eval.allow_partial=true")
    if getattr(args, "out", None):
        extra.append(f"eval.out_dir={args.out}")
    return extra


def print_summary(summary: dict) -> None:
    from cim.eval.metrics import finite

    for bench, info in summary["benchmarks"].items():
        print(Path(info["table"]).read_text())
        if info.get("verification"):
            v = info["verification"]
            rs = [f"{m} {v[m]['pearson_r']:.3f}" for m in ("grc", "qir", "score") if finite(v[m]["pearson_r"])]
            if rs:
                print(f"{bench} verification ({v['classifier']}): Pearson r vs logit(fine acc): " + ", ".join(rs)
                      + f" over {v['score']['n_bins']} bins")
            else:
                print(f"{bench} verification: no correlation from {v['score']['n_bins']} bin(s) of {v['bin_size']} "
                      "captions (it needs 3; evaluate more captions, e.g. several captioners)")
        if info.get("parser_recall"):
            p = info["parser_recall"]
            print(f"{bench} parser recall ({p['parser']}): objects {p['object_recall']:.3f}, attributes "
                  f"{p['attribute_recall']:.3f}, relations {p['relation_recall']:.3f}")
        for name, error in info.get("errors", {}).items():
            print(f"{bench} {name}: {error}")


def run(args) -> int:
    from cim.eval.results import METRICS_FILE
    from cim.stages.evaluate import evaluate

    cfg = load(args, *option_overrides(args))
    if getattr(args, "dry_run", False):
        from cim.eval.plan import evaluation_plan

        print(json.dumps(evaluation_plan(cfg), indent=2, default=str))
        return 0
    summary = evaluate(cfg, track=not args.no_mlflow)   # weights absent: WeightsNotFound, one line from cim.cli
    print_summary(summary)
    print(json.dumps({"metrics": str(Path(cfg.eval.out_dir) / METRICS_FILE)}))
    return 0
