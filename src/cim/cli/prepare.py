"""`cim prepare`: generate the demo world described by the ``world`` section of params.yaml."""
from __future__ import annotations

import argparse
import json
import sys

from cim.cli import add_out, add_shared, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_out(parser, help="output directory (default: world.out_dir)")
    parser.add_argument("--force", action="store_true",
                        help="regenerate even if world.json shows the same world is already there")
    add_shared(parser, "no-mlflow", "no-progress")


def run(args: argparse.Namespace) -> int:
    from cim.stages.prepare import prepare

    meta = prepare(load(args), out_dir=args.out, force=args.force, progress=not args.no_progress,
                   track=not args.no_mlflow)
    state = "already complete, skipped" if meta["skipped"] else "written"
    print(f"world {state}: {meta['out_dir']} {json.dumps(meta['counts'])}", file=sys.stderr)
    return 0
