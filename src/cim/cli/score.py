"""`cim score --index DIR --input FILE --output FILE`: jsonl in (caption + image_id or image), jsonl out
(one row per input line: the input row plus ``line`` and the reward's keys; docs/reward.md)."""
from __future__ import annotations

import json
import sys

from cim.cli import load


def add_arguments(parser) -> None:
    from cim.reward.schema import RESULT_KEYS

    parser.add_argument("--index", help="index directory (default: index.out_dir from params)")
    parser.add_argument("--input", required=True, help="jsonl: one {caption, image_id | image} per line")
    parser.add_argument("--output", required=True, help="jsonl written atomically, one row per input line: the "
                        "input row plus line, " + ", ".join(RESULT_KEYS))


def run(args) -> int:
    from cim.stages.score import score_file

    counts = score_file(load(args), args.input, args.output, index_dir=args.index)
    print(json.dumps(counts), file=sys.stderr)
    return 0
