"""`cim score --index DIR --captions FILE --out FILE`: jsonl in (caption + image_id or image), jsonl out
(one row per input line: the input row plus ``line`` and the reward's keys; docs/reward.md)."""
from __future__ import annotations

import json
import sys

from cim.cli import add_flag, add_out, add_shared, load


def add_arguments(parser) -> None:
    from cim.reward.schema import RESULT_KEYS

    add_flag(parser, "index", help="index directory (default: index.out_dir from params)")
    add_flag(parser, "captions", dest="input", required=True, metavar="FILE", help="jsonl: one {caption, image_id | image} per line")
    add_out(parser, dest="output", required=True, metavar="FILE", help="jsonl written atomically, one row per input line: the "
                        "input row plus line, " + ", ".join(RESULT_KEYS))
    add_shared(parser, "no-progress")


def run(args) -> int:
    from cim.stages.score import score_file

    counts = score_file(load(args), args.input, args.output, index_dir=args.index, progress=not args.no_progress)
    print(json.dumps(counts), file=sys.stderr)
    return 0
