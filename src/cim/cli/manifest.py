"""`cim manifest`: write a corpus manifest from a dataset's release format (see cim.data.adapters), or join
manifests into one gallery (``--concat``: row order = gallery order, as the released reward indexes it)."""
from __future__ import annotations

import argparse
import sys

from cim.cli import add_out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cim.config import choices
    from cim.plugins import DATASET_FORMATS

    parser.add_argument("--format", choices=DATASET_FORMATS.names(), help="release format")
    parser.add_argument("--annotations", help="the release's annotation file")
    parser.add_argument("--images", help="folder holding the images")
    add_out(parser, required=True, help="manifest to write (jsonl)")
    parser.add_argument("--on-missing", choices=choices("manifest.on_missing"),
                        help="images named but not found: skip them (counted, listed in OUT.missing.txt) or fail "
                             "without writing (default manifest.on_missing)")
    parser.add_argument("--split", help="docci only: keep this split (train, test, qual_dev, qual_test)")
    parser.add_argument("--train-out", help="sc-captioner-sft: also write the training manifest (id, image, "
                                            "prompt = the first user turn) here")
    parser.add_argument("--concat", nargs="+", metavar="MANIFEST",
                        help="instead of converting: join these corpus manifests, in order, into --out "
                             "(e.g. RefinedCaps then DenseFusion-1M: the released gallery)")


def run(args: argparse.Namespace) -> int:
    from cim.cli import load
    from cim.errors import InputError
    from cim.stages.manifest import concat, manifest

    if args.concat:
        counts = concat(args.concat, args.out)
        print(f"gallery {args.out}: " + ", ".join(f"{n} rows from {p}" for p, n in counts.items()), file=sys.stderr)
        return 0
    missing = [f"--{k}" for k in ("format", "annotations", "images") if not getattr(args, k)]
    if missing:
        raise InputError(f"{', '.join(missing)} required (or --concat MANIFEST ...)")
    on_missing = args.on_missing or load(args).manifest.on_missing
    report = manifest(args.format, args.annotations, args.images, args.out, on_missing=on_missing,
                      split=args.split, train_out=args.train_out)
    print(report.summary(), file=sys.stderr)
    return 0
