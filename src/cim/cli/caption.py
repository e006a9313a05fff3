"""`cim caption`: one captioner over one benchmark -> captions.jsonl (prompt, decoding, model identity).

    cim caption --captioner cim-grc-s1                   # a pipeline run: checkpoints/cim-grc-s1 (local backend)
    cim caption --captioner local --checkpoint checkpoints/local --out my/captions.jsonl
    cim caption --captioner kkk5/CIM-Qwen2.5-VL-7B --protocol official --benchmark cocoln500 --out c.jsonl

Default output: ``<pipeline.captions_dir>/<captioner>/captions.jsonl``; default benchmark:
``pipeline.benchmark``. The stage: :func:`cim.stages.caption.caption`.
"""
from __future__ import annotations

import json

from cim.cli import add_flag, add_out, add_shared, load


def add_arguments(parser) -> None:
    parser.add_argument("--captioner", required=True,
                        help="a pipeline run (sft, cim-s0, cim-grc-s1, ...: pipeline.variants x pipeline.seeds) or "
                             "a registered captioner (local, hf, vllm, file, levels, kkk5/CIM-...)")
    add_flag(parser, "benchmark", help="configs/benchmarks/NAME.yaml (default: pipeline.benchmark)")
    parser.add_argument("--checkpoint", help="a local-backend run folder or checkpoint (default: "
                                             "<pipeline.checkpoint_dir>/<captioner>)")
    parser.add_argument("--model", help="eval.captioner.model (hf / vllm / file / released: hub name, folder, file)")
    add_out(parser, key="pipeline.captions_dir",
            help="captions.jsonl to write (default: runs/caption/<captioner>/; the pipeline's: "
                 "<pipeline.captions_dir>/<captioner>/)")
    add_shared(parser, "protocol", "no-mlflow", "no-progress")


def run(args) -> int:
    from cim.pipeline.variants import captions_path
    from cim.stages.caption import caption

    cfg = load(args, *([f"eval.captioner.model={args.model}"] if args.model else []))
    if args.model and args.captioner == "local" and not args.checkpoint:
        args.checkpoint = args.model
    out = args.out or captions_path(cfg, args.captioner)
    path = caption(cfg, args.captioner, args.benchmark or cfg.pipeline.benchmark, out,
                   checkpoint=args.checkpoint, track=not args.no_mlflow,
                   progress=not args.no_progress)
    print(json.dumps({"captions": str(path)}))
    return 0
