"""`cim index --manifest FILE --out DIR [--sources FILE] [--engine ray [--address A]] [key=value ...]`.

Embed a corpus and build its index. Resumable: run it again after an interruption and finished shards are
reused (docs/index.md).
"""
from __future__ import annotations

import argparse
import json

from cim.cli import add_flag, add_out, add_shared, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cim.config import choices

    add_flag(parser, "manifest", default=None, help="corpus manifest jsonl (default: index.manifest)")
    add_out(parser, default=None, help="index folder (default: index.out_dir)")
    parser.add_argument("--sources", default=None,
                        help="source images jsonl (id, image, split) to embed by id (default: index.sources, "
                             "skipped with a note when that default file does not exist)")
    parser.add_argument("--no-sources", action="store_true", help="do not embed source images")
    parser.add_argument("--engine", choices=choices("index.engine"), default=None,
                        help="local: one process (default, index.engine); ray: Ray Data, decoding in CPU tasks "
                             "and embedding in an actor pool, one actor per GPU (docs/index.md)")
    parser.add_argument("--address", default=None,
                        help="with --engine ray: an existing Ray cluster (auto, ray://head:10001; "
                             "index.ray_address); default: start a local one")
    add_shared(parser, "no-mlflow", "no-progress")


def run(args: argparse.Namespace) -> int:
    from cim.stages.index import FROM_CONFIG, index

    extra = ([f"index.engine={args.engine}"] if args.engine else []) + \
        ([f"index.ray_address={args.address}"] if args.address else [])
    sources = None if args.no_sources else (args.sources or FROM_CONFIG)
    summary = index(load(args, *extra), manifest=args.manifest, out_dir=args.out, sources=sources,
                    progress=not args.no_progress, track=not args.no_mlflow)
    print(json.dumps({k: v for k, v in summary.items() if k != "data_sha256"}))
    return 0
