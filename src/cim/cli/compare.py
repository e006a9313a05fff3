"""`cim compare`: the captioners' table (Table 2 shape): each row's mean over its seeds with a 95% interval,
and its delta against a baseline row with a paired bootstrap interval (marked when it excludes 0).

    cim compare                                   # every pipeline run's captions (pipeline.captions_dir)
    cim compare --captions sft=a.jsonl --captions mine=b0.jsonl --captions mine=b1.jsonl --baseline sft

A NAME given several times is one row with several seeds. Writes ``captioners.json`` (rows with ``n_seeds``,
``<metric>_ci95``, ``delta_<metric>_ci95``), ``captioners.md``, ``captioners.png`` and ``metrics.json`` (for
DVC) to ``--out`` (default ``pipeline.out_dir``), then publishes the comparison to MLflow (the ``publish``
stage, as ``cim publish``; not with ``--no-mlflow``). The defaults are the run plan's compare step
(:mod:`cim.pipeline.plan`); the stages: :func:`cim.stages.compare.compare`, :func:`cim.stages.publish.publish`.
"""
from __future__ import annotations

from cim.cli import add_protocol_argument, load


def add_arguments(parser) -> None:
    parser.add_argument("--captions", action="append", metavar="NAME=FILE",
                        help="a row's captions.jsonl (one seed); repeatable, a NAME again adds a seed (default: "
                             "every pipeline run's captions)")
    parser.add_argument("--benchmark", help="default: pipeline.benchmark")
    parser.add_argument("--baseline", help="the row deltas are taken against (default: pipeline.baseline)")
    parser.add_argument("--out", help="folder of the table files (default: pipeline.out_dir)")
    parser.add_argument("--subset", action="store_true",
                        help="score every row on the images all captions files caption (eval.allow_partial); "
                             "without it a file that misses images is an error")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    add_protocol_argument(parser)


def run(args) -> int:
    import dataclasses

    from cim.stages import run_steps
    from cim.errors import ConfigError
    from cim.eval.results import comparison_markdown
    from cim.pipeline.plan import step

    cfg = load(args, *(["eval.allow_partial=true"] if args.subset else []))
    compare = step(cfg, "compare")               # the defaults: the run plan's compare step
    given = {"benchmark": args.benchmark, "baseline": args.baseline, "out_dir": args.out}
    if args.captions:
        captions: dict[str, list[str]] = {}
        for item in args.captions:
            name, _, path = item.partition("=")
            if not name or not path:
                raise ConfigError("--captions takes NAME=FILE")
            captions.setdefault(name, []).append(path)
        given["captions"] = captions
    compare = dataclasses.replace(compare, args={**compare.args, **{k: v for k, v in given.items() if v}})
    steps = [compare]
    if not args.no_mlflow:                       # then the plan's next step: the comparison into MLflow
        publish = step(cfg, "publish")
        steps.append(dataclasses.replace(publish, args={**publish.args, "out_dir": compare.args["out_dir"]}))
    table = run_steps(cfg, steps)["compare"]
    print(comparison_markdown(table))
    return 0
