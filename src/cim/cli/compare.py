"""`cim compare`: the captioners' table (Table 2 shape): each row's mean over its seeds with a 95% interval,
and its delta against a baseline row with a paired bootstrap interval (marked when it excludes 0).

    cim compare                                   # every pipeline run's captions (pipeline.captions_dir)
    cim compare --captions sft=a.jsonl --captions mine=b0.jsonl --captions mine=b1.jsonl   # baseline: sft

Files are caption files (docs/captions.md); the first ``--captions`` row is the baseline unless ``--baseline``
names one. A NAME given several times is one row with several seeds. Writes ``captioners.json`` (rows with
``n_seeds``, ``<metric>_ci95``, ``delta_<metric>_ci95``), ``captioners.md``, ``captioners.png``, ``metrics.json``
and ``details.json`` (for DVC) to ``--out`` (run by hand: ``runs/compare``; the pipeline's, committed:
``pipeline.out_dir``), then publishes the comparison to MLflow (the ``publish`` stage, as ``cim publish``; not
with ``--no-mlflow``). The defaults are the run plan's compare step (:mod:`cim.pipeline.plan`); the stages:
:func:`cim.stages.compare.compare`, :func:`cim.stages.publish.publish`.
"""
from __future__ import annotations

from cim.cli import add_flag, add_out, add_shared, load


def add_arguments(parser) -> None:
    add_flag(parser, "captions", action="append", metavar="NAME=FILE",
                        help="a row's captions.jsonl (one seed); repeatable, a NAME again adds a seed (default: "
                             "every pipeline run's captions)")
    add_flag(parser, "benchmark", help="configs/benchmarks/NAME.yaml (default: pipeline.benchmark)")
    parser.add_argument("--baseline", help="the row deltas are taken against (default: the first --captions row; "
                        "without --captions, pipeline.baseline)")
    add_out(parser, key="pipeline.out_dir", help="folder of the table files (default: runs/compare; the "
                                                 "pipeline's, committed: pipeline.out_dir)")
    parser.add_argument("--subset", action="store_true",
                        help="score every row on the images all captions files caption (eval.allow_partial); "
                             "without it a file that misses images is an error")
    add_shared(parser, "protocol", "no-mlflow")


def named_files(args) -> dict[str, list[str]]:
    """``{row: [file per seed]}`` from the ``--captions NAME=FILE`` options (in order: the first row first)."""
    from cim.errors import ConfigError

    captions: dict[str, list[str]] = {}
    for item in args.captions or []:
        name, _, path = item.partition("=")
        if not name or not path:
            stray = next((o for o in args.overrides if "=" not in o), None)
            got = f"{item!r} {stray!r}" if stray else repr(item)
            raise ConfigError(f"--captions takes NAME=FILE as one argument (e.g. --captions mine=captions.jsonl); "
                              f"got {got}")
        captions.setdefault(name, []).append(path)
    return captions


def check_arguments(args) -> None:
    named_files(args)


def run(args) -> int:
    import dataclasses

    from cim.stages import run_steps
    from cim.eval.results import comparison_markdown
    from cim.pipeline.plan import step

    named = named_files(args)
    cfg = load(args, *(["eval.allow_partial=true"] if args.subset else []))
    compare = step(cfg, "compare")               # the defaults: the run plan's compare step
    given = {"benchmark": args.benchmark, "baseline": args.baseline or (next(iter(named)) if named else None),
             "out_dir": args.out, "captions": named}
    compare = dataclasses.replace(compare, args={**compare.args, **{k: v for k, v in given.items() if v}})
    steps = [compare]
    if not args.no_mlflow:                       # then the plan's next step: the comparison into MLflow
        publish = step(cfg, "publish")
        steps.append(dataclasses.replace(publish, args={**publish.args, "out_dir": compare.args["out_dir"]}))
    table = run_steps(cfg, steps)["compare"]
    print(comparison_markdown(table))
    return 0
