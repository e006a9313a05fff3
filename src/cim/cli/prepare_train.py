"""`cim prepare-train`: verl's multimodal parquet from a training manifest (:mod:`cim.stages.prepare_train`)."""
from __future__ import annotations

import argparse
import json

from cim.cli import add_flag, add_out, add_shared, load


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "manifest", default=None, help="training manifest jsonl (default train.manifest)")
    parser.add_argument("--val-manifest", default=None,
                        help="validation manifest (default train.val_manifest; empty: hold out train.val_size rows)")
    add_out(parser, default=None, help="output folder (default train.data_dir)")
    add_shared(parser, "protocol")


def run(args: argparse.Namespace) -> int:
    from cim.stages.prepare_train import prepare_train

    info = prepare_train(load(args), manifest=args.manifest, val_manifest=args.val_manifest, out_dir=args.out)
    print(json.dumps(info, indent=2))
    return 0
