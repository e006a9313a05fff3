"""`cim manifest`: write a corpus manifest from a dataset's release format (see cim.data.adapters)."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cim.data.adapters import FORMATS

    parser.add_argument("--format", required=True, choices=list(FORMATS), help="release format")
    parser.add_argument("--annotations", required=True, help="the release's annotation file")
    parser.add_argument("--images", required=True, help="folder holding the images")
    parser.add_argument("--out", required=True, help="manifest to write (jsonl)")
    parser.add_argument("--on-missing", choices=("skip", "fail"), default="skip",
                        help="images named but not found: skip them (counted, listed in OUT.missing.txt; "
                             "default) or fail without writing")
    parser.add_argument("--split", help="docci only: keep this split (train, test, qual_dev, qual_test)")


def run(args: argparse.Namespace) -> int:
    from cim.data.adapters import convert

    report = convert(args.format, args.annotations, args.images, args.out, on_missing=args.on_missing,
                     split=args.split)
    print(report.summary(), file=sys.stderr)
    return 0
