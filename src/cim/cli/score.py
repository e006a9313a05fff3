"""`cim score --index DIR --captions FILE --out FILE`: a caption file in (:mod:`cim.captions`: caption +
image_id or image, optional id label), jsonl out (one row per input line: the input row plus ``line`` and the
reward's keys: score, upsilon (the paper's Υ), grc, qir, guards, ...; docs/reward.md), then one line saying what
the numbers mean (score = Υ + guards with reward.guards, e.g. ``--protocol guarded``). Exits 2 when no row
scored."""
from __future__ import annotations

import json
import sys

from cim.cli import add_flag, add_out, add_shared, load


def add_arguments(parser) -> None:
    from cim.reward.schema import RESULT_KEYS

    add_flag(parser, "index", help="index directory (default: index.out_dir from params)")
    add_flag(parser, "captions", dest="input", required=True, metavar="FILE",
             help="caption file: one {image_id | image, caption[, id]} per line (docs/captions.md)")
    add_out(parser, dest="output", required=True, metavar="FILE", help="jsonl written atomically, one row per input line: the "
                        "input row plus line, " + ", ".join(RESULT_KEYS))
    add_shared(parser, "protocol", "no-progress")


def run(args) -> int:
    from cim.errors import InputError
    from cim.stages.score import score_file

    counts = score_file(load(args), args.input, args.output, index_dir=args.index, progress=not args.no_progress)
    meaning = counts.pop("meaning")
    if not counts["scored"]:          # nothing succeeded: not a success
        raise InputError(f"{args.input}: none of its {counts['errors']} rows scored ({counts['first_error']}); "
                         f"the rows and their errors are in {args.output}")
    print(json.dumps(counts), file=sys.stderr)
    print(meaning, file=sys.stderr)
    return 0
