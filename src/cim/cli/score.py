"""`cim score --index DIR --input FILE --output FILE`: a caption file in (:mod:`cim.captions`: caption +
image_id or image, optional id label), jsonl out (one row per input line: the input row plus ``line`` and the
reward's keys; docs/reward.md), then one line saying what the numbers mean. Exits 2 when no row scored."""
from __future__ import annotations

import json
import sys

from cim.cli import load


def add_arguments(parser) -> None:
    from cim.reward.schema import RESULT_KEYS

    parser.add_argument("--index", help="index directory (default: index.out_dir from params)")
    parser.add_argument("--input", required=True, help="caption file: one {image_id | image, caption[, id]} per line "
                        "(docs/captions.md)")
    parser.add_argument("--output", required=True, help="jsonl written atomically, one row per input line: the "
                        "input row plus line, " + ", ".join(RESULT_KEYS))


def run(args) -> int:
    from cim.errors import InputError
    from cim.stages.score import score_file

    counts = score_file(load(args), args.input, args.output, index_dir=args.index)
    meaning = counts.pop("meaning")
    if not counts["scored"]:          # nothing succeeded: not a success
        raise InputError(f"{args.input}: none of its {counts['errors']} rows scored ({counts['first_error']}); "
                         f"the rows and their errors are in {args.output}")
    print(json.dumps(counts), file=sys.stderr)
    print(meaning, file=sys.stderr)
    return 0
