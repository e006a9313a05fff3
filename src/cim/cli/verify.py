"""`cim verify`: does the reward track caption quality? Scores the demo world's captions of known quality
and reports Spearman ρ with quality per term (reward Υ, GRC, QIR), means per level, plots (reports/verify/)."""
from __future__ import annotations

import json

from cim.cli import add_flag, add_out, add_shared, load


def add_arguments(parser) -> None:
    add_flag(parser, "captions", help="jsonl with image_id, caption, level, quality "
                        "(default: <world.out_dir>/bench_captions.jsonl)")
    add_flag(parser, "index", help="index directory (default: index.out_dir)")
    add_out(parser, key="verify.out_dir", help="report directory (default: runs/verify; the pipeline's: "
                                               "verify.out_dir)")
    add_shared(parser, "protocol", "no-mlflow", "no-progress")


def run(args) -> int:
    from cim.eval.quality_order import METRICS
    from cim.stages.verify import verify

    summary = verify(load(args), captions=args.captions, index_dir=args.index, out_dir=args.out,
                     track=not args.no_mlflow, progress=not args.no_progress)
    print(json.dumps({m: {"spearman": round(summary[m]["spearman_pooled"], 3),
                          "mean_by_level": {k: round(v, 3) for k, v in summary[m]["mean_by_level"].items()}}
                      for m in METRICS}, indent=1))
    return 0
