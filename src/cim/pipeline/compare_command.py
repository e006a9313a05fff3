"""`cim compare`: the captioners' table (Table 2 shape) with deltas against a baseline row.

    cim compare                                   # every pipeline row's captions (pipeline.captions_dir)
    cim compare --captions sft=a.jsonl --captions mine=b.jsonl --baseline sft --out reports/mine

Writes ``captioners.json`` (``{"benchmark", "baseline", "rows"}``), ``captioners.md`` and ``captioners.png``
to ``--out`` (default ``pipeline.out_dir``) and logs MLflow runs ``compare[<benchmark>]`` and one child per
captioner. The library call is :func:`cim.pipeline.compare`.
"""
from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--captions", action="append", metavar="NAME=FILE",
                        help="a row and its captions.jsonl; repeatable (default: every pipeline row's captions)")
    parser.add_argument("--benchmark", help="default: pipeline.benchmark")
    parser.add_argument("--baseline", help="the row deltas are taken against (default: pipeline.baseline)")
    parser.add_argument("--out", help="folder of the table files (default: pipeline.out_dir)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    from cim.protocols import add_argument

    add_argument(parser)


def run(args) -> int:
    from cim.config import load_config
    from cim.errors import ConfigError, InputError
    from cim.pipeline import compare, variants
    from cim.pipeline.captioning import captions_path
    from cim.protocols import with_protocol

    cfg = load_config(args.params, with_protocol(args))
    if args.captions:
        pairs = [c.split("=", 1) for c in args.captions]
        if any(len(p) != 2 or not p[0] for p in pairs):
            raise ConfigError("--captions takes NAME=FILE")
        captions = {name: Path(path) for name, path in pairs}
    else:
        captions = {name: captions_path(cfg, name) for name in variants(cfg)}
    for name, path in captions.items():
        if not path.is_file():
            raise InputError(f"captions of {name!r} not found at {path}: run `cim caption --captioner {name}` first")
    table = compare(cfg, captions, args.benchmark or cfg.pipeline.benchmark, args.baseline or cfg.pipeline.baseline,
                    args.out or cfg.pipeline.out_dir, track=not args.no_mlflow)
    from cim.pipeline.table import markdown

    print(markdown(table))
    return 0
