"""`cim ablate AXIS`: run one of the paper's ablations (components, scale, encoders, beta) on the reward, or the
aggregate ablation (sum vs GDPO) read from the pipeline's trained rows (the stage: :func:`cim.stages.ablate.ablate`).

Every variant is a child MLflow run of one parent run; the report is ``<out>/<axis>.json`` (rows: variant
and numbers), ``<axis>.md`` and ``<axis>.png``. Trailing ``key=value`` overrides set the base configuration
of every variant.
"""
from __future__ import annotations

import json

from cim.ablate.axes import AXES, IMAGE_PRESETS, TEXT_PRESETS
from cim.cli import add_flag, add_out, add_shared


def add_arguments(parser) -> None:
    parser.add_argument("axis", choices=list(AXES), help=" | ".join(AXES) + " (aggregate: read from the "
                        "pipeline's table and reward curves of the rows trained with each variant's reward)")
    parser.add_argument("--values", help="comma-separated variants: components: modes (default "
                        "ablate.components); beta: values (default ablate.beta); scale: shares of the corpus rows "
                        "besides the training images' (default ablate.scale); aggregate: sum, gdpo (default "
                        "ablate.aggregate)")
    parser.add_argument("--text", help=f"encoders: text encoders, presets {', '.join(TEXT_PRESETS)} or a "
                        "sentence-transformers model (default ablate.text)")
    parser.add_argument("--image", help=f"encoders: image encoders, presets {', '.join(IMAGE_PRESETS)} (default "
                        "ablate.image; vit-h-14 and dinov3 need their weights in the local Hugging Face cache)")
    parser.add_argument("--train", action="store_true",
                        help="components: also train a captioner per variant (the pipeline's training rows)")
    add_flag(parser, "captions", help="captions of known quality (default <world.out_dir>/bench_captions.jsonl)")
    add_out(parser, key="ablate.out_dir",
            help="report folder (default ablate.out_dir; run by hand: runs/ablate; the committed reports: "
                 "--out reports/ablations)")
    parser.add_argument("--work", help="per-variant reports and extra indexes, kept for resuming (default "
                        "ablate.work_dir)")
    add_shared(parser, "no-progress")


def run(args) -> int:
    from cim.stages import run_steps
    from cim.errors import ConfigError
    from cim.stages.ablate import ablate

    if args.train and args.axis != "components":
        raise ConfigError("--train is for the components axis (the other axes do not change what is trained "
                          "here, or would need one training per variant; see docs/ablations.md)")
    if args.axis == "encoders":
        values = [args.text, args.image]
    else:
        values = [v for v in (args.values or "").split(",") if v] or None
    report = ablate(args.params, args.overrides, args.axis, values, out_dir=args.out, work_dir=args.work,
                    captions=args.captions, train=run_steps if args.train else None,
                    progress=not args.no_progress)
    print(json.dumps({"axis": report["axis"], "measurement": report["measurement"], "mlflow_parent_run": report["run_id"],
                      "rows": [{k: v for k, v in r.items() if k in ("variant", "corpus_rows", "score.rho", "grc.rho",
                                                                    "qir.rho", "row", "capture", "repetition")}
                               for r in report["rows"]]},
                     indent=1))
    return 0
