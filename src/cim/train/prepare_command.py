"""`cim prepare-train`: verl's multimodal parquet from a training manifest (see :mod:`cim.train.data`)."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", default=None, help="training manifest jsonl (default train.manifest)")
    parser.add_argument("--val-manifest", default=None,
                        help="validation manifest (default train.val_manifest; empty: hold out train.val_size rows)")
    parser.add_argument("--out-dir", default=None, help="output folder (default train.data_dir)")
    from cim.protocols import add_argument

    add_argument(parser)


def run(args: argparse.Namespace) -> int:
    from cim.config import load_config
    from cim.protocols import with_protocol
    from cim.train.data import prepare_train

    cfg = load_config(args.params, with_protocol(args))
    info = prepare_train(cfg, manifest=args.manifest, val_manifest=args.val_manifest, out_dir=args.out_dir)
    print(json.dumps(info, indent=2))
    return 0
