"""`cim prepare`: generate the demo world described by the ``world`` section of params.yaml."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="output directory (default: world.out_dir)")
    parser.add_argument("--force", action="store_true",
                        help="regenerate even if world.json shows the same world is already there")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-mlflow", action="store_true", help="do not record the run in MLflow")


def run(args: argparse.Namespace) -> int:
    from cim.config import load_config
    from cim.data.world import generate_world

    cfg = load_config(args.params, args.overrides)
    out_dir = args.out or cfg.world.out_dir
    started, wall = time.perf_counter(), time.time()
    meta = generate_world(cfg.world, out_dir=out_dir, progress=not args.no_progress, force=args.force)
    state = "already complete, skipped" if meta["skipped"] else "written"
    print(f"world {state}: {out_dir} {json.dumps(meta['counts'])}", file=sys.stderr)
    if not args.no_mlflow and not meta["skipped"]:
        from cim.tracking import log_stage

        counts = {k: v for k, v in meta["counts"].items() if isinstance(v, (int, float))}
        log_stage(cfg, "prepare", {**counts, "seconds": time.perf_counter() - started},
                  artifacts=[Path(out_dir) / "world.json"], started=wall)
    return 0
