"""`cim verify`: does the reward track caption quality? Scores the demo world's captions of known quality
and reports Spearman ρ with quality per term (reward Υ, GRC, QIR), means per level, plots (reports/verify/)."""
from __future__ import annotations

import json

from cim.cli import add_protocol_argument, load


def add_arguments(parser) -> None:
    parser.add_argument("--captions", help="jsonl with image_id, caption, level, quality "
                        "(default: <world.out_dir>/bench_captions.jsonl)")
    parser.add_argument("--index", help="index directory (default: index.out_dir)")
    parser.add_argument("--out", help="report directory (default: verify.out_dir)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    add_protocol_argument(parser)


def run(args) -> int:
    from cim.eval.quality_order import METRICS
    from cim.stages.verify import verify

    summary = verify(load(args), captions=args.captions, index_dir=args.index, out_dir=args.out,
                     track=not args.no_mlflow, progress=True)
    print(json.dumps({m: {"spearman": round(summary[m]["spearman_pooled"], 3),
                          "mean_by_level": {k: round(v, 3) for k, v in summary[m]["mean_by_level"].items()}}
                      for m in METRICS}, indent=1))
    return 0
